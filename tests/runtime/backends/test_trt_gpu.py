"""TensorRT engines, built and run for real: needs TensorRT and a CUDA GPU (``gpu`` marker).

Where either is missing these are skipped with the reason (tests/conftest.py,
``gpu_skip_reason``).  They have never run on the machine they were written on (no GPU, no
TensorRT); they are complete and meant to run as they are on a GPU machine or a Jetson:

    python -m pytest -q tests/runtime/backends/test_trt_gpu.py

What they check: FP16 and INT8 plans of the tiny model build on this TensorRT; FP16 outputs
match ONNX Runtime FP32 within atol 1e-2; INT8 predictions agree with FP32 on >= 99% of ring
predictions over clips cut from generated videos; CUDA-graph replay equals plain execution;
batches outside the profile are refused; a video streams end to end on TensorRT with the same
predictions as the CPU engines; a plan is refused when the manifest says it was built for
another TensorRT.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

pytest.importorskip("torch")

from tests.conftest import read_frames, write_video

FP16_ATOL = 1e-2
INT8_MIN_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt_calib")
    for i in range(4):
        write_video(d / f"calib{i}.mp4", num_frames=48, seed=10 + i)
    return d


@pytest.fixture(scope="module")
def timing_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("trt_cache") / "timing.cache"


@pytest.fixture(scope="module")
def fp16_engines(tiny_checkpoint, tmp_path_factory, timing_cache):
    from gcf_trt.compile.options import TensorRTOptions
    from gcf_trt.compile.trt_build import build_trt_engines
    out = tmp_path_factory.mktemp("trt") / "fp16"
    return build_trt_engines(tiny_checkpoint, out, precision="fp16",
                             tensorrt=TensorRTOptions(max_batch=8, workspace_mb=256, timing_cache=timing_cache))


@pytest.fixture(scope="module")
def int8_engines(tiny_checkpoint, tmp_path_factory, calib_dir, timing_cache):
    from gcf_trt.compile.options import CalibrationOptions, GateOptions, TensorRTOptions
    from gcf_trt.compile.trt_build import build_trt_engines
    out = tmp_path_factory.mktemp("trt") / "int8"
    # verify=True runs the agreement gate on held-out clips (>= min_agreement or AgreementError)
    return build_trt_engines(tiny_checkpoint, out, precision="int8", calib=calib_dir,
                             calibration=CalibrationOptions(clips=32, gate_predictions=16),
                             gate=GateOptions(min_agreement=INT8_MIN_AGREEMENT),
                             tensorrt=TensorRTOptions(max_batch=8, workspace_mb=256, timing_cache=timing_cache))


def _backends(engines_dir, comp, **options):
    from gcf_trt.manifest import read_manifest
    from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    from gcf_trt.runtime.backends.tensorrt import TensorRTBackend
    m = read_manifest(engines_dir)
    c = m["components"][comp]
    trt = TensorRTBackend(engines_dir / c["file"], **{**c["options"], **options})
    ref = OnnxRuntimeBackend(engines_dir / f"{comp}.onnx")  # the FP32 export kept beside the plan
    return m, trt, ref


def test_fp16_build_records_identity_and_timing_cache(fp16_engines, timing_cache):
    import tensorrt as trt
    m = fp16_engines.manifest
    assert m["target"] == "trt" and m["versions"]["tensorrt"] == trt.__version__
    for comp in ("backbone", "head"):
        c = m["components"][comp]
        assert c["runtime"] == "tensorrt" and c["precision"] == "fp16"
        assert c["file"].startswith(f"{comp}.{m['model_hash']}.fp16.trt")
        assert (fp16_engines.out / c["file"]).stat().st_size > 0
    assert timing_cache.is_file() and timing_cache.stat().st_size > 0
    assert m["agreement"]["descriptor_max_abs_diff"] <= FP16_ATOL


def test_fp16_backbone_and_head_match_onnxruntime(fp16_engines, tiny_model):
    spec = tiny_model.spec
    rng = np.random.default_rng(3)
    _, trt_bb, ref_bb = _backends(fp16_engines.out, "backbone")
    _, trt_hd, ref_hd = _backends(fp16_engines.out, "head")
    try:
        assert trt_bb.precision == "fp16"
        for batch in (1, 3, 8):
            clip = rng.standard_normal((batch, *spec.clip_shape)).astype(np.float32)
            got = trt_bb.infer({"clip": clip})["descriptor"]
            ref = ref_bb.infer({"clip": clip})["descriptor"]
            assert got.shape == ref.shape == (batch, spec.dim) and got.dtype == np.float32
            np.testing.assert_allclose(got, ref, atol=FP16_ATOL, rtol=0)
        desc = rng.standard_normal((4, spec.ring_size, spec.dim)).astype(np.float32)
        mask = np.ones((4, spec.ring_size), np.float32)
        mask[1, :2] = 0
        mask[2, :-1] = 0
        got = trt_hd.infer({"descriptors": desc, "mask": mask})
        ref = ref_hd.infer({"descriptors": desc, "mask": mask})
        for name in ("logits", "gates"):
            np.testing.assert_allclose(got[name], ref[name], atol=FP16_ATOL, rtol=0)
    finally:
        for b in (trt_bb, ref_bb, trt_hd, ref_hd):
            b.close()


def test_int8_predictions_agree_with_fp32(int8_engines, tiny_model, tmp_path):
    from gcf_trt.compile.agreement import agreement
    from gcf_trt.compile.calibration import calibration_clips
    m = int8_engines.manifest
    assert m["components"]["backbone"]["precision"] == "int8"
    assert m["components"]["backbone"]["source_onnx"] == "backbone_int8_trt.onnx"  # float biases
    assert m["agreement"]["top1_agreement"] >= INT8_MIN_AGREEMENT  # the build's own gate
    # fresh clips the calibration never saw
    for i in range(3):
        write_video(tmp_path / f"eval{i}.mp4", num_frames=64, seed=100 + i)
    clips = calibration_clips(tmp_path, tiny_model.spec, max_clips=48, seed=1)
    _, trt_bb, ref_bb = _backends(int8_engines.out, "backbone")
    _, _, ref_hd = _backends(int8_engines.out, "head")
    try:
        result = agreement(ref_bb, trt_bb, clips, ref_hd, ring_size=tiny_model.spec.ring_size, batch=4)
    finally:
        for b in (trt_bb, ref_bb, ref_hd):
            b.close()
    assert result["top1_agreement"] >= INT8_MIN_AGREEMENT, result


def test_cuda_graph_replay_equals_plain_execution(fp16_engines, tiny_model):
    spec = tiny_model.spec
    rng = np.random.default_rng(5)
    _, plain, ref = _backends(fp16_engines.out, "backbone")
    _, graphed, _ = _backends(fp16_engines.out, "backbone", cuda_graph=True)
    try:
        for batch in (1, 2, 1, 2, 4):  # capture per shape, then replay
            clip = rng.standard_normal((batch, *spec.clip_shape)).astype(np.float32)
            a = plain.infer({"clip": clip})["descriptor"]
            b = graphed.infer({"clip": clip})["descriptor"]
            np.testing.assert_array_equal(a, b)
        assert len(graphed._graphs) == 3
    finally:
        for x in (plain, graphed, ref):
            x.close()


def test_batch_outside_profile_is_refused(fp16_engines, tiny_model):
    from gcf_trt.errors import InputError
    _, trt_bb, ref = _backends(fp16_engines.out, "backbone")
    try:
        with pytest.raises(InputError, match="outside the engine's profile"):
            trt_bb.infer({"clip": np.zeros((9, *tiny_model.spec.clip_shape), np.float32)})
        out = trt_bb.infer({"clip": np.zeros((1, *tiny_model.spec.clip_shape), np.float32)})
        assert out["descriptor"].shape == (1, tiny_model.spec.dim)
    finally:
        trt_bb.close()
        ref.close()


def test_plan_from_another_tensorrt_is_refused(fp16_engines, tmp_path):
    import shutil

    from gcf_trt.errors import EngineError
    from gcf_trt.runtime.engines import load_engines
    copy = tmp_path / "engines"
    shutil.copytree(fp16_engines.out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["components"]["backbone"]["options"]["built_for"]["tensorrt"] = "7.0.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="rebuild|TensorRT 7.0.0") as err:
        load_engines(copy)
    assert "rebuild" in err.value.hint


def test_video_streams_end_to_end_on_tensorrt(fp16_engines, tiny_engines, tmp_path):
    from gcf_trt.runtime.stream import StreamingClassifier
    video = write_video(tmp_path / "walk.mp4", num_frames=40, seed=7)
    frames = read_frames(video)
    assert len(frames) == 40

    def run(engines_dir):
        preds = []
        with StreamingClassifier(engines_dir) as clf:
            for frame in frames:
                p = clf.push(frame)
                if p is not None:
                    preds.append(p)
        return preds

    on_trt, on_cpu = run(fp16_engines.out), run(tiny_engines)
    assert len(on_trt) == len(on_cpu) >= 5
    for a, b in zip(on_trt, on_cpu):
        assert a.clip_index == b.clip_index and a.frame_range == b.frame_range
        np.testing.assert_allclose(a.logits, b.logits, atol=5e-2, rtol=0)
    agree = np.mean([a.label == b.label for a, b in zip(on_trt, on_cpu)])
    assert agree >= 0.8, agree


@pytest.mark.parametrize("lo,hi", [(1, 1), (2, 4)])
def test_build_verifies_inside_a_fixed_or_batch2_profile(tiny_checkpoint, tmp_path, timing_cache, lo, hi):
    """DLA-style fixed profiles (min = opt = max = 1) and --min-batch 2 build and verify."""
    from gcf_trt.compile.options import TensorRTOptions
    from gcf_trt.compile.trt_build import build_trt_engines
    res = build_trt_engines(tiny_checkpoint, tmp_path / "e", precision="fp16",
                            tensorrt=TensorRTOptions(min_batch=lo, opt_batch=lo, max_batch=hi, workspace_mb=256,
                                                     timing_cache=timing_cache))
    assert res.manifest["agreement"]["batch"] == min(max(2, lo), hi)
    assert res.manifest["agreement"]["descriptor_max_abs_diff"] <= FP16_ATOL


def test_plans_from_a_cpu_engines_directory(tiny_engines, tmp_path, timing_cache):
    """--from: the Jetson workflow, for real."""
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import TensorRTOptions
    res = build_engines(None, tmp_path / "e", target="trt", from_dir=tiny_engines, precision="fp16",
                        tensorrt=TensorRTOptions(max_batch=4, workspace_mb=256, timing_cache=timing_cache))
    assert res.manifest["built_from"]["from"] == str(tiny_engines)
    assert res.manifest["agreement"]["logits_max_abs_diff"] <= FP16_ATOL
