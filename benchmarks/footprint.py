#!/usr/bin/env python
"""Cold start (import, load, first prediction) and peak RSS of a fresh runtime process.

Runs ``gcf-trt bench --sections cold_start``; results go to ``--out`` (default: a temporary
directory, so a partial run never overwrites benchmarks/results/latest.*).  Other options as
``gcf-trt bench --help``.
"""
import os
import sys
import tempfile

from gcf_trt.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv:
        argv += ["--out", os.path.join(tempfile.gettempdir(), "gcf-trt-bench-footprint")]
    sys.exit(main(["bench", "--sections", "cold_start", *argv]))
