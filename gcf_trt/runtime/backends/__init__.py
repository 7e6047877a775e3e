"""Inference backends behind one small interface (after Polygraphy's runners).

Each backend loads one graph file and exposes ``infer(feeds) -> outputs`` and ``close()``.
Backends are imported lazily by name so a missing optional runtime (OpenVINO, TensorRT) never
breaks ``import gcf_trt``; asking for one that is not installed raises
:class:`~gcf_trt.errors.BackendUnavailable` naming what to install.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable
from .base import Backend

# runtime name -> (module, class, pip extra that provides it)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("gcf_trt.runtime.backends.onnxrt", "OnnxRuntimeBackend", "onnxruntime"),
    "openvino": ("gcf_trt.runtime.backends.openvino", "OpenVinoBackend", "gcf-trt[openvino]"),
    "tensorrt": ("gcf_trt.runtime.backends.tensorrt", "TensorRTBackend", "gcf-trt[trt]"),
}

RUNTIMES = tuple(_REGISTRY)


def backend_class(runtime: str) -> type[Backend]:
    """The backend class for ``runtime``; raises BackendUnavailable if it cannot be imported."""
    if runtime not in _REGISTRY:
        raise BackendUnavailable(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}",
                                 hint="pick one of the known runtimes")
    module_name, class_name, extra = _REGISTRY[runtime]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # also a half-installed package failing to load its libraries
        raise BackendUnavailable(f"runtime {runtime!r} is not available: {exc}",
                                 hint=f"pip install '{extra}'") from exc
    return getattr(module, class_name)


def open_backend(runtime: str, path: str | Path, options: dict[str, Any] | None = None) -> Backend:
    """Load ``path`` with the named runtime."""
    cls = backend_class(runtime)
    cls.check_available()
    return cls(Path(path), **(options or {}))


def available_runtimes() -> dict[str, str | None]:
    """``{runtime: None if usable here else the reason it is not}``."""
    status: dict[str, str | None] = {}
    for name in RUNTIMES:
        try:
            backend_class(name).check_available()
            status[name] = None
        except BackendUnavailable as exc:
            status[name] = exc.message
    return status


__all__ = ["Backend", "RUNTIMES", "available_runtimes", "backend_class", "open_backend"]
