"""OpenVINO backend: the CPU engine for Intel (and ARM) CPUs.

It compiles the very ONNX files the build writes (``backbone.onnx`` FP32, ``backbone_int8.onnx``
Q/DQ): there is no second calibration path.  torch-free.

Precision is *set*, never left to the plugin: on a CPU with BF16 support a plain
``compile_model`` runs in BF16, not FP32.  The backend therefore always passes
``INFERENCE_PRECISION_HINT`` (``f32`` unless ``inference_precision="bf16"`` is asked for) and
reports what the compiled model says it runs in (``precision`` / ``inference_precision``).
A Q/DQ graph reports ``precision = "int8"`` (its non-quantized layers run in
``inference_precision``).

Cold start: OpenVINO compiles the graph at every start unless its model cache is on, so the
backend caches compiled models *by default* in a per-user directory (:func:`default_cache_dir`,
``$GCF_TRT_CACHE_DIR`` or ``~/.cache/gcf-trt/openvino``), one sub-directory per engine file
sha256 so a replaced file can never pick up a stale blob.  The cache is passed as the
compile-time ``CACHE_DIR`` property, so all engines share the process's one ``ov.Core``.
``cache`` says whether a start was the first (``hit: False``, compiled and stored) or warm.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import BackendUnavailable, EngineError, InputError
from .base import Backend

HINTS = ("latency", "throughput")
FLOAT_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
PRECISION_KEY = "gcf_trt.precision"
CACHE_ENV = "GCF_TRT_CACHE_DIR"
log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where compiled OpenVINO models are cached: ``$GCF_TRT_CACHE_DIR/openvino``, else
    ``$XDG_CACHE_HOME/gcf-trt/openvino``, else ``~/.cache/gcf-trt/openvino``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "openvino"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gcf-trt" / "openvino"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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


@functools.lru_cache(maxsize=1)
def available_devices() -> tuple[str, ...]:
    """The Core's devices, listed once per process (listing loads and queries every plugin:
    ~0.1 s, so the load path never calls it; see :meth:`OpenVinoBackend.check_available`)."""
    return tuple(shared_core().available_devices)


@functools.lru_cache(maxsize=1)
def _cpu_device_name() -> str:
    """The CPU plugin's device name: loads only the plugin a CPU engine needs anyway."""
    return str(shared_core().get_property("CPU", "FULL_DEVICE_NAME"))


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
        cache_dir: root of the compiled-model cache (default :func:`default_cache_dir`; ``""``
            or False: no cache).  The blob goes into ``cache_dir/<sha256 of the file>[:20]/``.
        file_sha256: the file's sha256 when the caller knows it (``load_engines`` passes the
            manifest's), else the file is hashed.
        device: default ``"CPU"``.

    ``parallel_requests`` is the compiled model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` (1 with
    the LATENCY hint, the number of CPU streams with THROUGHPUT); :meth:`infer_many` runs that
    many requests at once through an ``AsyncInferQueue``.
    """

    runtime = "openvino"

    def __init__(self, path: Path, hint: str = "latency", threads: int | None = None,
                 inference_precision: str = "f32", cache_dir: str | os.PathLike | bool | None = None,
                 device: str = "CPU", quantized: bool | None = None, file_sha256: str | None = None,
                 **options: Any):
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
        cache = self._cache_dir(Path(path), cache_dir, file_sha256)
        if cache is not None:
            config["CACHE_DIR"] = str(cache)  # a compile-time property: the shared Core stays as it is
        try:
            self.core = shared_core()
            # From the path (not a read ov.Model): on a cache hit OpenVINO skips reading the ONNX.
            self.compiled = self.core.compile_model(str(path), device, config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long text
            raise EngineError(f"OpenVINO cannot compile {path}: {str(exc).strip().splitlines()[0]}") from exc
        self.request = self.compiled.create_infer_request()
        self._queue = None  # AsyncInferQueue, made on the first infer_many
        self.parallel_requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        hit = bool(self.compiled.get_property("LOADED_FROM_CACHE")) if cache is not None else None
        self.cache = {"dir": str(cache) if cache is not None else None, "hit": hit}

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
            "optimal_infer_requests": self.parallel_requests,
            "loaded_from_cache": hit,
        }

    @staticmethod
    def _cache_dir(path: Path, cache_dir: str | os.PathLike | bool | None, sha: str | None) -> Path | None:
        """This file's cache directory, created; None when caching is off or impossible (a
        read-only home must not stop a camera: it only costs the compile time)."""
        if cache_dir is False or cache_dir == "":
            return None
        root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
        try:
            key = (sha or _file_sha256(path))[:20]
            target = root / key
            target.mkdir(parents=True, exist_ok=True)
            return target
        except OSError as exc:
            log.warning("OpenVINO model cache off for %s: %s", path.name, exc)
            return None

    @classmethod
    def check_available(cls) -> None:
        """Asks the CPU plugin alone (once per process), not the list of every device."""
        _ov()
        try:
            _cpu_device_name()
        except Exception as exc:  # noqa: BLE001 - no CPU plugin, or OpenVINO cannot start
            raise BackendUnavailable(f"OpenVINO cannot use the CPU here: {str(exc).strip().splitlines()[0]}",
                                     hint="pip install 'gcf-trt[openvino]' on an x86-64 or ARM64 CPU") from exc

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(feeds) - set(self._inputs)
        if unknown:
            raise InputError(f"unknown input(s) {sorted(unknown)}; {self.path.name} takes {sorted(self._inputs)}")
        inputs = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in feeds.items()}
        result = self.request.infer(inputs)
        # infer() returns views of the request's output tensors: copy (the caller owns them).
        return {name: np.array(result[port], copy=True) for name, port in zip(self._output_names, self._outputs)}

    def infer_many(self, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.parallel_requests == 1 or len(feeds_list) < 2:
            return super().infer_many(feeds_list)
        for feeds in feeds_list:
            unknown = set(feeds) - set(self._inputs)
            if unknown:
                raise InputError(f"unknown input(s) {sorted(unknown)}; {self.path.name} takes {sorted(self._inputs)}")
        if self._queue is None:
            self._queue = _ov().AsyncInferQueue(self.compiled, self.parallel_requests)
        results: list[dict[str, np.ndarray] | None] = [None] * len(feeds_list)

        def done(request, index: int) -> None:
            # Copy out in the callback: the request's tensors are reused by its next job.
            results[index] = {name: np.array(request.get_tensor(port).data, copy=True)
                              for name, port in zip(self._output_names, self._outputs)}
        self._queue.set_callback(done)
        for i, feeds in enumerate(feeds_list):
            self._queue.start_async({n: np.ascontiguousarray(v, dtype=np.float32) for n, v in feeds.items()},
                                    userdata=i)
        self._queue.wait_all()
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise EngineError(f"OpenVINO returned no result for request(s) {missing} of {self.path.name}")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._queue = None
        self.request = None  # type: ignore[assignment]
        self.compiled = None  # type: ignore[assignment]
