"""The build steps both targets share: FP32 export, calibration set, INT8 Q/DQ files, manifest.

:mod:`.cpu_build` and :mod:`.trt_build` import this module; it imports neither (no import
circle), and it imports torch only inside :func:`export_fp32`, so a TensorRT build from an
existing engines directory (``gcf-trt build --target trt --from DIR``) never loads torch.

Files every build writes into its (temporary, then swapped-in) directory:

==========================  =====================================================================
``backbone.onnx``           FP32 backbone, checked against PyTorch (kept: reference and source)
``head.onnx``               FP32 head
``backbone_int8.onnx``      INT8 Q/DQ backbone for ONNX Runtime / OpenVINO (INT32 biases)
``backbone_int8_trt.onnx``  the same calibration for TensorRT: float biases (TensorRT's ONNX
                            parser rejects an INT32-bias ``DequantizeLinear``), checked against
                            TensorRT's Q/DQ rules (:func:`.precision.tensorrt_qdq_problems`)
==========================  =====================================================================

The manifest's ``sources`` section (written with :func:`gcf_trt.manifest.new_manifest`) names the ONNX files a later TensorRT build can start from.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .. import __version__
from ..errors import CalibrationError, InputError, OutputError
from ..manifest import MANIFEST_NAME, Manifest, new_manifest
from ..spec import ModelSpec
from .options import CalibrationOptions

if TYPE_CHECKING:
    from .model import GCFNet

FP32_FILE, HEAD_FILE = "backbone.onnx", "head.onnx"
INT8_FILE = "backbone_int8.onnx"          # CPU runtimes
INT8_TRT_FILE = "backbone_int8_trt.onnx"  # TensorRT (float biases)
PARITY_ATOL = 1e-4
Say = Callable[[str], None]


@dataclass
class BuildResult:
    """What a build wrote: the directory, its manifest, and lines for the summary."""

    out: Path
    manifest: Manifest
    summary: list[str] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    """Versions of what the build used (torch only when it is already loaded: ``--from`` has none)."""
    import sys

    import onnx
    import onnxruntime
    versions = {"gcf_trt": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if "torch" in sys.modules:
        versions["torch"] = sys.modules["torch"].__version__
    try:
        import openvino
        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return versions


def export_fp32(model: "GCFNet", out_dir: Path) -> dict[str, float]:
    """Write ``backbone.onnx`` and ``head.onnx`` into ``out_dir`` and check them against PyTorch."""
    from .export import check_parity, export_backbone, export_head
    export_backbone(model, out_dir / FP32_FILE)
    export_head(model, out_dir / HEAD_FILE)
    parity = check_parity(model, out_dir / FP32_FILE, out_dir / HEAD_FILE)
    worst = max(parity.values())
    if worst > PARITY_ATOL:
        raise InputError(f"exported ONNX differs from PyTorch by {worst:.2e} (> {PARITY_ATOL})",
                         hint="report this as a bug with the checkpoint's backbone name")
    return parity


def check_output(out: Path) -> None:
    """Fail before any work when ``out`` obviously cannot be (re)created."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory",
                          hint="pass --out a new or existing engines directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        # The build replaces --out as a whole: never swallow a directory that is not ours.
        raise OutputError(f"output {out} exists, is not empty and is not an engines directory "
                          f"(no {MANIFEST_NAME}); refusing to replace it",
                          hint="pass --out a new directory (e.g. engines/NAME) or an earlier build's")
    parent = out.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {parent} (no write permission on {probe})")


@dataclass
class CalibrationSet:
    """Clips from the ``--calib`` videos: ``calib`` to calibrate on, ``holdout`` for the gate."""

    calib: np.ndarray
    holdout: list[np.ndarray]  # one clip sequence per held-out video (rings never span two)
    report: dict[str, Any]


def calibration_set(calib_dir: str | Path, spec: ModelSpec, opts: CalibrationOptions, say: Say,
                    bars: bool = False) -> CalibrationSet:
    """Read the calibration videos (before any export, so bad videos fail fast) and split them."""
    from .calibration import calibration_split
    say(f"reading calibration videos from {calib_dir}")
    report: dict[str, Any] = {}
    calib, holdout = calibration_split(calib_dir, spec, max_clips=opts.clips, gate_predictions=opts.gate_predictions,
                                       seed=opts.seed, report=report, progress=bars)
    return CalibrationSet(calib, holdout, report)


def quantize_backbone(out_dir: Path, cset: CalibrationSet, opts: CalibrationOptions, say: Say, *,
                      cpu: bool = True, tensorrt: bool = True, bars: bool = False) -> dict[str, Any]:
    """Write the INT8 Q/DQ backbone(s) from ``backbone.onnx``: one calibration, two files.

    Returns ``{"cpu": info | None, "tensorrt": info | None}`` (what :func:`.precision.quantize_int8`
    reports; the TensorRT entry also lists ``tensorrt_qdq_problems``, which must be empty).
    """
    from .precision import quantize_int8, tensorrt_qdq_problems
    if len(cset.calib) == 0:
        raise CalibrationError("no calibration clips to quantize with")
    done: dict[str, Any] = {"cpu": None, "tensorrt": None}
    if cpu:
        say(f"calibrating INT8 on {len(cset.calib)} clips ({opts.method})")
        done["cpu"] = quantize_int8(out_dir / FP32_FILE, out_dir / INT8_FILE, cset.calib, method=opts.method,
                                    progress=bars)
    if tensorrt:
        import onnx
        say(f"writing the TensorRT Q/DQ backbone ({INT8_TRT_FILE}: float biases)")
        info = quantize_int8(out_dir / FP32_FILE, out_dir / INT8_TRT_FILE, cset.calib, method=opts.method,
                             progress=bars, for_tensorrt=True)
        problems = tensorrt_qdq_problems(onnx.load(str(out_dir / INT8_TRT_FILE)))
        if problems:
            raise CalibrationError(f"{INT8_TRT_FILE} breaks TensorRT's Q/DQ rules: " + "; ".join(problems[:3]),
                                   hint="report this as a bug (quantize_int8(for_tensorrt=True) must not do this)")
        done["tensorrt"] = {**(info or {}), "tensorrt_qdq_problems": problems}
    return done


def make_manifest(spec: ModelSpec, model_hash: str, out_dir: Path, components: Mapping[str, Mapping[str, Any]],
                  *, target: str, opset: int, sources: Mapping[str, Any],
                  versions: Mapping[str, str] | None = None, **sections: Any) -> Manifest:
    """The manifest of the files now in ``out_dir`` (:func:`gcf_trt.manifest.new_manifest`: every
    file hashed, shapes from the spec, inputs not modified), with the ``sources`` section.

    ``sources`` names the ONNX files in ``out_dir`` (``{"backbone": ..., "head": ...,
    "backbone_int8_tensorrt": ... | None}``): what ``--target trt --from DIR`` builds from.
    """
    for role, name in sources.items():
        if name is not None and not (out_dir / name).is_file():
            raise InputError(f"manifest source {role} names {name}, which is not in {out_dir}")
    return new_manifest(model_hash=model_hash, spec=spec, target=target, components=dict(components),
                        engines_dir=out_dir, versions=dict(versions) if versions is not None else library_versions(),
                        opset=opset, sources=dict(sources), **sections)
