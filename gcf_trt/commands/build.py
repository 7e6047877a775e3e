"""``gcf-trt build`` and ``gcf-trt backbones``."""
from __future__ import annotations

import argparse
from typing import Any


def _trt_module():
    """The TensorRT build module if it is there (another part of gcf-trt), else None."""
    try:
        from ..compile import trt_build
    except ImportError:
        return None
    return trt_build


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.99, got {text!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="compile a checkpoint into an engines directory",
        description="Compile a checkpoint into an engines directory (ONNX / engine files + manifest.json). "
                    "On --target cpu the runtime and precision are chosen by a short timed trial on this "
                    "machine; reduced precisions must agree with FP32 on held-out clips.")
    p.add_argument("--checkpoint", required=True, help="gcf-trt checkpoint (.pt)")
    p.add_argument("--out", required=True, help="engines directory to (re)create atomically")
    p.add_argument("--target", default="cpu", choices=["cpu", "trt", "auto"],
                   help="cpu (ONNX Runtime / OpenVINO), trt (TensorRT), auto (TensorRT if usable, else cpu)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8", "bf16"],
                   help="auto = the fastest precision that passes the agreement gate (default)")
    p.add_argument("--runtime", default=None, choices=["onnxruntime", "openvino"],
                   help="force the CPU runtime (default: chosen by measurement)")
    p.add_argument("--calib", default=None,
                   help="directory of calibration videos (needed for int8/bf16; held-out clips check agreement)")
    p.add_argument("--calib-clips", type=int, default=64, help="clips drawn from the calibration videos")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "percentile"])
    p.add_argument("--min-agreement", type=_fraction, default=0.99,
                   help="minimum top-1 agreement with FP32 on held-out predictions (default 0.99)")
    p.add_argument("--min-cosine", type=_fraction, default=None,
                   help="also require this minimum descriptor cosine with FP32 (per clip)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    p.add_argument("--trial-iterations", type=int, default=10, help="timed runs per candidate in the trial")
    trt = _trt_module()
    if trt is not None and hasattr(trt, "add_arguments"):
        trt.add_arguments(p)
    p.set_defaults(func=_build)

    b = sub.add_parser("backbones", help="list the registered backbones")
    b.set_defaults(func=_backbones)


def _quiet_libraries() -> None:
    """The exporter and quantizer log every pass at INFO; keep the build's own output readable."""
    import logging
    for name in ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _build(args: argparse.Namespace) -> int:
    from ..compile.build import build_engines
    if not getattr(args, "verbose", False):
        _quiet_libraries()
    trt_options: dict[str, Any] = {}
    trt = _trt_module()
    if args.target in ("trt", "auto") and trt is not None and hasattr(trt, "options_from_args"):
        trt_options = dict(trt.options_from_args(args))
    extra: dict[str, Any] = {}
    if args.target != "trt":
        extra = dict(calib_clips=args.calib_clips, calib_method=args.calib_method, min_cosine=args.min_cosine,
                     threads=args.threads, trial_iterations=args.trial_iterations)
    result = build_engines(args.checkpoint, args.out, target=args.target, precision=args.precision,
                           runtime=args.runtime, calib=args.calib, min_agreement=args.min_agreement,
                           progress=lambda m: print(f"... {m}", flush=True), **extra, **trt_options)
    for line in result.summary:
        print(line)
    return 0


def _backbones(args: argparse.Namespace) -> int:
    from ..compile.model import available_backbones
    for name, ok in available_backbones().items():
        print(f"{name:12s} {'available' if ok else 'needs torchvision'}")
    return 0
