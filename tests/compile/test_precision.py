"""INT8 calibration data, Q/DQ quantization (stem kept FP32) and the agreement gate."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402

from tests.conftest import read_frames, write_video
from gcf_trt.compile import precision as P  # noqa: E402
from gcf_trt.compile import calibration as C  # noqa: E402
from gcf_trt.compile import agreement as A  # noqa: E402
from gcf_trt.errors import AgreementError, CalibrationError  # noqa: E402
from gcf_trt.preprocess import clips_from_frames  # noqa: E402
from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402


@pytest.fixture(scope="module")
def clips(calib_dir, tiny_model):
    return C.calibration_clips(calib_dir, tiny_model.spec)


def test_calibration_clips_follow_stream_preprocessing(calib_dir, tiny_model, clips):
    spec = tiny_model.spec
    report = {}
    again = C.calibration_clips(calib_dir, spec, report=report)
    # 24 frames, clip_len 4, stride 4 -> 6 clips per video, 3 videos.
    assert clips.shape == (18, *spec.clip_shape) and clips.dtype == np.float32
    np.testing.assert_array_equal(clips, again)
    expected, _ = clips_from_frames(read_frames(calib_dir / "v0.mp4"), spec)
    np.testing.assert_array_equal(clips[:6], expected)
    assert [v["file"] for v in report["videos"]] == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert report["num_clips"] == 18
    few = C.calibration_clips(calib_dir, spec, max_clips=5, seed=3)
    assert len(few) == 5


def test_calibration_errors(tmp_path, tiny_model):
    spec = tiny_model.spec
    with pytest.raises(CalibrationError, match="does not exist"):
        C.calibration_clips(tmp_path / "missing", spec)
    (tmp_path / "notes.txt").write_text("no video")
    with pytest.raises(CalibrationError, match="no video files"):
        C.calibration_clips(tmp_path, spec)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(CalibrationError, match="no readable video") as exc:
        C.calibration_clips(tmp_path, spec)
    assert exc.value.hint
    write_video(tmp_path / "short.mp4", num_frames=2)
    with pytest.raises(CalibrationError, match="shorter than one clip"):
        C.calibration_clips(tmp_path, spec)


def test_split_holdout(clips):
    cal, held = C.split_holdout(clips)
    assert len(cal) + len(held) == len(clips) and len(held) >= 1 and len(cal) >= 1
    with pytest.raises(CalibrationError):
        C.split_holdout(clips[:1])


def test_quantize_int8_qdq_and_stem_excluded(tiny_engines, clips, tmp_path):
    out = tmp_path / "int8.onnx"
    info = P.quantize_int8(tiny_engines / "backbone.onnx", out, clips)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    ops = P.qdq_op_counts(model)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert {p.key: p.value for p in model.metadata_props}[P.PRECISION_KEY] == "int8"
    stem = P.stem_conv_names(model)
    assert len(stem) == 1 and info["excluded_nodes"] == stem
    quantized = P.quantized_nodes(model)
    assert stem[0] not in quantized          # stem conv keeps its FP32 weight
    assert len(quantized) == info["quantized_nodes"] >= 10  # every other conv is INT8
    # CPU graph: weights int8 symmetric (zero point 0) per-channel; activations uint8 asymmetric.
    from onnx import numpy_helper
    zps = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_zero_point")]
    weight_zps = [z for z in zps if z.dtype == np.int8]
    act_zps = [z for z in zps if z.dtype == np.uint8]
    assert weight_zps and all((z == 0).all() for z in weight_zps)
    assert act_zps and any((z != 0).any() for z in act_zps)  # asymmetric: the ranges set the zero point
    assert any(numpy_helper.to_array(t).size > 1 for t in model.graph.initializer if t.name.endswith("_scale"))
    assert info["method"] == "minmax" and info["num_calibration_clips"] == len(clips)
    assert info["target"] == "cpu" and info["weight_bits"] in (7, 8)
    backend = OnnxRuntimeBackend(out)
    assert backend.precision == "int8"


def test_quantize_everything_when_asked(tiny_engines, clips, tmp_path):
    out = tmp_path / "all.onnx"
    info = P.quantize_int8(tiny_engines / "backbone.onnx", out, clips[:4], exclude_nodes=[])
    model = onnx.load(str(out))
    assert P.stem_conv_names(model)[0] in P.quantized_nodes(model)
    assert info["excluded_nodes"] == []


def test_quantize_refuses_entropy_and_bad_clips(tiny_engines, clips, tmp_path):
    from gcf_trt.errors import InputError
    with pytest.raises(InputError, match="calibration method"):
        P.quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "x.onnx", clips, method="entropy")
    with pytest.raises(CalibrationError):
        P.quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "x.onnx", clips[:0])
    assert not (tmp_path / "x.onnx").exists()


def test_rings_follow_stream_order():
    desc = np.arange(5, dtype=np.float32)[:, None] + 1  # clip k has descriptor k+1
    rings, mask = A.rings(desc, 3)
    np.testing.assert_array_equal(rings[0, :, 0], [0, 0, 1])
    np.testing.assert_array_equal(mask[0], [0, 0, 1])
    np.testing.assert_array_equal(rings[1, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(rings[4, :, 0], [3, 4, 5])
    np.testing.assert_array_equal(mask[4], [1, 1, 1])


def test_agreement_pass_and_fail(tiny_engines, clips):
    ref = OnnxRuntimeBackend(tiny_engines / "backbone.onnx")
    head = OnnxRuntimeBackend(tiny_engines / "head.onnx")
    same = A.agreement(ref, ref, clips, head)
    assert same["top1_agreement"] == 1.0 and same["cosine_min"] > 0.99999
    assert same["num_predictions"] == len(clips) and same["ring_size"] == 4
    A.check_agreement(same, 1.0, 0.9999)

    # A backbone that returns the wrong descriptors must fail the gate.
    rng = np.random.default_rng(0)

    def wrong(x):
        d = ref.infer({"clip": x})["descriptor"]
        return rng.standard_normal(d.shape).astype(np.float32) * 10
    bad = A.agreement(ref, wrong, clips, head)
    assert bad["cosine_mean"] < 0.5
    with pytest.raises(AgreementError):
        A.check_agreement(bad, 0.0, min_cosine=0.9)
    # The top-1 threshold is judged on the head's predictions: an impossible threshold fails.
    with pytest.raises(AgreementError, match="min-agreement"):
        A.check_agreement(same, 1.01)
    assert not A.passes(same, 1.01) and A.passes(same, 0.99)


def test_entropy_gives_minmax_ranges_in_quantize_static(tiny_engines, clips, tmp_path):
    """Why Entropy is not offered: in quantize_static it yields exactly the MinMax scales.

    If a new onnxruntime fixes this, this test fails and the choice should be re-measured.
    """
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(tiny_engines / "backbone.onnx"), str(pre))

    def scales(method):
        out = tmp_path / f"{method.name}.onnx"
        quantize_static(str(pre), str(out), C.ClipDataReader(clips[:8]), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, extra_options={"ActivationSymmetric": True,
                                                                "WeightSymmetric": True})
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
                if t.name.endswith("_scale")}
    minmax, entropy = scales(CalibrationMethod.MinMax), scales(CalibrationMethod.Entropy)
    assert minmax.keys() == entropy.keys() and len(minmax) > 10
    assert all(np.allclose(minmax[k], entropy[k]) for k in minmax)


def test_percentile_calibration(tiny_engines, clips, tmp_path):
    from onnx import numpy_helper
    info = P.quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "p.onnx", clips[:8], method="percentile",
                           percentile=99.0)
    P.quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "m.onnx", clips[:8])
    assert info["method"] == "percentile" and info["percentile"] == 99.0

    def act_scales(path):  # activation scales are scalars; weight scales are per-channel vectors
        return {t.name: float(numpy_helper.to_array(t)) for t in onnx.load(str(path)).graph.initializer
                if t.name.endswith("_scale") and numpy_helper.to_array(t).size == 1}
    p, m = act_scales(tmp_path / "p.onnx"), act_scales(tmp_path / "m.onnx")
    assert p.keys() == m.keys()
    # the 99th percentile clips the tails: never a wider range than MinMax, narrower for some tensors
    assert all(p[k] <= m[k] * (1 + 1e-5) for k in p) and any(p[k] < m[k] * 0.99 for k in p)


def test_the_cpu_graph_has_8bit_weights_with_or_without_vnni(tiny_engines, clips, tmp_path, monkeypatch):
    """Without VNNI (imitated with ONEDNN_MAX_CPU_ISA=AVX2) the CPU graph keeps 8-bit weights:
    with u8 activations they agreed on a real AVX2-only EPYC as on a VNNI CPU, and 7-bit ones
    lost up to 5.4 points (docs/INT8.md).  reduce_range still gives 7-bit weights on request."""
    from onnx import numpy_helper
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    from gcf_trt import cpuinfo
    if not cpuinfo.is_x86():
        pytest.skip("the int8 saturation issue is x86-only")

    def max_weight(path) -> int:
        model = onnx.load(str(path))
        weights = [numpy_helper.to_array(t) for t in model.graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.name.endswith("_quantized")]
        assert weights
        return max(int(np.abs(w).max()) for w in weights)
    info = P.quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "full.onnx", clips[:6])
    assert info["weight_bits"] == 8 and info["cpu_int8"]["vnni"] is False
    assert "gated on this CPU" in info["cpu_int8"]["int8_dot_product"]
    assert max_weight(tmp_path / "full.onnx") == 127  # per-channel symmetric: each channel's max hits the end
    reduced = P.quantize_int8(tiny_engines / "backbone.onnx", tmp_path / "rr.onnx", clips[:6], reduce_range=True)
    assert reduced["weight_bits"] == 7 and max_weight(tmp_path / "rr.onnx") <= 64


@pytest.fixture(scope="module")
def demo_backbone(tmp_path_factory):
    """The trained demo checkpoint's backbone: BN-folded convs *with biases*, unlike the tiny model."""
    pytest.importorskip("torch")
    from gcf_trt.commands.demo import bundled_checkpoint
    from gcf_trt.compile.export import export_backbone
    from gcf_trt.compile.model import load_checkpoint
    model = load_checkpoint(bundled_checkpoint())
    path = export_backbone(model, tmp_path_factory.mktemp("demo") / "backbone.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((6, *model.spec.clip_shape)).astype(np.float32)
    return path, calib


def test_tensorrt_graph_has_float_biases_and_follows_tensorrt_rules(demo_backbone, tmp_path):
    path, calib = demo_backbone
    cpu = P.quantize_int8(path, tmp_path / "cpu.onnx", calib)
    trt = P.quantize_int8(path, tmp_path / "trt.onnx", calib, for_tensorrt=True)
    assert cpu["biases"] == "int32" and trt["biases"].startswith("float") and trt["weight_bits"] == 8
    cpu_problems = P.tensorrt_qdq_problems(onnx.load(str(tmp_path / "cpu.onnx")))
    # The CPU graph is what TensorRT would reject: INT32 bias DQs and uint8 activations.
    assert any("INT32" in p for p in cpu_problems) and any("UINT8" in p for p in cpu_problems)
    trt_model = onnx.load(str(tmp_path / "trt.onnx"))
    assert P.tensorrt_qdq_problems(trt_model) == []
    convs_with_bias = [n for n in trt_model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert convs_with_bias, "the demo model has conv biases (the case TensorRT rejects as INT32)"
    inits = {t.name: t for t in trt_model.graph.initializer}
    assert all(inits[n.input[2]].data_type == onnx.TensorProto.FLOAT for n in convs_with_bias)
    with pytest.raises(Exception, match="CPU graph only"):
        P.quantize_int8(path, tmp_path / "x.onnx", calib, for_tensorrt=True, reduce_range=True)


def test_tensorrt_rules_catch_each_violation(demo_backbone, tmp_path):
    from onnx import numpy_helper
    path, calib = demo_backbone
    P.quantize_int8(path, tmp_path / "trt.onnx", calib, for_tensorrt=True)
    good = onnx.load(str(tmp_path / "trt.onnx"))

    def broken(edit):
        m = onnx.ModelProto()
        m.CopyFrom(good)
        edit(m)
        return P.tensorrt_qdq_problems(m)

    def negative_scale(m):
        t = next(t for t in m.graph.initializer if t.name.endswith("_scale") and not t.dims)
        t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))

    def nonzero_zero_point(m):
        t = next(t for t in m.graph.initializer if t.name.endswith("_zero_point") and not t.dims)
        t.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), t.name))

    def weight_axis_1(m):
        dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear"
                  and any(a.name == "axis" for a in n.attribute))
        next(a for a in dq.attribute if a.name == "axis").i = 1

    def opset_19(m):
        next(o for o in m.opset_import if o.domain in ("", "ai.onnx")).version = 19

    assert any("non-positive" in p for p in broken(negative_scale))
    assert any("non-zero zero point" in p for p in broken(nonzero_zero_point))
    assert any("axis 1" in p for p in broken(weight_axis_1))
    assert any("opset 19" in p for p in broken(opset_19))


