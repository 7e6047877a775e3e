"""``gcf-trt build``: checkpoint -> ONNX -> engines directory with ``manifest.json``.

The directory is written atomically (see :func:`gcf_trt.fsutil.atomic_output_dir`).
This module holds the FP32 CPU path; INT8 calibration lives in :mod:`.precision`.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import InputError
from ..fsutil import atomic_output_dir
from ..manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, sha256_file, write_json_atomic
from .export import (BACKBONE_INPUTS, BACKBONE_OUTPUTS, HEAD_INPUTS, HEAD_OUTPUTS, OPSET,
                     check_parity, export_backbone, export_head)
from .model import GCFNet, load_checkpoint, model_hash

PARITY_ATOL = 1e-4


@dataclass
class BuildResult:
    """What a build wrote: the directory, its manifest, and lines for the summary."""

    out: Path
    manifest: dict[str, Any]
    summary: list[str] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torch
    versions = {"gcf_trt": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "torch": torch.__version__}
    try:
        import openvino
        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return versions


def io_shapes(model: GCFNet) -> dict[str, dict[str, dict[str, list[int]]]]:
    spec = model.spec
    return {
        "backbone": {"inputs": {BACKBONE_INPUTS[0]: [-1, *spec.clip_shape]},
                     "outputs": {BACKBONE_OUTPUTS[0]: [-1, spec.dim]}},
        "head": {"inputs": {HEAD_INPUTS[0]: [-1, spec.ring_size, spec.dim], HEAD_INPUTS[1]: [-1, spec.ring_size]},
                 "outputs": {HEAD_OUTPUTS[0]: [-1, spec.num_classes], HEAD_OUTPUTS[1]: [-1, spec.ring_size]}},
    }


def export_fp32(model: GCFNet, out_dir: Path) -> dict[str, float]:
    """Write ``backbone.onnx`` and ``head.onnx`` into ``out_dir`` and check them against PyTorch."""
    export_backbone(model, out_dir / "backbone.onnx")
    export_head(model, out_dir / "head.onnx")
    parity = check_parity(model, out_dir / "backbone.onnx", out_dir / "head.onnx")
    worst = max(parity.values())
    if worst > PARITY_ATOL:
        raise InputError(f"exported ONNX differs from PyTorch by {worst:.2e} (> {PARITY_ATOL})",
                         hint="report this as a bug with the checkpoint's backbone name")
    return parity


def make_manifest(model: GCFNet, out_dir: Path, components: dict[str, dict[str, Any]], *,
                  target: str, **sections: Any) -> dict[str, Any]:
    """Assemble a manifest for the files now in ``out_dir`` (every file is hashed)."""
    shapes = io_shapes(model)
    for name, comp in components.items():
        comp.setdefault("options", {})
        comp.update(shapes[name])
    files = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir())
             if p.is_file() and p.name != MANIFEST_NAME}
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "model_hash": model_hash(model), "spec": model.spec.to_dict(), "target": target,
        "opset": OPSET, "components": components, "files": files,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **sections,
    }


def build_engines(checkpoint: str | os.PathLike, out: str | os.PathLike, *, target: str = "cpu",
                  precision: str = "fp32", calib: str | os.PathLike | None = None,
                  progress: Callable[[str], None] | None = None, **options: Any) -> BuildResult:
    """Build an engines directory from a checkpoint.

    Args:
        checkpoint: a gcf-trt checkpoint (``torch.load(weights_only=True)``).
        out: the engines directory to (re)create atomically.
        target: ``"cpu"`` (this module), ``"trt"`` or ``"auto"``.
        precision: ``"fp32"`` here; other precisions are handled by :mod:`.precision`.
        calib: directory of calibration videos (INT8 only).
    """
    say = progress or (lambda msg: None)
    if target != "cpu" or precision != "fp32":
        raise InputError(f"target={target!r} precision={precision!r} is not supported by this build path",
                         hint="use --target cpu --precision fp32")
    model = load_checkpoint(checkpoint)
    with atomic_output_dir(out) as tmp:
        say("exporting ONNX")
        parity = export_fp32(model, tmp)
        components = {
            "backbone": {"file": "backbone.onnx", "runtime": "onnxruntime", "precision": "fp32"},
            "head": {"file": "head.onnx", "runtime": "onnxruntime", "precision": "fp32"},
        }
        manifest = make_manifest(model, tmp, components, target="cpu", parity=parity,
                                 calibration=None, agreement=None, selection=None)
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    out = Path(out)
    return BuildResult(out, manifest, [f"wrote {out}/backbone.onnx, head.onnx (fp32, onnxruntime)",
                                       f"model {manifest['model_hash']}, parity max |diff| {max(parity.values()):.1e}"])
