"""ONNX Runtime backend: the portable CPU fallback and the numerical reference."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ...errors import EngineError, InputError
from .base import Backend


def session_options(threads: int | None = None, spinning: bool = False,
                    sequential: bool = True) -> ort.SessionOptions:
    """Session options tuned for a small CPU running video decode beside inference.

    ``session.intra_op.allow_spinning = 0``: ORT's intra-op threads otherwise spin on about a
    full core for ~50 ms after each call, which on 2 cores starves video decoding.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if sequential else ort.ExecutionMode.ORT_PARALLEL
    opts.intra_op_num_threads = int(threads) if threads else _usable_cores()
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = True
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def _usable_cores() -> int:
    """Cores this process may run on (the affinity mask in a container, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX (FP32 or Q/DQ INT8) graph with ONNX Runtime's CPU execution provider.

    Options: ``threads`` (intra-op threads; default all cores), ``spinning`` (default False),
    ``parallel`` (how many runs :meth:`infer_many` issues at once from a thread pool, default 1:
    ``session.run`` is thread-safe and releases the GIL, so e.g. 2 parallel runs of 1 thread
    each keep 2 cores busy on batch-1 clips).
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, spinning: bool = False, parallel: int = 1,
                 **options: Any):
        super().__init__(path, threads=threads, spinning=spinning, parallel=parallel, **options)
        if int(parallel) < 1:
            raise InputError(f"ONNX Runtime parallel must be >= 1, got {parallel}", hint="use 1 (sequential) or more")
        self.parallel_requests = int(parallel)
        self._pool: ThreadPoolExecutor | None = None
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads, spinning),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several undocumented types
            raise EngineError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from exc

        def shape(v) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else -1 for d in v.shape)
        self.input_shapes = {v.name: shape(v) for v in self.session.get_inputs()}
        self.output_shapes = {v.name: shape(v) for v in self.session.get_outputs()}
        self._output_names = list(self.output_shapes)
        self.precision = "int8" if _has_qdq(self.session) else "fp32"

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, outputs))

    def infer_many(self, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.parallel_requests == 1 or len(feeds_list) < 2:
            return super().infer_many(feeds_list)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel_requests, thread_name_prefix="gcf-ort")
        return list(self._pool.map(self.infer, feeds_list))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.session = None  # type: ignore[assignment]


def _has_qdq(session: ort.InferenceSession) -> bool:
    meta = session.get_modelmeta().custom_metadata_map
    return meta.get("gcf_trt.precision") == "int8"
