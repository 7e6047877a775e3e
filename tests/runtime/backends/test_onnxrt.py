"""runtime/backends/onnxrt.py: the ONNX Runtime backend (the reference CPU runtime)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from gcf_trt.errors import EngineError, InputError
from gcf_trt.runtime.backends import RUNTIMES, backend_class, open_backend, runtime_status, usable_runtimes
from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend, session_options


def test_shapes_precision_and_owned_outputs(tiny_engines):
    b = open_backend("onnxruntime", tiny_engines / "backbone.onnx", {"threads": 1})
    assert b.input_shapes["clip"][0] == -1 and b.precision == "fp32" and b.parallel_requests == 1
    clip = np.random.default_rng(0).standard_normal((2, *b.input_shapes["clip"][1:])).astype(np.float32)
    first = b.infer({"clip": clip})["descriptor"]
    keep = first.copy()
    b.infer({"clip": clip * 2})
    np.testing.assert_array_equal(first, keep)
    b.close()
    b.close()  # idempotent


def test_parallel_runs_equal_sequential_ones_and_overlap(tiny_engines):
    seq = open_backend("onnxruntime", tiny_engines / "backbone.onnx", {"threads": 1})
    par = open_backend("onnxruntime", tiny_engines / "backbone.onnx", {"threads": 1, "parallel": 3})
    shape = seq.input_shapes["clip"][1:]
    feeds = [{"clip": np.full((1, *shape), v, np.float32)} for v in (-1.0, 0.0, 0.5, 1.0, 2.0)]
    threads = set()
    real = OnnxRuntimeBackend.infer
    # The first two requests meet at a barrier: only a pool that really runs them at once gets
    # past it (sequential calls time out).  Without it a fast worker could take every request
    # before the pool starts a second thread, and the check below failed now and then.
    meet, calls, lock = threading.Barrier(2, timeout=10), [0], threading.Lock()

    def spy(self, f):
        threads.add(threading.get_ident())
        with lock:
            calls[0] += 1
            first_two = calls[0] <= 2
        if first_two:
            meet.wait()
        return real(self, f)
    par.infer = spy.__get__(par)
    got, ref = par.infer_many(feeds), seq.infer_many(feeds)
    assert len(threads) > 1  # really run from the pool, in request order
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g["descriptor"], r["descriptor"])
    par.close()
    with pytest.raises(InputError, match="parallel must be >= 1"):
        OnnxRuntimeBackend(tiny_engines / "backbone.onnx", parallel=0)


def test_session_options_do_not_spin():
    opts = session_options(threads=2)
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_broken_file_is_an_engine_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="ONNX Runtime cannot load"):
        OnnxRuntimeBackend(bad)


def test_runtime_status_is_typed():
    status = runtime_status()
    assert list(status) == list(RUNTIMES)
    assert status["onnxruntime"].available is True and status["onnxruntime"].reason is None
    for st in status.values():
        assert isinstance(st.available, bool) and (st.available or st.reason)
    assert "onnxruntime" in usable_runtimes() and "tensorrt" not in usable_runtimes(exclude=("tensorrt",))
    assert backend_class("onnxruntime") is OnnxRuntimeBackend
