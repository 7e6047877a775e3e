"""``gcf-trt eval``: the paper-style accuracy table on a labelled held-out set."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="central clip vs average vs GCF (vs engines) on labelled videos, "
                                    "and segment tIoU where action windows are annotated")
    p.add_argument("--checkpoint", required=True, help="gcf-trt checkpoint (.pt)")
    p.add_argument("--videos", required=True, metavar="DATASET",
                   help="labelled videos: ROOT/<label>/<video> folders, a .csv / .jsonl list "
                        "(path,label[,start_s,end_s][,split]) or a make-videos directory")
    p.add_argument("--split", default="all", choices=["all", "train", "val"],
                   help="evaluate every video, or one side of the split gcf-trt train made (default all)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="with --split and no split column: the held-out share (default: the one the "
                        "checkpoint was trained with)")
    p.add_argument("--seed", type=int, default=None,
                   help="with --split: the split's seed (default: the checkpoint's training seed)")
    p.add_argument("--engines", action="append", default=[],
                   help="engines directory built from this checkpoint (repeatable: e.g. fp32 and int8)")
    # No default file: a default path once overwrote a committed results table from a scratch run.
    p.add_argument("--out-json", default=None, help="write the summary (every number, per class, the command) here")
    p.add_argument("--out-md", default=None, help="write the markdown table here")
    p.add_argument("--per-video", default=None, help="also write per-video rows (gates, segments) here")
    p.add_argument("--cache-dir", default="auto",
                   help="descriptor cache of gcf-trt train --freeze-backbone: PyTorch descriptors found there "
                        "are reused (default: .gcf-trt-cache beside the checkpoint, if present)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N videos")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, fastest when other jobs share the cores; "
                        "raise it on a machine of your own)")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, markdown_table, write_report
    report = evaluate(args.checkpoint, args.videos, args.engines, limit=args.limit, threads=args.threads,
                      split=args.split, val_fraction=args.val_fraction, seed=args.seed,
                      cache_dir=args.cache_dir)
    report["command"] = "gcf-trt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_report(report, args.out_json, args.out_md, args.per_video)
    print(markdown_table(report))
    written = [str(Path(p)) for p in (args.out_json, args.out_md, args.per_video) if p]
    if written:
        print("wrote " + " and ".join(written))
    return 0
