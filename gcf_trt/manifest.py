"""``manifest.json``: what an engines directory holds, how it was built, and its integrity.

torch-free.  This module is the one place a manifest is read (:func:`read_manifest`), checked
(:meth:`Manifest.from_dict`) and written (:func:`write_manifest`); the build assembles one with
:func:`new_manifest`.  The JSON schema is published in ``docs/manifest.schema.json`` (format 1)::

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

A :class:`Manifest` is also a read-only mapping over that JSON (``manifest["selection"]``), for
the free-form build records; the typed accessors are ``.spec``, ``.component(name)`` and
``.max_batch()``.
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import EngineError
from .spec import ModelSpec, io_shapes

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "gcf-trt-engines"
MANIFEST_VERSION = 1
COMPONENTS = ("backbone", "head")
_REBUILD = "rebuild the engines with this gcf-trt: gcf-trt build --checkpoint CKPT --out DIR"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON via a temp file + fsync + rename so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True, eq=False)
class Manifest(Mapping):
    """A validated ``manifest.json``.

    Attributes:
        data: the JSON document exactly as written (never holds non-JSON values).
        spec: the model's :class:`~gcf_trt.spec.ModelSpec`, parsed from ``data["spec"]``.
        path: the file it was read from (None for one built in memory).

    Compares equal to a dict with the same JSON content.
    """

    data: dict[str, Any]
    spec: ModelSpec
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike | None = None) -> "Manifest":
        """Check ``data`` (format, version, both components, file names) and wrap it.

        Raises EngineError (with a "rebuild" hint where rebuilding is the fix).
        """
        where = str(path) if path is not None else "manifest"
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise EngineError(f"{where} is not a gcf-trt manifest", hint=_REBUILD)
        if data.get("version") != MANIFEST_VERSION:
            raise EngineError(f"{where} has manifest version {data.get('version')!r}, this gcf-trt reads "
                              f"version {MANIFEST_VERSION}", hint=_REBUILD)
        components = data.get("components")
        for name in COMPONENTS:
            comp = components.get(name) if isinstance(components, dict) else None
            if not isinstance(comp, dict) or "file" not in comp or "runtime" not in comp:
                raise EngineError(f"{where}: component {name!r} is missing or incomplete", hint=_REBUILD)
            file = comp["file"]
            if not isinstance(file, str) or file in ("", ".", "..") or Path(file).name != file:
                raise EngineError(f"{where}: component {name!r} names {file!r}, not a file inside the "
                                  f"engines directory (refused: a manifest must not point elsewhere)",
                                  hint=_REBUILD)
        if not isinstance(data.get("model_hash"), str) or not isinstance(data.get("files", {}), dict):
            raise EngineError(f"{where}: model_hash or files missing", hint=_REBUILD)
        try:
            spec = ModelSpec.from_dict(data.get("spec"))
        except Exception as exc:  # noqa: BLE001 - InputError from the spec's own checks
            raise EngineError(f"{where}: its model spec is invalid ({getattr(exc, 'message', exc)})",
                              hint=_REBUILD) from exc
        return cls(data, spec, Path(path) if path is not None else None)

    # --- typed accessors ----------------------------------------------------------------
    @property
    def model_hash(self) -> str:
        return self.data["model_hash"]

    @property
    def target(self) -> str | None:
        return self.data.get("target")

    @property
    def files(self) -> dict[str, str]:
        """``{file name: sha256}`` of every file in the directory."""
        return self.data.get("files", {})

    def component(self, name: str) -> dict[str, Any]:
        """The record of ``"backbone"`` or ``"head"`` (file, runtime, precision, options, shapes)."""
        try:
            return self.data["components"][name]
        except KeyError:
            raise EngineError(f"the manifest has no component {name!r} (it has "
                              f"{sorted(self.data['components'])})") from None

    def max_batch(self, name: str = "backbone") -> int | None:
        """The largest batch the component's engine accepts, where the build recorded one.

        ONNX engines take any batch (None).  A TensorRT build records its optimization profile
        (``tensorrt.builds[name].profile[tensor].max``, and ``tensorrt.options.max_batch``);
        a component's ``options`` may also carry ``max_batch``.
        """
        opts = self.component(name).get("options") or {}
        for key in ("max_batch", "max_batch_size"):
            if isinstance(opts.get(key), int):
                return opts[key]
        section = self.data.get("tensorrt") or {}
        build = (section.get("builds") or {}).get(name) or {}
        profile = build.get("profile") or opts.get("profile") or {}
        maxima = [v["max"][0] for v in profile.values()
                  if isinstance(v, dict) and isinstance(v.get("max"), (list, tuple)) and v["max"]]
        if maxima:
            return int(min(maxima))
        top = (section.get("options") or {}).get("max_batch")
        return int(top) if isinstance(top, int) else None

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the JSON document."""
        return copy.deepcopy(self.data)

    # --- read-only mapping over the JSON ------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        comps = {n: f"{c.get('runtime')}/{c.get('precision')}" for n, c in self.data["components"].items()}
        return f"Manifest(model={self.model_hash}, target={self.target}, components={comps})"


def new_manifest(*, model_hash: str, spec: ModelSpec, target: str, components: dict[str, dict[str, Any]],
                 engines_dir: str | os.PathLike, versions: dict[str, str], opset: int,
                 **sections: Any) -> Manifest:
    """Assemble the manifest of the files now in ``engines_dir`` (every file is hashed).

    ``components`` maps ``backbone``/``head`` to at least ``file``, ``runtime``, ``precision``
    (and ``options``); the tensor shapes come from :func:`~gcf_trt.spec.io_shapes`.  The
    dicts passed in are not modified.  ``sections`` are the build's records (``parity``,
    ``calibration``, ``agreement``, ``selection``, ``tensorrt``, ...), JSON values.
    """
    engines_dir = Path(engines_dir)
    shapes = io_shapes(spec)
    comps = {name: {"options": {}, **copy.deepcopy(comp), **shapes[name]} for name, comp in components.items()}
    files = {p.name: sha256_file(p) for p in sorted(engines_dir.iterdir())
             if p.is_file() and p.name != MANIFEST_NAME}
    data = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "model_hash": model_hash, "spec": spec.to_dict(), "target": target,
        "opset": opset, "components": comps, "files": files, "versions": dict(versions),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **copy.deepcopy(sections),
    }
    # Round-trip through JSON now, so a non-JSON value fails the build, not a later load.
    return Manifest.from_dict(json.loads(json.dumps(data)))


def write_manifest(engines_dir: str | os.PathLike, manifest: Manifest | dict[str, Any]) -> Path:
    """Write ``engines_dir/manifest.json`` atomically (validated first); returns its path."""
    data = manifest.data if isinstance(manifest, Manifest) else manifest
    Manifest.from_dict(data)
    path = Path(engines_dir) / MANIFEST_NAME
    write_json_atomic(path, data)
    return path


def read_manifest(engines_dir: str | os.PathLike) -> Manifest:
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
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path} is not valid JSON ({exc})", hint=_REBUILD) from exc
    return Manifest.from_dict(data, path)


def verify_files(engines_dir: str | os.PathLike, manifest: Mapping[str, Any],
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
