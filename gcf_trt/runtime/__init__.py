"""torch-free runtime: what a camera app imports.  Nothing under this package imports torch."""