def test_wilson_interval():
    lo, hi = A.wilson_interval(254, 256)
    assert 0.97 < lo < 0.992 < hi <= 1.0
    assert A.wilson_interval(16, 16)[0] < 0.81  # 16 of 16 cannot tell 99% from 81%
    assert A.wilson_interval(0, 0) == (0.0, 1.0)


def test_clustered_interval_counts_a_run_of_flips_in_one_video_as_one_video():
    """Consecutive rings of a stream share clips, so flips come in runs.  The same 8 flips in 256
    predictions: spread over 8 of 32 videos, the interval is the binomial one; all in one video,
    the gate knows less and the interval with the video as the unit says so."""
    spread = [np.r_[np.zeros(1, bool), np.ones(7, bool)] if i < 8 else np.ones(8, bool) for i in range(32)]
    one_video = [np.zeros(8, bool)] + [np.ones(8, bool) for _ in range(31)]
    binomial = A.wilson_interval(248, 256)
    lo_s, hi_s, n_s = A.clustered_interval(spread)
    lo_1, hi_1, n_1 = A.clustered_interval(one_video)
    assert n_s == pytest.approx(256) and (lo_s, hi_s) == pytest.approx(binomial)  # no clustering: deff 1
    assert n_1 < 40 and lo_1 < binomial[0] - 0.03          # one video's run: far fewer independent trials
    assert lo_1 < 248 / 256 < hi_1
    assert A.clustered_interval([np.ones(8, bool)] * 4)[:2] == pytest.approx(A.wilson_interval(32, 32))
    assert A.clustered_interval([np.zeros(3, bool)]) is None   # one video: no spread to measure
    result = {"top1_agreement_ci95": list(binomial), "top1_agreement_ci95_by_video": [lo_1, hi_1],
              "effective_predictions": n_1, "num_predictions": 256}
    assert f"by video {lo_1:.1%}-{hi_1:.1%}, as {n_1:.0f} independent predictions" in A.interval_text(result)
    result.update(top1_agreement_ci95_by_video=list(binomial), effective_predictions=256.0)
    assert "by video" not in A.interval_text(result)             # said only where it differs


