"""TensorRT *configuration* tests: what gcf-trt asks of TensorRT 8.6 / 10 / 11, without a GPU.

These run against tests/trt_standin.py, a recording stand-in of the ``tensorrt`` module that
mirrors the real names per generation (FP16/INT8 flags absent in 11, no IProgressMonitor in
8.6, ...).  They check the version branches, profile, workspace, timing cache, DLA, progress
monitor, plan naming, manifest and the refusal of foreign plans.  They build no engine: that is
tests/runtime/backends/test_trt_gpu.py, which needs TensorRT and a GPU.
"""
from __future__ import annotations

import json
import shutil
import sys

import onnx
import pytest

pytest.importorskip("torch")

from gcf_trt.compile import trt_build  # noqa: E402
from gcf_trt.compile.options import CalibrationOptions, TensorRTOptions  # noqa: E402
from gcf_trt.compile.trt_build import GraphPlan, build_plan, graph_plan  # noqa: E402
from gcf_trt.errors import BackendUnavailable, EngineError, InputError  # noqa: E402
from gcf_trt.manifest import read_manifest, sha256_file, verify_files  # noqa: E402
from gcf_trt.runtime.backends import tensorrt as trt_backend  # noqa: E402

from tests import trt_standin
from tests.conftest import write_video

TRT8, TRT10, TRT11 = "8.6.2.3", "10.8.0.43", "11.1.0.12"


@pytest.fixture(scope="module")
def onnx_files(tiny_model, tmp_path_factory):
    """The tiny model's FP32 ONNX (exported once; export itself is tested in test_export.py)."""
    from gcf_trt.compile.artifacts import export_fp32
    d = tmp_path_factory.mktemp("trt_onnx")
    parity = export_fp32(tiny_model, d)
    from gcf_trt.compile.fp16 import convert_to_fp16
    convert_to_fp16(d / "backbone.onnx", d / "backbone.fp16.onnx", use_modelopt=False)
    return d, parity


@pytest.fixture
def fast_export(monkeypatch, onnx_files):
    """build_trt_engines' export step copies the module's ONNX instead of re-exporting."""
    src, parity = onnx_files
    calls = []

    def export(model, out_dir):
        calls.append(out_dir)
        for name in ("backbone.onnx", "head.onnx"):
            shutil.copy(src / name, out_dir / name)
        return dict(parity)
    monkeypatch.setattr("gcf_trt.compile.artifacts.export_fp32", export)
    return calls


def _opts(**kw) -> TensorRTOptions:
    return TensorRTOptions(**kw).validate()


def _calls(mod, obj=None, method=None):
    return [c for c in mod.calls if (obj is None or c[0] == obj) and (method is None or c[1] == method)]


# ----------------------------------------------------------------------------- branch table
@pytest.mark.parametrize("major", [8, 10])
def test_weakly_typed_generations_use_builder_flags(major):
    assert graph_plan(major, "fp16", "backbone") == GraphPlan("fp32", ("FP16",), False, major < 10)
    assert graph_plan(major, "int8", "backbone") == GraphPlan("qdq", ("INT8", "FP16"), False, major < 10)
    assert graph_plan(major, "int8", "head") == GraphPlan("fp32", ("FP16",), False, major < 10)


def test_tensorrt11_is_strongly_typed_without_precision_flags():
    assert graph_plan(11, "fp16", "backbone") == GraphPlan("fp16", (), True, False)
    assert graph_plan(11, "int8", "backbone") == GraphPlan("qdq", (), True, False)
    assert graph_plan(11, "int8", "head") == GraphPlan("fp16", (), True, False)
    with pytest.raises(InputError):
        graph_plan(11, "fp32", "backbone")


