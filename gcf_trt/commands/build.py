"""``gcf-trt build`` and ``gcf-trt backbones``: every build flag is defined here.

Each target-specific flag defaults to None ("not given"), so a flag that does not apply to the
chosen target is an error naming it instead of being ignored (``--target cpu --max-batch 4``).
With ``--target auto`` both groups are accepted; those of the target not chosen are unused.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError

# flag -> (argparse dest, the targets it applies to)
CPU_FLAGS = {"--runtime": "runtime", "--threads": "threads", "--trial-iterations": "trial_iterations"}
TRT_FLAGS = {"--from": "from_dir", "--min-batch": "min_batch", "--opt-batch": "opt_batch",
             "--max-batch": "max_batch", "--workspace-mb": "workspace_mb", "--timing-cache": "timing_cache",
             "--dla-core": "dla_core", "--no-verify": "no_verify", "--cuda-graph": "cuda_graph"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="compile a checkpoint into an engines directory",
        description="Compile a checkpoint into an engines directory (ONNX / engine files + manifest.json). "
                    "On --target cpu the runtime and precision are chosen by a short timed trial on this "
                    "machine; reduced precisions must agree with FP32 on held-out clips.  --target trt "
                    "--from DIR builds TensorRT plans from a CPU build's directory without torch (Jetson).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="gcf-trt checkpoint (.pt)")
    src.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                     help="--target trt only: build from the ONNX files of an engines directory written by "
                          "'gcf-trt build --target cpu' (anywhere); needs no torch")
    p.add_argument("--out", required=True, help="engines directory to (re)create atomically")
    p.add_argument("--target", default="cpu", choices=["cpu", "trt", "auto"],
                   help="cpu (ONNX Runtime / OpenVINO), trt (TensorRT), auto (TensorRT if usable, else cpu)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8", "bf16"],
                   help="auto = cpu: the fastest precision that passes the agreement gate; trt: fp16")
    p.add_argument("--calib", default=None,
                   help="directory of calibration videos (needed for int8/bf16; held-out clips check agreement)")
    p.add_argument("--calib-clips", type=int, default=None, help="clips drawn from the calibration videos (64)")
    p.add_argument("--calib-method", default=None, choices=["minmax", "percentile"],
                   help="INT8 calibration method (minmax)")
    p.add_argument("--gate-predictions", type=int, default=None,
                   help="held-out predictions the agreement gate decides on, from --calib videos that are "
                        "not calibrated on (256; fewer resolve the agreement less precisely)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="minimum top-1 agreement with FP32 on held-out predictions, a fraction (0.99)")
    p.add_argument("--min-cosine", type=float, default=None,
                   help="also require this minimum descriptor cosine with FP32 (per clip), a fraction")

    cpu = p.add_argument_group("CPU engines (--target cpu)")
    cpu.add_argument("--runtime", default=None, choices=["onnxruntime", "openvino"],
                     help="force the CPU runtime (default: chosen by measurement)")
    cpu.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    cpu.add_argument("--trial-iterations", type=int, default=None, help="timed runs per candidate in the trial (10)")

    trt = p.add_argument_group("TensorRT (--target trt)")
    trt.add_argument("--min-batch", type=int, default=None, help="optimization profile: smallest batch (1)")
    trt.add_argument("--opt-batch", type=int, default=None, help="optimization profile: batch tuned for (1)")
    trt.add_argument("--max-batch", type=int, default=None, help="optimization profile: largest batch (8)")
    trt.add_argument("--workspace-mb", type=int, default=None, help="workspace memory pool limit in MiB (1024)")
    trt.add_argument("--timing-cache", default=None,
                     help="timing cache file reused across builds (default: ~/.cache/gcf-trt/, per TensorRT+GPU)")
    trt.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Jetson), GPU fallback on")
    trt.add_argument("--no-verify", action="store_true", default=None,
                     help="skip running the plans against ONNX Runtime FP32 after the build")
    trt.add_argument("--cuda-graph", action="store_true", default=None,
                     help="record CUDA graph replay as the backbone's runtime option")
    p.set_defaults(func=_build)

    b = sub.add_parser("backbones", help="list the registered backbones")
    b.set_defaults(func=_backbones)


def _given(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    return [flag for flag, dest in flags.items() if getattr(args, dest) is not None]


def _check_flags(args: argparse.Namespace) -> None:
    """A flag for the other target is an error naming the flag (never silently ignored)."""
    wrong = {"cpu": _given(args, TRT_FLAGS), "trt": _given(args, CPU_FLAGS)}.get(args.target, [])
    if wrong:
        other = "trt" if args.target == "cpu" else "cpu"
        raise InputError(f"{', '.join(wrong)} do{'es' if len(wrong) == 1 else ''} not apply to --target "
                         f"{args.target} (only to --target {other})",
                         hint=f"drop {', '.join(wrong)}, or build with --target {other} (or auto)")
    if args.from_dir is not None and args.target != "trt":
        raise InputError("--from builds TensorRT plans from an engines directory: it needs --target trt",
                         hint="add --target trt, or pass --checkpoint CKPT for CPU engines")
    if args.from_dir is not None and args.calib_method is not None:
        raise InputError("--calib-method does not apply with --from: the Q/DQ backbone in the source "
                         "directory was calibrated when it was built",
                         hint="drop --calib-method (with --from, --calib only gives held-out clips for the check)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The typed options for build_engines from the flags the user gave (defaults elsewhere)."""
    from ..compile.options import CalibrationOptions, CpuOptions, GateOptions, TensorRTOptions

    def given(**fields: Any) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if v is not None}
    cpu_fields = given(threads=args.threads, trial_iterations=args.trial_iterations)
    trt_fields = given(min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                       workspace_mb=args.workspace_mb, timing_cache=args.timing_cache, dla_core=args.dla_core,
                       verify=False if args.no_verify else None, cuda_graph=args.cuda_graph)
    return {
        "calibration": CalibrationOptions(**given(clips=args.calib_clips, method=args.calib_method,
                                                  gate_predictions=args.gate_predictions)),
        "gate": GateOptions(**given(min_agreement=args.min_agreement, min_cosine=args.min_cosine)),
        "cpu": CpuOptions(**cpu_fields) if args.target != "trt" else None,
        "tensorrt": TensorRTOptions(**trt_fields) if args.target != "cpu" else None,
    }


def _quiet_libraries() -> None:
    """The exporter and quantizer log every pass at INFO; keep the build's own output readable."""
    import logging
    for name in ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _build(args: argparse.Namespace) -> int:
    _check_flags(args)
    from ..compile.build import build_engines
    if not getattr(args, "verbose", False):
        _quiet_libraries()
    result = build_engines(args.checkpoint, args.out, target=args.target, precision=args.precision,
                           runtime=args.runtime, calib=args.calib, from_dir=args.from_dir, **_options(args),
                           progress=lambda m: print(f"... {m}", flush=True))
    for line in result.summary:
        print(line)
    return 0


def _backbones(args: argparse.Namespace) -> int:
    from ..compile.model import available_backbones
    for name, ok in available_backbones().items():
        print(f"{name:12s} {'available' if ok else 'needs torchvision'}")
    return 0
