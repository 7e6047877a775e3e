"""Inference backends behind one small interface (after Polygraphy's runners).

Each backend loads one graph file and exposes ``infer(feeds) -> outputs`` and ``close()``.
Backends are imported lazily by name so a missing optional runtime (OpenVINO, TensorRT) never
breaks ``import gcf_trt``; asking for one that is not installed raises
:class:`~gcf_trt.errors.BackendUnavailable` naming what to install.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether a runtime can run here: ``available``, and when not, ``reason`` (what failed,
    with the pip extra that provides it)."""

    name: str
    available: bool
    reason: str | None = None


def runtime_status() -> dict[str, RuntimeStatus]:
    """``{runtime: RuntimeStatus}`` for every known runtime, probed on this machine."""
    status: dict[str, RuntimeStatus] = {}
    for name in RUNTIMES:
        try:
            backend_class(name).check_available()
            status[name] = RuntimeStatus(name, True)
        except BackendUnavailable as exc:
            status[name] = RuntimeStatus(name, False, exc.message)
    return status


def usable_runtimes(exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the runtimes that can run here, in :data:`RUNTIMES` order."""
    return [name for name, st in runtime_status().items() if st.available and name not in exclude]


def available_runtimes() -> dict[str, str | None]:
    """Legacy view of :func:`runtime_status`: ``{runtime: None if usable else the reason}``.

    Prefer :func:`runtime_status` (``.available`` says it in words); this remains while callers move.
    """
    return {name: None if st.available else st.reason for name, st in runtime_status().items()}


__all__ = ["Backend", "RUNTIMES", "RuntimeStatus", "available_runtimes", "backend_class", "open_backend",
           "runtime_status", "usable_runtimes"]
