"""``gcf-trt make-videos`` (procedural labelled videos) and ``gcf-trt train``."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("make-videos", help="generate labelled procedural action videos (+ labels.csv)")
    m.add_argument("--out", required=True, help="directory for the videos and labels.csv")
    m.add_argument("--count", type=int, required=True, help="number of videos")
    m.add_argument("--seed", type=int, default=0, help="seed (video i depends only on seed and i)")
    m.add_argument("--ext", default="mp4", choices=["mp4", "avi"], help="mp4 (mp4v) or avi (MJPG)")
    m.set_defaults(func=_make_videos)

    t = sub.add_parser("train", help="train a GCF-Net on labelled videos (class folders, an annotation file, "
                                     "or make-videos output)",
                       description="Train a GCF-Net. See docs/TRAINING.md for the dataset layouts and recipes.")
    t.add_argument("--videos", required=True, nargs="+", metavar="DATASET",
                   help="ROOT/<label>/<video> folders, a .csv / .jsonl list (path,label[,start_s,end_s][,split]) "
                        "or a make-videos directory; several are merged")
    t.add_argument("--out", required=True, help="checkpoint to write (.pt); rewritten atomically every epoch")
    t.add_argument("--backbone", default="edge3d", help="edge3d (default), r3d_18, mc3_18, r2plus1d_18 or s3d "
                                                        "(torchvision ones need the [torchvision] extra)")
    t.add_argument("--backbone-weights", default=None, metavar="FILE",
                   help="a state dict file for the backbone (e.g. torchvision Kinetics-400 weights); "
                        "loaded with weights_only=True, the 400-class fc is dropped")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--freeze-backbone", action="store_true",
                      help="keep the backbone as loaded; train only the clip classifier and the GCF head on "
                           "cached descriptors (the backbone runs once per clip)")
    mode.add_argument("--finetune", action="store_true",
                      help="train the whole network, starting from --backbone-weights")
    t.add_argument("--resume", action="store_true", help="continue from the training state saved in --out")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="held-out share of the videos per class when the data has no split column "
                        "(default 0.2; 0 for make-videos sets); clips of one video never cross the split")
    t.add_argument("--cache-dir", default=None,
                   help="descriptor cache for --freeze-backbone (default: .gcf-trt-cache beside --out)")
    t.add_argument("--clip-len", type=int, default=None, help="frames per clip (default: 8 for edge3d, 16 for torchvision)")
    t.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: the clip length)")
    t.add_argument("--size", type=int, default=None, help="crop size (default: 64 for edge3d, 112 for torchvision)")
    t.add_argument("--resize-short", type=int, default=None, help="short side before the centre crop")
    t.add_argument("--ring-size", type=int, default=None, help="clips the GCF head fuses (N)")
    t.add_argument("--epochs", type=int, default=None, help="backbone (or clip classifier) epochs")
    t.add_argument("--head-epochs", type=int, default=None, help="fusion head epochs")
    t.add_argument("--width", type=int, default=None, help="edge3d width")
    t.add_argument("--batch", type=int, default=None, help="clips per backbone batch")
    t.add_argument("--lr", type=float, default=None, help="backbone learning rate")
    t.add_argument("--seed", type=int, default=None, help="seed of the split, sampling and initialisation (default 0)")
    t.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 1: with 2+ threads, training ran ~10x slower when other jobs "
                        "shared the cores; raise it on a machine of your own)")
    t.add_argument("--gate-weight", type=float, default=None, help="weight of the gate supervision loss")
    t.add_argument("--limit", type=int, default=None, help="use only the first N training videos")
    t.add_argument("--no-action-class", action="store_true", default=None,
                   help="add a class 'no action' that the head learns on the rings a stream shows before and "
                        "after the action (experimental: what it does to INT8 agreement and accuracy, docs/INT8.md)")
    t.set_defaults(func=_train)


def _make_videos(args: argparse.Namespace) -> int:
    from ..data import make_videos
    from ..progress import progress_bar
    with progress_bar(total=args.count, unit="video") as bar:
        records = make_videos(args.out, args.count, args.seed, ext=args.ext, progress=lambda i, n: bar.update(1))
    print(f"wrote {len(records)} videos and labels.csv to {args.out} (seed {args.seed})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..train import train_from_args
    result = train_from_args(vars(args))
    print(f"wrote {result.checkpoint} ({result.checkpoint_bytes / 1e6:.2f} MB) in {result.seconds:.0f} s")
    print(json.dumps({"history": result.history_summary, "validation": result.validation}))
    return 0