# ----------------------------------------------------------------------------- one plan
def test_trt10_fp16_sets_fp16_flag_profile_workspace(monkeypatch, onnx_files, tmp_path):
    mod = trt_standin.install(monkeypatch, TRT10)
    d, _ = onnx_files
    messages = []
    rec = build_plan(d / "backbone.onnx", tmp_path / "bb.plan", graph_plan(10, "fp16", "backbone"),
                     _opts(min_batch=1, opt_batch=2, max_batch=6, workspace_mb=512),
                     timing_cache=tmp_path / "tc.cache", progress=messages.append)
    plan = trt_standin.read_plan(tmp_path / "bb.plan")
    assert plan["builder_flags"] == ["FP16"]
    assert plan["network_flags"] == [] and not plan["strongly_typed"]  # no EXPLICIT_BATCH on 10
    assert plan["onnx"]["path"].endswith("backbone.onnx") and not plan["onnx"]["qdq"]
    assert plan["profiles"] == [{"clip": [[1, 3, 4, 32, 32], [2, 3, 4, 32, 32], [6, 3, 4, 32, 32]]}]
    assert plan["pools"] == {"WORKSPACE": 512 << 20}
    assert plan["attrs"]["profiling_verbosity"] == "DETAILED"
    assert plan["attrs"]["progress_monitor"] == "_Monitor"
    assert rec["progress_monitor"] is True
    # the monitor forwarded the top-level phase only
    assert messages == ["TensorRT: Building engine (2 steps)"]
    assert _calls(mod, "IProgressMonitor", "__init__")


def test_trt86_uses_explicit_batch_and_has_no_progress_monitor(monkeypatch, onnx_files, tmp_path):
    mod = trt_standin.install(monkeypatch, TRT8)
    d, _ = onnx_files
    messages = []
    rec = build_plan(d / "head.onnx", tmp_path / "hd.plan", graph_plan(8, "fp16", "head"), _opts(max_batch=4),
                     progress=messages.append)
    plan = trt_standin.read_plan(tmp_path / "hd.plan")
    assert plan["network_flags"] == ["EXPLICIT_BATCH"]
    assert plan["builder_flags"] == ["FP16"]
    assert "progress_monitor" not in plan["attrs"] and rec["progress_monitor"] is False
    assert messages == [] and not hasattr(mod, "IProgressMonitor")
    assert plan["profiles"] == [{"descriptors": [[1, 4, 32], [1, 4, 32], [4, 4, 32]],
                                 "mask": [[1, 4], [1, 4], [4, 4]]}]


def test_trt11_fp16_strongly_typed_fp16_graph_no_precision_flags(monkeypatch, onnx_files, tmp_path):
    mod = trt_standin.install(monkeypatch, TRT11)
    d, _ = onnx_files
    build_plan(d / "backbone.fp16.onnx", tmp_path / "bb.plan", graph_plan(11, "fp16", "backbone"), _opts())
    plan = trt_standin.read_plan(tmp_path / "bb.plan")
    assert plan["strongly_typed"] and plan["network_flags"] == ["STRONGLY_TYPED"]
    assert plan["builder_flags"] == []
    assert not _calls(mod, "IBuilderConfig", "set_flag")
    assert plan["onnx"]["precision"] == "fp16" and "FLOAT16" in plan["onnx"]["initializer_types"]
    assert not hasattr(mod.BuilderFlag, "FP16") and not hasattr(mod.BuilderFlag, "INT8")


def test_flag_missing_in_this_tensorrt_is_an_engine_error(monkeypatch, onnx_files, tmp_path):
    trt_standin.install(monkeypatch, TRT11)
    d, _ = onnx_files
    with pytest.raises(EngineError, match="no BuilderFlag.FP16"):
        build_plan(d / "head.onnx", tmp_path / "x.plan", GraphPlan("fp32", ("FP16",), False, False), _opts())


def test_dla_core_with_gpu_fallback(monkeypatch, onnx_files, tmp_path):
    trt_standin.install(monkeypatch, TRT10, num_dla_cores=2)
    d, _ = onnx_files
    fixed = dict(min_batch=2, opt_batch=2, max_batch=2)
    build_plan(d / "backbone.onnx", tmp_path / "bb.plan", graph_plan(10, "fp16", "backbone"),
               _opts(dla_core=1, **fixed))
    plan = trt_standin.read_plan(tmp_path / "bb.plan")
    assert plan["attrs"]["default_device_type"] == "DLA" and plan["attrs"]["DLA_core"] == 1
    assert plan["builder_flags"] == ["FP16", "GPU_FALLBACK"]
    with pytest.raises(InputError, match="2 DLA core"):
        build_plan(d / "backbone.onnx", tmp_path / "bb2.plan", graph_plan(10, "fp16", "backbone"),
                   _opts(dla_core=2, **fixed))
    assert plan["profiles"] == [{"clip": [[2, 3, 4, 32, 32]] * 3}]
    with pytest.raises(InputError, match="--dla-core needs a fixed batch"):
        _opts(dla_core=0, min_batch=1, opt_batch=1, max_batch=8)


