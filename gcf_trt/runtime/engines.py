"""Load an engines directory: manifest -> checked files -> one backend per component."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EngineError, InputError
from ..manifest import COMPONENTS, Manifest, read_manifest, verify_files
from ..spec import BACKBONE_INPUT, HEAD_INPUTS, ModelSpec, io_shapes
from .backends import Backend, open_backend
from .head import HEAD_WEIGHTS_FILE, NumpyHead

_REBUILD_FROM_CKPT = "rebuild the engines from this checkpoint: gcf-trt build --checkpoint CKPT --out DIR"


@dataclass
class Engines:
    """The loaded backbone and head of one model, with its spec and manifest.

    Attributes:
        load_s: seconds :func:`load_engines` took per component (``backbone``, ``head``) and in
            all (``total``), file checks included: the runtime's share of a cold start.
    """

    path: Path
    spec: ModelSpec
    manifest: Manifest
    backbone: Backend
    head: Backend
    extra: dict[str, Any] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)

    @property
    def model_hash(self) -> str:
        return self.manifest.model_hash

    def close(self) -> None:
        self.backbone.close()
        self.head.close()

    def __enter__(self) -> "Engines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


HEAD_MODES = ("auto", "numpy", "engine")
_CPU_RUNTIMES = ("onnxruntime", "openvino")


def _check_int8_gated_on_these_kernels(engines_dir: Path, manifest: dict[str, Any], comp: dict[str, Any], runtime: str) -> None:
    """Refuse INT8 CPU engines gated on a VNNI CPU when this one has no VNNI.

    Without VNNI the int8 dot products go through saturating int16 pairs (:mod:`gcf_trt.cpuinfo`):
    the agreement the build measured on VNNI kernels says nothing about these.  A build made
    here was gated on these kernels and loads.  Older manifests without the build CPU's record
    had 8-bit weights only when built with VNNI.
    """
    if comp.get("precision") != "int8" or runtime not in ("onnxruntime", "openvino"):
        return
    quant = (manifest.get("calibration") or {}).get("quantization") or {}
    from ..cpuinfo import int8_saturation_risk
    built = quant.get("cpu_int8") or {}
    built_with_vnni = built["vnni"] if "vnni" in built else quant.get("weight_bits") == 8
    if built_with_vnni and int8_saturation_risk():
        raise EngineError(f"{engines_dir}: the INT8 backbone was gated on a CPU with VNNI; this CPU has no "
                          f"VNNI, where int8 dot products go through int16 pairs that can saturate, and its "
                          f"agreement was never measured here",
                          hint="rebuild the engines on this machine with 'gcf-trt build' (its gate runs this "
                               "CPU's kernels), or build with --precision fp32")


def load_engines(engines_dir: str | os.PathLike, *, runtime: str | None = None,
                 options: dict[str, Any] | None = None, expect_model_hash: str | None = None,
                 verify: bool = True, head: str = "auto") -> Engines:
    """Load both components of an engines directory.

    Args:
        engines_dir: a directory written by ``gcf-trt build``.
        runtime: force a runtime for every component (default: what the manifest chose).
            Only valid where the component file is ONNX (e.g. run an ORT build on OpenVINO).
        options: backend options overriding the manifest's (e.g. ``{"threads": 1}``).
        expect_model_hash: refuse engines built from another model.
        verify: check every component file against its sha256 in the manifest.
        head: ``"auto"`` (default): on a CPU runtime, run the head in numpy
            (:class:`~gcf_trt.runtime.head.NumpyHead`) from the ``head.npz`` the build ships
            beside ``head.onnx`` - it costs a fraction of an engine call (docs/STREAMING.md) - and
            the manifest's head engine otherwise (TensorRT, or a build without ``head.npz``);
            ``"numpy"``: require the numpy head; ``"engine"``: the manifest's head engine.
    """
    if head not in HEAD_MODES:
        raise InputError(f"head must be one of {', '.join(HEAD_MODES)}, got {head!r}",
                         hint="auto runs the numpy head where the build shipped head.npz")
    start = time.perf_counter()
    engines_dir = Path(engines_dir)
    manifest = read_manifest(engines_dir)
    if expect_model_hash and manifest.model_hash != expect_model_hash:
        raise EngineError(f"{engines_dir} was built for model {manifest.model_hash}, "
                          f"not {expect_model_hash}", hint=_REBUILD_FROM_CKPT)
    backends: dict[str, Backend] = {}
    load_s: dict[str, float] = {}
    try:
        for name in COMPONENTS:
            t0 = time.perf_counter()
            comp = manifest.component(name)
            if name == "head" and (numpy_file := _numpy_head_file(manifest, runtime, head)):
                if verify:  # head.onnx too: what TensorRT/Triton take from this directory
                    verify_files(engines_dir, manifest, sorted({numpy_file, comp["file"]}))
                backends[name] = NumpyHead(engines_dir / numpy_file, manifest.spec)
                load_s[name] = time.perf_counter() - t0
                continue
            if verify:
                verify_files(engines_dir, manifest, [comp["file"]])
            chosen = runtime or comp["runtime"]
            if name == "backbone":
                _check_int8_gated_on_these_kernels(engines_dir, manifest.data, comp, chosen)
            if runtime and runtime != comp["runtime"] and not comp["file"].endswith(".onnx"):
                raise EngineError(f"{comp['file']} is a {comp['runtime']} engine and cannot run on {runtime}")
            opts = {**(comp.get("options") or {}), **(options or {})} if chosen == comp["runtime"] else dict(options or {})
            if chosen == "openvino" and comp["file"].endswith(".onnx"):
                # The manifest says whether the file is Q/DQ; the backend need not open it to see,
                # and its sha256 keys the compiled-model cache without hashing the file again.
                opts.setdefault("quantized", comp.get("precision") == "int8")
                opts.setdefault("file_sha256", manifest.files.get(comp["file"]))
            backends[name] = open_backend(chosen, engines_dir / comp["file"], opts)
            load_s[name] = time.perf_counter() - t0
        _check_shapes(engines_dir, manifest.spec, backends)
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    load_s["total"] = time.perf_counter() - start
    engines = Engines(engines_dir, manifest.spec, manifest, backends["backbone"], backends["head"], load_s=load_s)
    check_contract(engines)
    return engines


def _numpy_head_file(manifest: Manifest, runtime: str | None, head: str) -> str | None:
    """The head weights file to run in numpy, or None for the manifest's head engine."""
    comp = manifest.component("head")
    if comp["runtime"] == NumpyHead.runtime:
        return comp["file"]
    if head == "engine":
        return None
    shipped = HEAD_WEIGHTS_FILE in manifest.files
    if head == "numpy":
        if not shipped:
            raise EngineError(f"these engines ship no {HEAD_WEIGHTS_FILE} for the numpy head",
                              hint="rebuild them with this gcf-trt, or use head='engine'")
        return HEAD_WEIGHTS_FILE
    on_cpu = (runtime or comp["runtime"]) in _CPU_RUNTIMES
    return HEAD_WEIGHTS_FILE if shipped and on_cpu else None


