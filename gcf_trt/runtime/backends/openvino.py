"""OpenVINO backend: the CPU engine for Intel (and ARM) CPUs.

It compiles the very ONNX files the build writes (``backbone.onnx`` FP32, ``backbone_int8.onnx``
Q/DQ): there is no second calibration path.  torch-free.

Precision is *set*, never left to the plugin: on a CPU with BF16 support a plain
``compile_model`` runs in BF16, not FP32.  The backend therefore always passes
``INFERENCE_PRECISION_HINT`` (``f32`` unless ``inference_precision="bf16"`` is asked for) and
reports what the compiled model says it runs in (``precision`` / ``inference_precision``).
A Q/DQ graph reports ``precision = "int8"`` (its non-quantized layers run in
``inference_precision``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...errors import BackendUnavailable, EngineError, InputError
from .base import Backend

HINTS = ("latency", "throughput")
FLOAT_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
PRECISION_KEY = "gcf_trt.precision"


def _ov():
    try:
        import openvino
    except ImportError as exc:  # also a broken install failing to load its libraries
        raise BackendUnavailable(f"OpenVINO cannot be imported: {exc}",
                                 hint="pip install 'gcf-trt[openvino]' (or pip install openvino)") from exc
    return openvino


_SHARED_CORE = None


def shared_core():
    """One ``ov.Core`` per process: creating one costs ~0.1 s, and a runtime loads two graphs."""
    global _SHARED_CORE
    if _SHARED_CORE is None:
        _SHARED_CORE = _ov().Core()
    return _SHARED_CORE


def cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. ``["FP32", "BF16", "INT8"]``)."""
    return [str(c) for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def supports_bf16() -> bool:
    try:
        return "BF16" in cpu_capabilities()
    except Exception:  # noqa: BLE001 - no CPU plugin, or a property this version lacks
        return False


def _onnx_precision_tag(path: Path) -> str | None:
    """The ``gcf_trt.precision`` metadata of an ONNX file (without loading its weights' meaning)."""
    if path.suffix != ".onnx":
        return None
    try:
        import onnx
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - OpenVINO will report a broken file itself
        return None
    for prop in model.metadata_props:
        if prop.key == PRECISION_KEY:
            return prop.value
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return "int8"
    return None


def _type_name(value: Any) -> str:
    """``ov.Type.bf16`` -> ``"bf16"`` (older releases return the string already)."""
    name = getattr(value, "get_type_name", None)
    return name() if callable(name) else str(value).lower()


class OpenVinoBackend(Backend):
    """Runs an ONNX graph (FP32 or Q/DQ INT8) with OpenVINO's CPU plugin.

    Options:
        hint: ``"latency"`` (default; one stream, the camera case) or ``"throughput"``.
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice, all cores).
        inference_precision: ``"f32"`` (default) or ``"bf16"`` (needs a CPU with BF16); the
            float parts of the graph run in it.
        cache_dir: OpenVINO model cache (``CACHE_DIR``): the compiled blob is reused on the next
            start, which cuts cold-start compile time.  Default none.
        device: default ``"CPU"``.
    """

    runtime = "openvino"

    def __init__(self, path: Path, hint: str = "latency", threads: int | None = None,
                 inference_precision: str = "f32", cache_dir: str | None = None, device: str = "CPU",
                 quantized: bool | None = None, **options: Any):
        super().__init__(path, hint=hint, threads=threads, inference_precision=inference_precision,
                         cache_dir=cache_dir, device=device, **options)
        ov = _ov()
        if hint not in HINTS:
            raise InputError(f"OpenVINO hint must be one of {', '.join(HINTS)}, got {hint!r}")
        if inference_precision not in FLOAT_PRECISIONS:
            raise InputError(f"OpenVINO inference_precision must be one of {', '.join(FLOAT_PRECISIONS)}, "
                             f"got {inference_precision!r}")
        if not Path(path).is_file():
            raise EngineError(f"{path} does not exist")
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": hint.upper(),
            "INFERENCE_PRECISION_HINT": inference_precision,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            # CACHE_DIR is a Core-wide property, so a cached engine gets a Core of its own.
            self.core = ov.Core() if cache_dir else shared_core()
            if cache_dir:
                os.makedirs(cache_dir, exist_ok=True)
                self.core.set_property({"CACHE_DIR": str(cache_dir)})
            # From the path (not a read ov.Model): on a cache hit OpenVINO skips reading the ONNX.
            self.compiled = self.core.compile_model(str(path), device, config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long text
            raise EngineError(f"OpenVINO cannot compile {path}: {str(exc).strip().splitlines()[0]}") from exc
        self.request = self.compiled.create_infer_request()

        def shape(port) -> tuple[int, ...]:
            return tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        self._inputs = {p.any_name: p for p in self.compiled.inputs}
        self._outputs = list(self.compiled.outputs)
        self.input_shapes = {name: shape(p) for name, p in self._inputs.items()}
        self.output_shapes = {p.any_name: shape(p) for p in self._outputs}
        self._output_names = [p.any_name for p in self._outputs]
        # What the compiled model really runs in (not what was asked for).
        actual = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.inference_precision = FLOAT_PRECISIONS.get(actual, actual)
        # load_engines passes what the manifest declares (``quantized``), which spares the
        # runtime importing onnx (~0.13 s, 13 MB) just to read the file's precision tag.
        self.quantized = quantized if quantized is not None else _onnx_precision_tag(Path(path)) == "int8"
        self.precision = "int8" if self.quantized else self.inference_precision
        self.properties = {
            "inference_precision": self.inference_precision,
            "performance_hint": str(self.compiled.get_property("PERFORMANCE_HINT")),
            "num_streams": str(self.compiled.get_property("NUM_STREAMS")),
            "inference_num_threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
        }

    @classmethod
    def check_available(cls) -> None:
        ov = _ov()
        try:
            devices = shared_core().available_devices
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailable(f"OpenVINO is installed but cannot start: {exc}") from exc
        if "CPU" not in devices:
            raise BackendUnavailable(f"OpenVINO has no CPU device here (devices: {devices})")

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(feeds) - set(self._inputs)
        if unknown:
            raise InputError(f"unknown input(s) {sorted(unknown)}; {self.path.name} takes {sorted(self._inputs)}")
        inputs = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in feeds.items()}
        result = self.request.infer(inputs)
        # infer() returns views of the request's output tensors: copy (the caller owns them).
        return {name: np.array(result[port], copy=True) for name, port in zip(self._output_names, self._outputs)}

    def close(self) -> None:
        self.request = None  # type: ignore[assignment]
        self.compiled = None  # type: ignore[assignment]
