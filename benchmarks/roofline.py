#!/usr/bin/env python
"""FLOPs per clip, achieved FLOP/s per backend and measured matmul peaks of this CPU.

Runs ``gcf-trt bench --sections backbone,roofline``; results go to ``--out`` (default: a temporary
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
        argv += ["--out", os.path.join(tempfile.gettempdir(), "gcf-trt-bench-roofline")]
    sys.exit(main(["bench", "--sections", "backbone,roofline", *argv]))