def test_timing_cache_is_loaded_saved_and_reused(monkeypatch, onnx_files, tmp_path):
    d, _ = onnx_files
    cache = tmp_path / "cache" / "timing.cache"
    trt_standin.install(monkeypatch, TRT10)
    first = build_plan(d / "backbone.onnx", tmp_path / "a.plan", graph_plan(10, "fp16", "backbone"), _opts(),
                       timing_cache=cache)
    assert first["timing_cache"]["loaded_bytes"] == 0 and cache.is_file()
    saved = cache.read_bytes()
    assert first["timing_cache"]["saved_bytes"] == len(saved)
    mod = trt_standin.install(monkeypatch, TRT10)  # a new process, same file
    second = build_plan(d / "head.onnx", tmp_path / "b.plan", graph_plan(10, "fp16", "head"), _opts(),
                        timing_cache=cache)
    assert second["timing_cache"]["loaded_bytes"] == len(saved)
    assert _calls(mod, "IBuilderConfig", "create_timing_cache")[0][2] == (len(saved),)
    entries = json.loads(cache.read_bytes()[len(trt_standin.CACHE_MAGIC):])["entries"]
    assert [e.rsplit("/", 1)[-1] for e in entries] == ["backbone.onnx", "head.onnx"]  # both builds kept


def test_timing_cache_from_another_tensorrt_is_replaced(monkeypatch, onnx_files, tmp_path):
    d, _ = onnx_files
    cache = tmp_path / "timing.cache"
    trt_standin.install(monkeypatch, "10.3.0.26")
    build_plan(d / "head.onnx", tmp_path / "a.plan", graph_plan(10, "fp16", "head"), _opts(), timing_cache=cache)
    mod = trt_standin.install(monkeypatch, TRT10)
    build_plan(d / "head.onnx", tmp_path / "b.plan", graph_plan(10, "fp16", "head"), _opts(), timing_cache=cache)
    sets = _calls(mod, "IBuilderConfig", "set_timing_cache")
    assert [s[2][0] for s in sets] == ["10.3.0.26", TRT10]  # refused, then a fresh cache
    rec = trt_standin.read_plan(tmp_path / "b.plan")  # the plan itself is fine
    assert rec["builder_flags"] == ["FP16"]
    assert json.loads(cache.read_bytes()[len(trt_standin.CACHE_MAGIC):])["version"] == TRT10


def test_corrupt_timing_cache_is_replaced_not_a_crash(monkeypatch, onnx_files, tmp_path):
    """create_timing_cache returns None for a blob it cannot read; set_timing_cache(None) would
    raise TypeError.  The build starts a fresh cache, says so, and overwrites the bad file."""
    d, _ = onnx_files
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"\x00garbage, not a timing cache")
    mod = trt_standin.install(monkeypatch, TRT10)
    messages = []
    rec = build_plan(d / "head.onnx", tmp_path / "a.plan", graph_plan(10, "fp16", "head"), _opts(),
                     timing_cache=cache, progress=messages.append)
    assert rec["timing_cache"]["replaced"].startswith("unreadable") and rec["timing_cache"]["loaded_bytes"] == 0
    assert any("starting a fresh one" in m for m in messages)
    assert [c[2] for c in _calls(mod, "IBuilderConfig", "create_timing_cache")] == [(len(b"\x00garbage, not a timing cache"),), (0,)]
    assert cache.read_bytes().startswith(trt_standin.CACHE_MAGIC)  # the fresh cache was saved


def test_parser_errors_are_reported(monkeypatch, tmp_path):
    trt_standin.install(monkeypatch, TRT10)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="ONNX parser rejected bad.onnx"):
        build_plan(bad, tmp_path / "x.plan", graph_plan(10, "fp16", "head"), _opts())


