"""``gcf-trt demo``: bundled model -> CPU engines -> a generated video streamed -> predictions,
an annotated video, and a timeline of the gates and the detected segments vs the truth."""
from __future__ import annotations

import argparse

from ..demo import DEFAULT_CALIB_VIDEOS, bundled_checkpoint  # noqa: F401 - bundled_checkpoint is public here too


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build engines from the bundled model and stream a generated video",
                       description="Build CPU engines from the bundled demo model (the precision is chosen by a "
                                   "timed trial among the candidates that pass the agreement gate), stream a "
                                   "generated video through them, and write annotated.mp4 and timeline.png.")
    p.add_argument("--out", required=True, help="output directory (engines, videos, timeline.png)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the bundled demo model)")
    p.add_argument("--precision", default="auto", choices=["auto", "int8", "fp32"],
                   help="auto (default): the fastest CPU engine that passes the agreement gate; int8 fails "
                        "if INT8 does not pass it")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated test video")
    p.add_argument("--label", default=None, help="class of the test video (default: drawn from the seed)")
    p.add_argument("--calib-videos", type=int, default=DEFAULT_CALIB_VIDEOS,
                   help="generated calibration videos for auto/int8 (default: as many as the model's clips "
                        "need for the agreement gate's held-out predictions and the calibration)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo, summary_lines
    quiet = getattr(args, "quiet", False)
    result = run_demo(args.out, checkpoint=args.checkpoint, precision=args.precision, seed=args.seed,
                      label=args.label, calib_videos=args.calib_videos,
                      say=(lambda m: None) if quiet else print,
                      progress=None if quiet else (lambda m: print(f"... {m}", flush=True)))
    print()
    for line in summary_lines(result):
        print(line)
    return 0
