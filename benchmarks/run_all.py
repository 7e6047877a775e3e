#!/usr/bin/env python
"""The one entry point of the benchmarks: the same as ``gcf-trt bench`` (see docs/BENCHMARKS.md).

    python benchmarks/run_all.py                                # full run -> benchmarks/results/latest.*
    python benchmarks/run_all.py --quick                        # tiny model and counts, results in a temp dir
    python benchmarks/run_all.py --sections backbone,head       # a subset, results in a temp dir
    python benchmarks/run_all.py --sections cold_start --out /tmp/b
    python benchmarks/run_all.py --checkpoint model.pt          # speed and INT8 agreement on a trained model

Sections: backbone, head, streaming, whatif, end_to_end, multistream, openvino_benchmark,
cold_start, roofline, ort_sweep, agreement (``gcf-trt bench --help``).  A partial or quick run
never overwrites the committed ``benchmarks/results/latest.*`` unless ``--out`` says so.
"""
import sys

from gcf_trt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
