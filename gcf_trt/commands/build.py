"""``gcf-trt build`` and ``gcf-trt backbones``."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="compile a checkpoint into an engines directory")
    p.add_argument("--checkpoint", required=True, help="gcf-trt checkpoint (.pt)")
    p.add_argument("--out", required=True, help="engines directory to (re)create atomically")
    p.add_argument("--target", default="cpu", choices=["cpu", "trt", "auto"])
    p.add_argument("--precision", default="fp32")
    p.add_argument("--calib", default=None, help="directory of calibration videos (INT8)")
    p.set_defaults(func=_build)

    b = sub.add_parser("backbones", help="list the registered backbones")
    b.set_defaults(func=_backbones)


def _build(args: argparse.Namespace) -> int:
    from ..compile.build import build_engines
    result = build_engines(args.checkpoint, args.out, target=args.target, precision=args.precision,
                           calib=args.calib, progress=lambda m: print(f"... {m}"))
    for line in result.summary:
        print(line)
    return 0


def _backbones(args: argparse.Namespace) -> int:
    from ..compile.model import available_backbones
    for name, ok in available_backbones().items():
        print(f"{name:12s} {'available' if ok else 'needs torchvision'}")
    return 0
