"""OpenVINO backend: parity with ONNX Runtime FP32, precision reported as really run, INT8 from Q/DQ."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from gcf_trt.errors import BackendUnavailable
from gcf_trt.runtime.backends import available_runtimes, open_backend, runtime_status

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
    from gcf_trt.compile.agreement import agreement
    from gcf_trt.compile.precision import quantize_int8
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


def test_compiled_models_are_cached_by_default_keyed_by_file_hash(tiny_engines, tmp_path, monkeypatch):
    """First start compiles and stores, the next loads from the cache (OpenVINO's own
    LOADED_FROM_CACHE says so); the cache is per user (env override) and per file sha256, so a
    changed file never meets an old blob; "" turns it off."""
    import shutil
    from gcf_trt.runtime.backends.openvino import _file_sha256, default_cache_dir
    monkeypatch.setenv("GCF_TRT_CACHE_DIR", str(tmp_path / "user-cache"))
    assert default_cache_dir() == tmp_path / "user-cache" / "openvino"
    head = tmp_path / "head.onnx"
    shutil.copy(tiny_engines / "head.onnx", head)
    first = OpenVinoBackend(head)
    assert first.cache["hit"] is False and first.properties["loaded_from_cache"] is False
    key = _file_sha256(head)[:20]
    assert first.cache["dir"] == str(default_cache_dir() / key) and any((default_cache_dir() / key).iterdir())
    warm = OpenVinoBackend(head)
    assert warm.cache["hit"] is True
    _, n, d = warm.input_shapes["descriptors"]
    feeds = {"descriptors": np.linspace(-1, 1, n * d, dtype=np.float32).reshape(1, n, d),
             "mask": np.ones((1, n), np.float32)}
    np.testing.assert_array_equal(warm.infer(feeds)["logits"], first.infer(feeds)["logits"])
    shutil.copy(tiny_engines / "backbone.onnx", head)  # same path, other content: a miss
    assert OpenVinoBackend(head).cache["hit"] is False
    off = OpenVinoBackend(head, cache_dir="")
    assert off.cache == {"dir": None, "hit": None}
    explicit = OpenVinoBackend(head, cache_dir=str(tmp_path / "mine"), file_sha256="ab" * 32)
    assert explicit.cache["dir"] == str(tmp_path / "mine" / ("ab" * 10)) and explicit.cache["hit"] is False


def test_unwritable_cache_only_costs_the_compile(tiny_engines, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    b = OpenVinoBackend(tiny_engines / "head.onnx", cache_dir=str(blocker / "sub"))
    assert b.cache == {"dir": None, "hit": None} and b.precision == "fp32"


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
    status = runtime_status()["openvino"]
    assert status.available is False and "OpenVINO" in status.reason
    assert available_runtimes()["openvino"] == status.reason  # the legacy view says the same
