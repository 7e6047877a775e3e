#!/usr/bin/env python
"""Every benchmark in one run: the same as ``gcf-trt bench`` (see docs/BENCHMARKS.md).

    python benchmarks/run_all.py            # full run -> benchmarks/results/latest.{json,md}, *.png
    python benchmarks/run_all.py --quick    # tiny model and counts, results in a temp dir
"""
import sys

from gcf_trt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
