"""The TensorRT backend's run path against the stand-in's toy engine (y = 2x + 1), no GPU.

What this checks is the backend's own logic: buffers, shapes, the profile check, CUDA graph
capture and replay (one execution context per captured shape, cudaGraphInstantiateWithFlags),
and the driver/cuda-python diagnosis.  Real kernels and real CUDA graphs run only in
tests/runtime/backends/test_trt_gpu.py and scripts/gpu_check.sh, on a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from gcf_trt.errors import BackendUnavailable, InputError
from gcf_trt.runtime.backends import tensorrt as trt_backend

from tests import trt_standin

BUILT = {"model_hash": "0123456789abcdef", "precision": "fp16", "tensorrt": "10.8.0", "gpu": "Orin",
         "compute_capability": "8.7", "sm": "87"}


@pytest.fixture
def toy(monkeypatch, tmp_path):
    mod = trt_standin.install(monkeypatch, "10.8.0.43")
    plan = trt_standin.exec_plan(tmp_path / "backbone.0123456789abcdef.fp16.trt10.8.sm87.plan", width=3,
                                 profile=(1, 4))
    return mod, plan


def _x(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3)).astype(np.float32)


def test_plain_execution_follows_each_input_shape(toy):
    mod, plan = toy
    with trt_backend.TensorRTBackend(plan, built_for=BUILT) as be:
        for batch, seed in ((2, 0), (3, 1), (1, 2), (2, 3)):
            x = _x(batch, seed)
            y = be.infer({"x": x})["y"]
            assert y.shape == (batch, 3)
            np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)


def test_cuda_graphs_get_one_context_per_shape_never_reshaped(toy):
    """Capture for batch 2, then 3, then replay 2: each graph runs on the context it was captured
    on, shaped once (the old code re-shaped one context and replayed the batch-2 graph on it)."""
    mod, plan = toy
    with trt_backend.TensorRTBackend(plan, built_for=BUILT, cuda_graph=True) as be:
        main_ctx = be._context
        for batch, seed in ((2, 0), (3, 1), (2, 2), (3, 3), (2, 4)):
            x = _x(batch, seed)
            y = be.infer({"x": x})["y"]
            assert y.shape == (batch, 3)
            np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)
        cudart = mod.cudart
        assert cudart.graphs_instantiated == 2 and cudart.graph_launches == 5
        graph_contexts = [c for c in mod.contexts if c is not main_ctx]
        assert len(graph_contexts) == 2
        assert all(c.reshapes == 0 for c in graph_contexts)  # each shaped exactly once
        assert sorted(c.shapes["x"][0] for c in graph_contexts) == [2, 3]
    assert mod.cudart.graphs_destroyed == 2  # close() released both


def test_cuda_graph_cache_is_bounded(toy, monkeypatch):
    mod, plan = toy
    monkeypatch.setattr(trt_backend, "MAX_GRAPHS", 2)
    with trt_backend.TensorRTBackend(plan, built_for=BUILT, cuda_graph=True) as be:
        for batch in (1, 2, 3, 1):
            x = _x(batch, batch)
            np.testing.assert_allclose(be.infer({"x": x})["y"], 2 * x + 1, rtol=1e-6)
        assert len(be._graphs) == 2
        assert mod.cudart.graphs_destroyed == 2  # batch 1 evicted by 3, then 2 by batch 1 again


def test_batch_outside_the_profile_is_refused(toy):
    _, plan = toy
    with trt_backend.TensorRTBackend(plan, built_for=BUILT) as be:
        with pytest.raises(InputError, match=r"outside the engine's profile \[1, 4\]"):
            be.infer({"x": _x(5, 0)})


def test_driver_too_old_for_cuda_python_says_so(monkeypatch):
    fake = trt_standin.FakeCudart(count_error=trt_backend.CUDA_ERROR_INSUFFICIENT_DRIVER, driver=12020)
    monkeypatch.setattr(trt_backend, "cuda_python_version", lambda: "13.0.1")
    with pytest.raises(BackendUnavailable) as err:
        trt_backend.device_identity(fake)
    assert "driver is too old for cuda-python 13.0.1" in err.value.message
    assert "supports CUDA 12.2" in err.value.message and "need CUDA 13" in err.value.message
    assert "trt-cu12" in err.value.hint and "cuda-python>=12,<13" in err.value.hint


def test_no_device_is_still_reported_as_no_device():
    with pytest.raises(BackendUnavailable, match="no CUDA device answers"):
        trt_backend.device_identity(trt_standin.FakeCudart(count=0))
