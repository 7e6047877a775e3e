"""``manifest.json``: what an engines directory holds, how it was built, and its integrity.

torch-free: written by ``compile.build`` and read by the runtime.  Schema (format 1)::

    {
      "format": "gcf-trt-engines", "version": 1,
      "model_hash": "...",            # compile.model.model_hash of the checkpoint's model
      "spec": {...},                  # ModelSpec.to_dict()
      "target": "cpu" | "trt",
      "components": {                 # what the runtime loads
        "backbone": {"file": "backbone.onnx", "runtime": "onnxruntime", "precision": "fp32",
                     "options": {...}, "inputs": {"clip": [-1, 3, T, H, W]},
                     "outputs": {"descriptor": [-1, D]}},
        "head":     {"file": "head.onnx", ...}
      },
      "files": {"backbone.onnx": "<sha256>", ...},   # every file in the directory
      "versions": {"gcf_trt": ..., "onnx": ..., "onnxruntime": ..., ...},
      "calibration": {...} | null, "agreement": {...} | null, "selection": {...} | null,
      "created": "2026-11-26T16:00:00Z"
    }
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import EngineError
from .spec import ModelSpec

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "gcf-trt-engines"
MANIFEST_VERSION = 1
COMPONENTS = ("backbone", "head")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON via a temp file + rename so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_manifest(engines_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the manifest of an engines directory (not the file hashes)."""
    engines_dir = Path(engines_dir)
    if not engines_dir.is_dir():
        raise EngineError(f"engines directory {engines_dir} does not exist",
                          hint="build it first: gcf-trt build --checkpoint CKPT --out DIR")
    path = engines_dir / MANIFEST_NAME
    if not path.is_file():
        raise EngineError(f"{engines_dir} has no {MANIFEST_NAME}: it is not a gcf-trt engines directory",
                          hint="point --engines at a directory written by 'gcf-trt build', or rebuild it")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise EngineError(f"{path} is not a gcf-trt manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise EngineError(f"{path} has manifest version {manifest.get('version')}, "
                          f"this gcf-trt reads version {MANIFEST_VERSION}")
    for name in COMPONENTS:
        comp = manifest.get("components", {}).get(name)
        if not isinstance(comp, dict) or "file" not in comp or "runtime" not in comp:
            raise EngineError(f"{path}: component {name!r} is missing or incomplete")
        if not isinstance(comp["file"], str) or comp["file"] in ("", ".", "..") or Path(comp["file"]).name != comp["file"]:
            raise EngineError(f"{path}: component {name!r} names {comp['file']!r}, not a file inside the "
                              f"engines directory (refused: a manifest must not point elsewhere)")
    manifest["spec_obj"] = ModelSpec.from_dict(manifest["spec"])
    return manifest


def verify_files(engines_dir: str | os.PathLike, manifest: dict[str, Any],
                 names: list[str] | None = None) -> None:
    """Check that the files (all, or ``names``) exist and match their recorded sha256."""
    engines_dir = Path(engines_dir)
    files = manifest.get("files", {})
    for name in names if names is not None else sorted(files):
        if name not in files:
            raise EngineError(f"{engines_dir / name} is not recorded in the manifest")
        path = engines_dir / name
        if not path.is_file():
            raise EngineError(f"{path} is listed in the manifest but missing")
        if sha256_file(path) != files[name]:
            raise EngineError(f"{path} does not match the hash in the manifest (corrupt, truncated "
                              f"or replaced)")