def test_option_validation():
    with pytest.raises(InputError, match="--min-batch <= --opt-batch <= --max-batch"):
        _opts(min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(InputError):
        _opts(workspace_mb=0)
    with pytest.raises(InputError):
        _opts(dla_core=-1)


@pytest.mark.parametrize("lo,hi", [(1, 1), (2, 8), (3, 3)])
def test_verification_batches_stay_inside_the_profile(monkeypatch, onnx_files, tiny_model, lo, hi):
    """A DLA build (min = opt = max = 1) or --min-batch >= 2 must verify, not abort: every batch
    the check feeds the plans (plain diff and held-out agreement) lies inside the profile."""
    import numpy as np
    from gcf_trt.compile.options import GateOptions
    from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    d, _ = onnx_files
    seen = []

    class ProfileBackend:  # ONNX Runtime underneath, TensorRT's profile rule on top
        def __init__(self, path, **options):
            self.ort = OnnxRuntimeBackend(d / ("backbone.onnx" if path.name.startswith("backbone") else "head.onnx"))

        def infer(self, feeds):
            batch = next(iter(feeds.values())).shape[0]
            seen.append(batch)
            if not lo <= batch <= hi:
                raise InputError(f"batch {batch} is outside the engine's profile [{lo}, {hi}]")
            return self.ort.infer(feeds)

        def close(self):
            self.ort.close()
    monkeypatch.setattr(trt_backend, "TensorRTBackend", ProfileBackend)
    comps = {"backbone": {"file": "backbone.x.plan", "options": {}}, "head": {"file": "head.x.plan", "options": {}}}
    holdout = np.random.default_rng(0).standard_normal((7, *tiny_model.spec.clip_shape)).astype(np.float32)
    res = trt_build._verify(d, comps, tiny_model.spec, holdout, GateOptions(min_agreement=0.99),
                            _opts(min_batch=lo, opt_batch=lo, max_batch=hi), lambda m: None)
    assert res["batch"] == min(max(2, lo), hi)
    assert res["top1_agreement"] == 1.0 and res["num_clips"] == 7 and res["descriptor_max_abs_diff"] < 1e-5
    assert seen and all(lo <= b <= hi for b in seen)


# ----------------------------------------------------------------------------- whole builds
def test_trt10_fp16_build_names_plans_and_fills_the_manifest(monkeypatch, tiny_checkpoint, fast_export, tmp_path):
    trt_standin.install(monkeypatch, TRT10, gpu="Orin", cc=(8, 7))
    out = tmp_path / "engines"
    res = trt_build.build_trt_engines(tiny_checkpoint, out, precision="fp16",
                                      tensorrt=_opts(max_batch=4, timing_cache=tmp_path / "tc", verify=False))
    m = read_manifest(out)
    h = m["model_hash"]
    assert m["target"] == "trt"
    bb, hd = m["components"]["backbone"], m["components"]["head"]
    assert bb["file"] == f"backbone.{h}.fp16.trt10.8.sm87.plan"
    assert hd["file"] == f"head.{h}.fp16.trt10.8.sm87.plan"
    assert bb["runtime"] == hd["runtime"] == "tensorrt"
    assert bb["options"]["built_for"] == {"model_hash": h, "precision": "fp16", "tensorrt": "10.8.0",
                                          "gpu": "Orin", "compute_capability": "8.7", "sm": "87"}
    assert m["tensorrt"]["version"] == TRT10 and m["versions"]["tensorrt"] == TRT10
    assert m["tensorrt"]["options"]["max_batch"] == 4
    verify_files(out, m)  # every file hashed, plans included
    assert sha256_file(out / bb["file"]) == m["files"][bb["file"]]
    assert trt_standin.read_plan(out / bb["file"])["builder_flags"] == ["FP16"]
    assert len(fast_export) == 1 and res.out == out
    assert not list(tmp_path.glob(".engines.tmp-*"))  # atomic dir swapped in


def test_trt11_int8_build_uses_qdq_backbone_and_fp16_head(monkeypatch, tiny_checkpoint, fast_export, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        write_video(calib / f"v{i}.mp4", num_frames=16, seed=i)
    trt_standin.install(monkeypatch, TRT11, gpu="NVIDIA H100 80GB HBM3", cc=(9, 0))
    out = tmp_path / "engines"
    trt_build.build_trt_engines(tiny_checkpoint, out, precision="int8", calib=calib,
                                calibration=CalibrationOptions(clips=8, gate_predictions=2),
                                tensorrt=_opts(timing_cache=tmp_path / "tc", verify=False))
    m = read_manifest(out)
    h = m["model_hash"]
    bb, hd = m["components"]["backbone"], m["components"]["head"]
    assert bb["file"] == f"backbone.{h}.int8.trt11.1.sm90.plan" and bb["precision"] == "int8"
    assert hd["file"] == f"head.{h}.fp16.trt11.1.sm90.plan" and hd["precision"] == "fp16"
    bplan, hplan = trt_standin.read_plan(out / bb["file"]), trt_standin.read_plan(out / hd["file"])
    assert bplan["onnx"]["qdq"] and bplan["strongly_typed"] and bplan["builder_flags"] == []
    assert bb["source_onnx"] == "backbone_int8_trt.onnx"
    assert hplan["onnx"]["precision"] == "fp16" and hplan["strongly_typed"] and hplan["builder_flags"] == []
    _assert_tensorrt_qdq(out / "backbone_int8_trt.onnx")
    assert m["sources"]["backbone_int8_tensorrt"] == "backbone_int8_trt.onnx"
    q = m["calibration"]["quantization_tensorrt"]
    assert q["tensorrt_qdq_problems"] == [] and q["num_calibration_clips"] == m["calibration"]["calibration_clips"]


def test_trt10_int8_sets_int8_and_fp16_flags_on_the_qdq_graph(monkeypatch, tiny_checkpoint, fast_export, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        write_video(calib / f"v{i}.mp4", num_frames=16, seed=i)
    trt_standin.install(monkeypatch, TRT10)
    out = tmp_path / "engines"
    trt_build.build_trt_engines(tiny_checkpoint, out, precision="int8", calib=calib,
                                calibration=CalibrationOptions(clips=8, gate_predictions=2),
                                tensorrt=_opts(timing_cache=tmp_path / "tc", verify=False))
    m = read_manifest(out)
    bplan = trt_standin.read_plan(out / m["components"]["backbone"]["file"])
    hplan = trt_standin.read_plan(out / m["components"]["head"]["file"])
    assert bplan["onnx"]["qdq"] and bplan["builder_flags"] == ["INT8", "FP16"] and not bplan["strongly_typed"]
    assert not hplan["onnx"]["qdq"] and hplan["builder_flags"] == ["FP16"]
    assert bplan["onnx"]["path"].endswith("backbone_int8_trt.onnx")
    _assert_tensorrt_qdq(out / "backbone_int8_trt.onnx")


def _assert_tensorrt_qdq(path):
    """The Q/DQ graph TensorRT gets: float biases (no INT32 DequantizeLinear), TensorRT's rules."""
    import onnx
    from gcf_trt.compile.precision import tensorrt_qdq_problems
    model = onnx.load(str(path))
    int32 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    dq_inputs = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq_inputs and not int32.intersection(dq_inputs)
    assert tensorrt_qdq_problems(model) == []


def test_standin_parser_rejects_int32_bias_dequantize(monkeypatch, tmp_path):
    """An INT32-bias DequantizeLinear (ONNX Runtime's default Q/DQ) is what TensorRT's parser
    refuses; the stand-in refuses it the same way, so the TensorRT path above is really checked."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "w_q"),
             numpy_helper.from_array(np.array(0.1, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_z"),
             numpy_helper.from_array(np.array([5, -5], np.int32), "b_q"),
             numpy_helper.from_array(np.array(0.01, np.float32), "b_s"),
             numpy_helper.from_array(np.array(0, np.int32), "b_z")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w_dq"),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"], name="bias_dq"),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "int32_bias.onnx"))
    trt_standin.install(monkeypatch, TRT10)
    with pytest.raises(EngineError, match="bias_dq: only activation types allowed"):
        build_plan(tmp_path / "int32_bias.onnx", tmp_path / "x.plan", graph_plan(10, "int8", "backbone"), _opts())
    from gcf_trt.compile.precision import tensorrt_qdq_problems
    assert any("bias_dq" in p for p in tensorrt_qdq_problems(model))  # the build's own check sees it too


# ----------------------------------------------------------------------------- no TensorRT
def test_without_tensorrt_build_fails_before_any_work(monkeypatch, tiny_checkpoint, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError

    def boom(*a, **k):
        raise AssertionError("work started before TensorRT was checked")
    monkeypatch.setattr("gcf_trt.compile.artifacts.export_fp32", boom)
    monkeypatch.setattr("gcf_trt.compile.model.load_checkpoint", boom)
    with pytest.raises(BackendUnavailable) as err:
        trt_build.build_trt_engines(tiny_checkpoint, tmp_path / "e", precision="fp16")
    assert "TensorRT" in err.value.message and "pip install" in err.value.hint
    assert not (tmp_path / "e").exists()


def test_half_installed_tensorrt_is_unavailable_not_a_crash(monkeypatch):
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorrt":
                raise ImportError("libnvinfer.so.10: cannot open shared object file")
            return None
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(BackendUnavailable, match="libnvinfer"):
        trt_backend.TensorRTBackend.check_available()
    from gcf_trt.runtime.backends import available_runtimes
    assert "libnvinfer" in available_runtimes()["tensorrt"]


def test_modules_import_without_tensorrt_and_backend_without_torch():
    import subprocess
    code = ("import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None\n"
            "import gcf_trt, gcf_trt.runtime.backends.tensorrt, gcf_trt.compile.trt_build\n"
            "from gcf_trt.runtime.backends import available_runtimes\n"
            "print(available_runtimes()['tensorrt'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "TensorRT is not installed" in res.stdout


# ----------------------------------------------------------------------------- loading plans
def _plan_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(trt_standin.PLAN_MAGIC + b"{}")
    return p


BUILT = {"model_hash": "0123456789abcdef", "precision": "fp16", "tensorrt": "10.8.0", "gpu": "Orin",
         "compute_capability": "8.7", "sm": "87"}


@pytest.mark.parametrize("version,gpu,cc,match", [
    ("10.3.0.26", "Orin", (8, 7), "built with TensorRT 10.8.0, this machine has TensorRT 10.3.0"),
    ("11.1.0.12", "Orin", (8, 7), "built with TensorRT 10.8.0"),
    ("10.8.0.43", "NVIDIA GeForce RTX 3090", (8, 6), "sm87, this GPU .* is sm86"),
    ("10.8.0.43", "NVIDIA A100", (8, 7), "built on a Orin, this GPU is a NVIDIA A100"),
])
def test_foreign_plan_is_refused_before_deserializing(monkeypatch, tmp_path, version, gpu, cc, match):
    mod = trt_standin.install(monkeypatch, version, gpu=gpu, cc=cc)
    path = _plan_file(tmp_path, "backbone.0123456789abcdef.fp16.trt10.8.sm87.plan")
    with pytest.raises(EngineError, match=match) as err:
        trt_backend.TensorRTBackend(path, built_for=BUILT)
    assert "rebuild" in err.value.hint
    assert mod.runtimes_created == 0 and not _calls(mod, "Runtime")


def test_plan_for_another_model_is_refused(monkeypatch, tmp_path):
    mod = trt_standin.install(monkeypatch, TRT10)
    path = _plan_file(tmp_path, "backbone.fedcba9876543210.fp16.trt10.8.sm87.plan")
    with pytest.raises(EngineError, match="built for model fedcba9876543210"):
        trt_backend.TensorRTBackend(path, built_for=BUILT)
    assert mod.runtimes_created == 0


def test_plan_identity_from_file_name_without_manifest(monkeypatch, tmp_path):
    trt_standin.install(monkeypatch, "10.3.0.26")
    with pytest.raises(EngineError, match="TensorRT 10.8"):
        trt_backend.TensorRTBackend(_plan_file(tmp_path, "head.0123456789abcdef.fp16.trt10.8.sm87.plan"))
    with pytest.raises(EngineError, match="cannot tell"):
        trt_backend.TensorRTBackend(_plan_file(tmp_path, "model.plan"))


def test_matching_plan_reaches_deserialization(monkeypatch, tmp_path):
    """The check lets a matching plan through (the stand-in then refuses to deserialize)."""
    mod = trt_standin.install(monkeypatch, TRT10)
    path = _plan_file(tmp_path, "backbone.0123456789abcdef.fp16.trt10.8.sm87.plan")
    with pytest.raises(AssertionError, match="cannot deserialize"):
        trt_backend.TensorRTBackend(path, built_for=BUILT)
    assert mod.runtimes_created == 1


def test_plan_name_round_trip():
    name = trt_backend.plan_name("backbone", "0123456789abcdef", "int8", "10.3.0", "87")
    assert name == "backbone.0123456789abcdef.int8.trt10.3.sm87.plan"
    assert trt_backend.parse_plan_name(name) == {"component": "backbone", "model": "0123456789abcdef",
                                                 "precision": "int8", "major": "10", "minor": "3", "sm": "87"}
