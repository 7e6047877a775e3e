#!/usr/bin/env python
"""Re-render latest.md and the PNG plots from an existing latest.json (no measurement).

    python benchmarks/replot.py [benchmarks/results]
"""
import sys

from gcf_trt import bench

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"
    for path in bench.write_results(bench.read_results(out), out):
        print(f"wrote {path}")