def test_calibration_split_holds_out_whole_videos(calib_dir, tiny_model):
    spec = tiny_model.spec
    report = {}
    calib, held = C.calibration_split(calib_dir, spec, max_clips=8, gate_predictions=4, report=report)
    assert len(calib) <= 8 and sum(len(h) for h in held) >= 4
    held_files = {v["file"] for v in report["holdout_videos"]}
    calib_files = {v["file"] for v in report["videos"]}
    assert held_files and calib_files and not held_files & calib_files
    assert report["holdout_clips"] == sum(len(h) for h in held)
    with pytest.raises(CalibrationError, match="needs 100000 held-out predictions"):
        C.calibration_split(calib_dir, spec, gate_predictions=100000)


def test_agreement_on_video_sequences_reports_interval(tiny_engines, clips):
    ref = OnnxRuntimeBackend(tiny_engines / "backbone.onnx")
    head = OnnxRuntimeBackend(tiny_engines / "head.onnx")
    groups = [clips[:5], clips[5:]]
    res = A.agreement(ref, ref, groups, head)
    assert res["top1_agreement"] == 1.0 and res["num_sequences"] == 2
    assert res["num_predictions"] == len(clips) and res["num_disagreements"] == 0
    lo, hi = res["top1_agreement_ci95"]
    assert lo < 1.0 and hi == 1.0
    assert res["top1_agreement_ci95_by_video"] == [lo, hi] and res["disagreements_in_worst_video"] == 0


