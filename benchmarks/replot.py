#!/usr/bin/env python
"""Re-render latest.md and the PNG plots from an existing latest.json (no measurement).

    python benchmarks/replot.py [benchmarks/results]
"""
import json
import sys
from pathlib import Path

from gcf_trt import bench

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
    results = json.loads((out / "latest.json").read_text())
    for path in bench.write_results(results, out):
        print(f"wrote {path}")