def borrow_or_load(engines: str | os.PathLike | Engines, *, runtime: str | None = None,
                   options: dict[str, Any] | None = None, expect_model_hash: str | None = None,
                   head: str = "auto") -> tuple[Engines, bool]:
    """``(engines, owned)``: load a directory (owned: the caller closes it) or check loaded
    :class:`Engines` (borrowed: the caller must not close them).

    The one engine-ownership rule of :class:`~gcf_trt.runtime.stream.StreamingClassifier` and
    :class:`~gcf_trt.runtime.multistream.MultiStreamClassifier`.
    """
    if isinstance(engines, Engines):
        if runtime is not None or options is not None or head != "auto":
            raise InputError("runtime/options/head apply when loading an engines directory, not to already "
                             "loaded Engines", hint="pass the directory instead, or load_engines(dir, "
                                                    "runtime=..., options=..., head=...) yourself")
        if expect_model_hash and engines.model_hash != expect_model_hash:
            raise EngineError(f"engines {engines.path} are for model {engines.model_hash}, "
                              f"not {expect_model_hash}", hint=_REBUILD_FROM_CKPT)
        check_contract(engines)
        return engines, False
    return load_engines(engines, runtime=runtime, options=options, expect_model_hash=expect_model_hash,
                        head=head), True


def check_contract(engines: Engines) -> None:
    """Refuse engines whose graphs lack the contract's input names (docs/DESIGN.md)."""
    b, h = engines.backbone, engines.head
    if b.input_shapes and BACKBONE_INPUT not in b.input_shapes:
        raise EngineError(f"backbone engine inputs {sorted(b.input_shapes)} lack {BACKBONE_INPUT!r}",
                          hint=_REBUILD_FROM_CKPT)
    missing = [n for n in HEAD_INPUTS if h.input_shapes and n not in h.input_shapes]
    if missing:
        raise EngineError(f"head engine inputs {sorted(h.input_shapes)} lack {missing}", hint=_REBUILD_FROM_CKPT)


def _check_shapes(engines_dir: Path, spec: ModelSpec, backends: dict[str, Backend]) -> None:
    """Refuse engine files whose tensor shapes disagree with the manifest's spec (e.g. the
    manifest of another model copied beside them): otherwise the first clip fails deep in the
    runtime.  Only dimensions both sides know are compared (batch and dynamic dims are skipped)."""
    shapes = io_shapes(spec)
    for name, backend in backends.items():
        want = {**shapes[name]["inputs"], **shapes[name]["outputs"]}
        have = {**backend.input_shapes, **backend.output_shapes}
        for tensor, shape in want.items():
            got = have.get(tensor)
            if got is None:
                continue
            if len(got) != len(shape) or any(g > 0 and w > 0 and g != w for g, w in zip(got[1:], shape[1:])):
                raise EngineError(f"{engines_dir / backend.path.name}: tensor {tensor!r} has shape {list(got)}, "
                                  f"but the manifest's model expects {list(shape)} (the manifest and the "
                                  f"engine files belong to different models)", hint=_REBUILD_FROM_CKPT)
