#!/usr/bin/env python
"""The fusion head vs N, a streaming step vs naive recompute, and end-to-end fps on a 640x480 video.

Runs ``gcf-trt bench --sections backbone,head,streaming,end_to_end``; results go to ``--out`` (default: a temporary
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
        argv += ["--out", os.path.join(tempfile.gettempdir(), "gcf-trt-bench-streaming")]
    sys.exit(main(["bench", "--sections", "backbone,head,streaming,end_to_end", *argv]))
