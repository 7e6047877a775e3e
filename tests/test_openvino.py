"""OpenVINO backend: parity with ONNX Runtime FP32, precision reported as really run, INT8 from Q/DQ."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from gcf_trt.errors import BackendUnavailable
from gcf_trt.runtime.backends import available_runtimes, open_backend

ov = pytest.importorskip("openvino")
from gcf_trt.runtime.backends.openvino import OpenVinoBackend, supports_bf16  # noqa: E402


def _inputs(spec, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    clip = rng.standard_normal((batch, *spec.clip_shape)).astype(np.float32)
    desc = rng.standard_normal((batch, spec.ring_size, spec.dim)).astype(np.float32)
    mask = np.ones((batch, spec.ring_size), np.float32)
    mask[0, :2] = 0
    return clip, desc, mask


def test_fp32_parity_with_onnxruntime(tiny_engines, tiny_model):
    clip, desc, mask = _inputs(tiny_model.spec)
    for name, feeds in (("backbone.onnx", {"clip": clip}), ("head.onnx", {"descriptors": desc, "mask": mask})):
        ref = open_backend("onnxruntime", tiny_engines / name).infer(feeds)
        with open_backend("openvino", tiny_engines / name, {"threads": 1}) as b:
            out = b.infer(feeds)
            assert b.precision == "fp32" and b.properties["inference_precision"] == "fp32"
            assert b.input_shapes[next(iter(feeds))][0] == -1  # dynamic batch kept
        assert set(out) == set(ref)
        for key in ref:
            np.testing.assert_allclose(out[key], ref[key], atol=1e-4, rtol=0)
    # batch 1 on the same compiled (dynamic) model
    with open_backend("openvino", tiny_engines / "backbone.onnx") as b:
        one = b.infer({"clip": clip[:1]})["descriptor"]
    np.testing.assert_allclose(one, open_backend("onnxruntime", tiny_engines / "backbone.onnx")
                               .infer({"clip": clip[:1]})["descriptor"], atol=1e-4, rtol=0)


def test_outputs_are_owned_by_caller(tiny_engines, tiny_model):
    clip, _, _ = _inputs(tiny_model.spec)
    b = open_backend("openvino", tiny_engines / "backbone.onnx")
    first = b.infer({"clip": clip})["descriptor"]
    keep = first.copy()
    b.infer({"clip": clip * 2})
    np.testing.assert_array_equal(first, keep)


@pytest.mark.skipif(not supports_bf16(), reason="this CPU has no BF16")
def test_fp32_is_forced_on_a_bf16_cpu_and_bf16_is_reported(tiny_engines, tiny_model):
    # The pitfall: a plain compile_model runs in BF16 on this CPU.
    plain = ov.Core().compile_model(str(tiny_engines / "backbone.onnx"), "CPU")
    assert plain.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    assert OpenVinoBackend(tiny_engines / "backbone.onnx").precision == "fp32"
    clip, _, _ = _inputs(tiny_model.spec)
    b = OpenVinoBackend(tiny_engines / "backbone.onnx", inference_precision="bf16")
    assert b.precision == "bf16"
    ref = open_backend("onnxruntime", tiny_engines / "backbone.onnx").infer({"clip": clip})["descriptor"]
    out = b.infer({"clip": clip})["descriptor"]
    assert not np.array_equal(out, ref)  # really reduced precision
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99


def test_int8_qdq_file_runs_and_reports_int8(tiny_engines, tiny_model, tmp_path):
    pytest.importorskip("torch")
    from gcf_trt.compile.precision import agreement, quantize_int8
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((6, *tiny_model.spec.clip_shape)).astype(np.float32)
    quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "int8.onnx", calib)
    b = open_backend("openvino", tmp_path / "int8.onnx")
    assert b.precision == "int8" and b.inference_precision == "fp32"
    ref = open_backend("onnxruntime", tiny_engines / "backbone.onnx")
    ort_int8 = open_backend("onnxruntime", tmp_path / "int8.onnx")
    head = open_backend("onnxruntime", tiny_engines / "head.onnx")
    res = agreement(ref, b, calib, head)
    assert res["cosine_mean"] > 0.9
    # OpenVINO and ORT run the same Q/DQ file: they should roughly agree with each other.
    both = agreement(ort_int8, b, calib, head)
    assert both["cosine_min"] > 0.95


def test_bad_options_and_files(tiny_engines, tmp_path):
    from gcf_trt.errors import EngineError, InputError
    with pytest.raises(InputError):
        OpenVinoBackend(tiny_engines / "backbone.onnx", inference_precision="int4")
    with pytest.raises(InputError):
        OpenVinoBackend(tiny_engines / "backbone.onnx", hint="fastest")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(EngineError):
        OpenVinoBackend(bad)
    with pytest.raises(EngineError):
        OpenVinoBackend(tmp_path / "missing.onnx")


def test_cache_dir_is_filled(tiny_engines, tmp_path):
    cache = tmp_path / "ovcache"
    OpenVinoBackend(tiny_engines / "head.onnx", cache_dir=str(cache))
    assert cache.is_dir() and any(cache.iterdir())
    again = OpenVinoBackend(tiny_engines / "head.onnx", cache_dir=str(cache))
    assert again.precision == "fp32"


def test_load_engines_on_openvino(tiny_engines, tiny_model):
    from gcf_trt.runtime.engines import load_engines
    clip, desc, mask = _inputs(tiny_model.spec)
    with load_engines(tiny_engines, runtime="openvino") as eng:
        assert eng.backbone.runtime == "openvino"
        out = eng.backbone.infer({"clip": clip})["descriptor"]
    with load_engines(tiny_engines) as eng:
        ref = eng.backbone.infer({"clip": clip})["descriptor"]
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_unavailable_when_openvino_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailable, match="OpenVINO") as exc:
        OpenVinoBackend.check_available()
    assert "openvino" in exc.value.hint
    assert available_runtimes()["openvino"] is not None
