"""Bundled data: the demo checkpoint (demo.pt, see docs/ACCURACY.md for how it was trained)."""