def test_agreement_counts_the_disagreements_at_fp32_near_ties():
    """The gate says where its disagreements are: at predictions FP32 itself nearly ties on
    (docs/INT8.md), or at confident ones.  The head here returns the newest descriptor as logits."""
    clips = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1, 1) * np.ones((4, 3, 1, 2, 2), np.float32)
    ref_logits = np.array([[2.0, 0.0], [0.1, 0.0], [0.1, 0.0], [3.0, 0.0]], np.float32)  # clips 1, 2: near-ties
    test_logits = np.array([[2.0, 0.0], [0.0, 0.1], [0.1, 0.0], [0.0, 3.0]], np.float32)  # flips 1 and 3
    ref = lambda x: ref_logits[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731
    test = lambda x: test_logits[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731
    res = A.agreement(ref, test, clips, lambda desc, mask: desc[:, -1], ring_size=4)
    assert res["num_disagreements"] == 2 and res["near_ties"] == 2 and res["disagreements_at_near_ties"] == 1
    with pytest.raises(AgreementError, match=r"1 of the 2 disagreements are near-ties of FP32 itself .*50\.0% of"):
        A.check_agreement(res, 0.99)
    same = A.agreement(ref, ref, clips, lambda desc, mask: desc[:, -1], ring_size=4)
    assert same["disagreements_at_near_ties"] == 0 and A.near_tie_text(same) == ""
    assert "without_relevant_clip" not in res  # a head without gates: not counted


def test_agreement_counts_the_disagreements_on_rings_without_a_relevant_clip():
    """Rings whose FP32 gates all stay under RELEVANT_GATE show no action; FP32 guesses there, so
    the gate counts those disagreements apart.  Here only the newest slot has a gate: 1 where its
    descriptor's first value is > 1, so the rings ending at clips 1 and 2 show nothing relevant."""
    clips = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1, 1) * np.ones((4, 3, 1, 2, 2), np.float32)
    ref_logits = np.array([[2.0, 0.0], [0.1, 0.0], [0.1, 0.0], [3.0, 0.0]], np.float32)
    test_logits = np.array([[2.0, 0.0], [0.0, 0.1], [0.1, 0.0], [0.0, 3.0]], np.float32)  # flips 1 and 3
    ref = lambda x: ref_logits[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731
    test = lambda x: test_logits[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731

    def head(desc, mask):
        gates = np.zeros(mask.shape, np.float32)
        gates[:, -1] = desc[:, -1, 0] > 1.0
        return desc[:, -1], gates

    res = A.agreement(ref, test, clips, head, ring_size=4)
    assert res["relevant_gate"] == A.RELEVANT_GATE == 0.5
    assert res["without_relevant_clip"] == 2 and res["disagreements_without_relevant_clip"] == 1
    with pytest.raises(AgreementError, match=r"near-ties of FP32 itself .*, 1 of the 2 on rings where no FP32 gate "
                                             r"reaches 0.5 \(no action in view, 50\.0% of the predictions\)"):
        A.check_agreement(res, 0.99)


def test_the_gate_reports_the_decisions_each_side_makes_with_its_own_gates():
    """A prediction decides the class, or "no action" when no clip's gate reaches ACTION_GATE
    (Prediction.action).  The gate reports how often those decisions agree, each from its own
    side's gates: a class that flips where neither side sees an action is no disagreement of
    decisions, a gate that falls under the threshold is one, even with the class unchanged.  It
    decides on the classes (docs/INT8.md, "The decision")."""
    clips = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1, 1) * np.ones((4, 3, 1, 2, 2), np.float32)
    # descriptor = [logit 0, logit 1, gate of the newest clip]
    ref_desc = np.array([[2.0, 0.0, 0.9], [0.1, 0.0, 0.1], [0.1, 0.0, 0.2], [3.0, 0.0, 0.8]], np.float32)
    flips_idle = ref_desc.copy()
    flips_idle[1, :2] = [0.0, 0.1]  # class flips on a ring with no action in view on either side
    ref = lambda x: ref_desc[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731
    test = lambda x: flips_idle[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731

    def head(desc, mask):
        gates = np.zeros(mask.shape, np.float32)
        gates[:, -1] = desc[:, -1, 2]
        return desc[:, -1, :2], gates

    res = A.agreement(ref, test, clips, head, ring_size=4)
    assert res["top1_agreement"] == 0.75 and res["decision_agreement"] == 1.0
    assert res["num_decision_disagreements"] == 0 and res["decision_agreement_ci95"][1] == 1.0
    assert not A.passes(res, 0.99)
    with pytest.raises(AgreementError, match=r"agrees with FP32 on 75\.0% of 4 .*decisions \(class or no action\) 100\.0%"):
        A.check_agreement(res, 0.99)

    gate_drops = ref_desc.copy()
    gate_drops[3, 2] = 0.4  # same class, but this side no longer sees the action
    test = lambda x: gate_drops[x[:, 0, 0, 0, 0].astype(int)]  # noqa: E731
    res = A.agreement(ref, test, clips, head, ring_size=4)
    assert res["top1_agreement"] == 1.0 and res["decision_agreement"] == 0.75
    assert A.passes(res, 0.99)
    A.check_agreement(res, 0.99)  # the classes agree: passes, the decisions are reported
    np.testing.assert_array_equal(A.decisions(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.5, 0.49])),
                                  [1, A.NO_ACTION])
    # a model with a no-action class (index 1 here) decides "no action" when it predicts that class
    np.testing.assert_array_equal(A.decisions(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.5, 0.5]),
                                              no_action_index=1), [A.NO_ACTION, 0])
