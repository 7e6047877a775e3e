#!/usr/bin/env python
"""Re-render latest.md and the PNG plots from an existing latest.json (no measurement).

    python benchmarks/replot.py [benchmarks/results]      # = gcf-trt bench --replot DIR
"""
import sys

from gcf_trt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--replot", sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"]))
