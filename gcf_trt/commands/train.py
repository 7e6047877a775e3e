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

    t = sub.add_parser("train", help="train a GCF-Net (backbone + clip classifier, then the fusion head)")
    t.add_argument("--videos", required=True, nargs="+", help="one or more directories written by make-videos")
    t.add_argument("--out", required=True, help="checkpoint to write (.pt, atomic)")
    t.add_argument("--epochs", type=int, default=None, help="backbone epochs over all clips")
    t.add_argument("--head-epochs", type=int, default=None, help="fusion head epochs")
    t.add_argument("--width", type=int, default=None, help="edge3d width")
    t.add_argument("--batch", type=int, default=None, help="clips per backbone batch")
    t.add_argument("--lr", type=float, default=None, help="backbone learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch threads (1: on 2 cores shared with other jobs, 2 threads ran ~10x slower)")
    t.add_argument("--gate-weight", type=float, default=None, help="weight of the gate supervision loss")
    t.add_argument("--limit", type=int, default=None, help="use only the first N videos")
    t.set_defaults(func=_train)


def _make_videos(args: argparse.Namespace) -> int:
    from ..data import make_videos
    try:
        from tqdm import tqdm
        bar = tqdm(total=args.count, unit="video")
        progress = lambda i, n: bar.update(1)  # noqa: E731
    except ImportError:
        bar, progress = None, None
    records = make_videos(args.out, args.count, args.seed, ext=args.ext, progress=progress)
    if bar:
        bar.close()
    print(f"wrote {len(records)} videos and labels.csv to {args.out} (seed {args.seed})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train
    cfg = TrainConfig()
    for name in ("epochs", "head_epochs", "width", "batch", "lr", "seed", "threads", "gate_weight", "limit"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    result = train(args.videos, args.out, cfg)
    print(f"wrote {result.checkpoint} ({result.checkpoint_bytes / 1e6:.2f} MB) in {result.seconds:.0f} s")
    print(json.dumps(result.history_summary, indent=None))
    return 0
