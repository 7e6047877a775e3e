#!/usr/bin/env python
"""INT8 vs FP32 top-1 agreement (the trained demo checkpoint if present).

Runs ``gcf-trt bench --sections agreement``; results go to ``--out`` (default: a temporary
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
        argv += ["--out", os.path.join(tempfile.gettempdir(), "gcf-trt-bench-agreement")]
    sys.exit(main(["bench", "--sections", "agreement", *argv]))
