"""``gcf-trt build``: checkpoint (or an engines directory) -> engines directory with ``manifest.json``.

This module only dispatches.  The steps both targets share (FP32 export, calibration set, INT8
Q/DQ files, manifest) are in :mod:`.artifacts`; the targets are :mod:`.cpu_build` (ONNX Runtime
/ OpenVINO, chosen by measurement) and :mod:`.trt_build` (TensorRT plans).  Options are typed
(:mod:`.options`); the CLI flags that fill them are defined in :mod:`gcf_trt.commands.build`.

The output directory is written atomically (:func:`gcf_trt.fsutil.atomic_output_dir`): a failed
build (bad input, agreement below the gate, Ctrl-C) leaves the previous directory untouched.
Import graph: ``build -> cpu_build | trt_build -> artifacts, options``; nothing imports back.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import InputError
from .artifacts import BuildResult
from .options import CalibrationOptions, CpuOptions, GateOptions, TensorRTOptions

TARGETS = ("cpu", "trt", "auto")

__all__ = ["BuildResult", "CalibrationOptions", "CpuOptions", "GateOptions", "TensorRTOptions", "TARGETS",
           "build_engines", "resolve_target"]


def resolve_target(target: str) -> tuple[str, dict[str, Any] | None]:
    """``cpu``/``trt`` as given; ``auto`` -> ``trt`` when TensorRT is usable here, else ``cpu``
    with a note saying why (recorded in the manifest and printed in the summary)."""
    if target not in TARGETS:
        raise InputError(f"unknown --target {target!r}; use one of {', '.join(TARGETS)}")
    if target != "auto":
        return target, None
    from ..runtime.backends import available_runtimes
    reason = available_runtimes().get("tensorrt")
    if reason is None:
        return "trt", None
    return "cpu", {"requested": "auto", "chosen": "cpu",
                   "reason": f"TensorRT is not usable here ({reason}); fell back to the CPU engines"}


def build_engines(checkpoint: str | os.PathLike | None, out: str | os.PathLike, *, target: str = "cpu",
                  precision: str = "auto", runtime: str | None = None,
                  calib: str | os.PathLike | None = None, from_dir: str | os.PathLike | None = None,
                  calibration: CalibrationOptions | None = None, gate: GateOptions | None = None,
                  cpu: CpuOptions | None = None, tensorrt: TensorRTOptions | None = None,
                  progress: Callable[[str], None] | None = None) -> BuildResult:
    """Build an engines directory.

    Args:
        checkpoint: a gcf-trt checkpoint (``torch.load(weights_only=True)``); None with ``from_dir``.
        out: the engines directory to (re)create atomically.
        target: ``"cpu"``, ``"trt"`` or ``"auto"`` (TensorRT when it is usable here, else CPU,
            and the summary says so).
        precision: ``"auto"``, ``"fp32"``, ``"int8"``, ``"bf16"`` (CPU) or ``"fp16"``, ``"int8"`` (TensorRT).
        runtime: CPU only: force ``"onnxruntime"`` or ``"openvino"`` (default: chosen by measurement).
        calib: directory of calibration videos (INT8 calibration; held-out clips for the gate).
        from_dir: TensorRT only: build the plans from the ONNX files and manifest of an existing
            engines directory instead of a checkpoint (no torch needed; e.g. on a Jetson).
        calibration, gate: options of both targets (:class:`CalibrationOptions`, :class:`GateOptions`).
        cpu: :class:`CpuOptions` (``--target cpu``); tensorrt: :class:`TensorRTOptions` (``--target trt``).
            Passing the options of the other target is an :class:`InputError`; with ``auto``
            the options of the target not chosen are ignored (the summary says which was built).
        progress: called with one-line progress messages; also enables progress bars.
    """
    chosen, note = resolve_target(target)
    calibration = (calibration or CalibrationOptions()).validate()
    gate = (gate or GateOptions()).validate()
    if (checkpoint is None) == (from_dir is None):
        raise InputError("give exactly one of --checkpoint and --from",
                         hint="--checkpoint CKPT builds from a model; --from DIR (with --target trt) from "
                              "an engines directory built by 'gcf-trt build --target cpu'")
    if chosen == "cpu":
        if target == "cpu" and tensorrt is not None:
            raise InputError("TensorRT options were given for --target cpu",
                             hint="drop them, or build with --target trt")
        if from_dir is not None:
            raise InputError("--from builds TensorRT plans from an engines directory; it needs --target trt",
                             hint="use --target trt --from DIR, or --checkpoint CKPT for CPU engines")
        if note is not None and progress is not None:
            progress(note["reason"])
        from .cpu_build import build_cpu_engines
        return build_cpu_engines(checkpoint, out, precision=precision, runtime=runtime, calib=calib,
                                 calibration=calibration, gate=gate, cpu=cpu or CpuOptions(), progress=progress,
                                 target_note=note)
    if target == "trt" and (cpu is not None or runtime is not None):
        raise InputError("CPU options (--runtime, --threads, --trial-iterations) were given for --target trt",
                         hint="drop them, or build with --target cpu")
    from .trt_build import build_trt_engines
    return build_trt_engines(checkpoint, out, precision=precision, calib=calib, from_dir=from_dir,
                             calibration=calibration, gate=gate, tensorrt=tensorrt or TensorRTOptions(),
                             progress=progress)
