"""Load an engines directory: manifest -> checked files -> one backend per component."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..manifest import read_manifest, verify_files
from ..spec import ModelSpec
from .backends import Backend, open_backend


@dataclass
class Engines:
    """The loaded backbone and head of one model, with its spec and manifest."""

    path: Path
    spec: ModelSpec
    manifest: dict[str, Any]
    backbone: Backend
    head: Backend
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_hash(self) -> str:
        return self.manifest["model_hash"]

    def close(self) -> None:
        self.backbone.close()
        self.head.close()

    def __enter__(self) -> "Engines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_engines(engines_dir: str | os.PathLike, *, runtime: str | None = None,
                 options: dict[str, Any] | None = None, expect_model_hash: str | None = None,
                 verify: bool = True) -> Engines:
    """Load both components of an engines directory.

    Args:
        engines_dir: a directory written by ``gcf-trt build``.
        runtime: force a runtime for every component (default: what the manifest chose).
            Only valid where the component file is ONNX (e.g. run an ORT build on OpenVINO).
        options: backend options overriding the manifest's (e.g. ``{"threads": 1}``).
        expect_model_hash: refuse engines built from another model.
        verify: check every component file against its sha256 in the manifest.
    """
    engines_dir = Path(engines_dir)
    manifest = read_manifest(engines_dir)
    if expect_model_hash and manifest.get("model_hash") != expect_model_hash:
        raise EngineError(f"{engines_dir} was built for model {manifest.get('model_hash')}, "
                          f"not {expect_model_hash}", hint="rebuild the engines from this checkpoint")
    backends: dict[str, Backend] = {}
    try:
        for name in ("backbone", "head"):
            comp = manifest["components"][name]
            if verify:
                verify_files(engines_dir, manifest, [comp["file"]])
            chosen = runtime or comp["runtime"]
            if runtime and runtime != comp["runtime"] and not comp["file"].endswith(".onnx"):
                raise EngineError(f"{comp['file']} is a {comp['runtime']} engine and cannot run on {runtime}")
            opts = {**(comp.get("options") or {}), **(options or {})} if chosen == comp["runtime"] else dict(options or {})
            if chosen == "openvino" and comp["file"].endswith(".onnx"):
                # The manifest says whether the file is Q/DQ; the backend need not open it to see.
                opts.setdefault("quantized", comp.get("precision") == "int8")
            backends[name] = open_backend(chosen, engines_dir / comp["file"], opts)
        _check_shapes(engines_dir, manifest["spec_obj"], backends)
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    return Engines(engines_dir, manifest["spec_obj"], manifest, backends["backbone"], backends["head"])


def _check_shapes(engines_dir: Path, spec: ModelSpec, backends: dict[str, Backend]) -> None:
    """Refuse engine files whose tensor shapes disagree with the manifest's spec (e.g. the
    manifest of another model copied beside them): otherwise the first clip fails deep in the
    runtime.  Only dimensions both sides know are compared (batch and dynamic dims are skipped)."""
    want = {"backbone": {"clip": (-1, *spec.clip_shape), "descriptor": (-1, spec.dim)},
            "head": {"descriptors": (-1, spec.ring_size, spec.dim), "mask": (-1, spec.ring_size),
                     "logits": (-1, spec.num_classes)}}
    for name, tensors in want.items():
        backend = backends[name]
        have = {**backend.input_shapes, **backend.output_shapes}
        for tensor, shape in tensors.items():
            got = have.get(tensor)
            if got is None:
                continue
            if len(got) != len(shape) or any(g > 0 and w > 0 and g != w for g, w in zip(got[1:], shape[1:])):
                raise EngineError(f"{engines_dir / backend.path.name}: tensor {tensor!r} has shape {list(got)}, "
                                  f"but the manifest's model expects {list(shape)} (the manifest and the "
                                  f"engine files belong to different models)")
