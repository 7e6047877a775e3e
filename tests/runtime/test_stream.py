"""Streaming parity: every prediction of StreamingClassifier equals offline PyTorch GCF-Net.

The reference is computed independently of the runtime: clips from
``preprocess.clips_from_frames`` (the offline assembler), descriptors from the PyTorch
backbone, and the PyTorch head on the last N descriptors, left-padded with mask 0 while the
ring fills (docs/DESIGN.md "Ring order").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from gcf_trt.errors import EngineError, FrameError, InputError
from gcf_trt.preprocess import clips_from_frames
from gcf_trt.runtime.backends import usable_runtimes
from gcf_trt.runtime.engines import load_engines
from gcf_trt.runtime.stream import ClipAssembler, Prediction, StreamingClassifier
from gcf_trt.spec import ModelSpec
from tests.conftest import TINY_SPEC, read_frames, varied_frames, write_video

ATOL = 1e-4
NUM_FRAMES = 72  # 18 clips of 4 frames with ring size 4: the ring wraps many times


def cpu_runtimes() -> list[str]:
    """The CPU runtimes usable here (at least ONNX Runtime, a base dependency).  An empty list
    would make the parametrised tests vanish: setup.cfg sets ``empty_parameter_set_mark =
    fail_at_collect``, so it is a collection error instead."""
    return usable_runtimes(exclude=("tensorrt",))


def runtime_options(runtime: str) -> dict | None:
    """Force FP32 where a runtime would otherwise pick a reduced precision on its own."""
    return {"inference_precision": "f32"} if runtime == "openvino" else None


def reference_predictions(model, frames: list[np.ndarray]):
    """Offline PyTorch: (logits [C], valid gates oldest first, clip ranges in the ring) per clip."""
    import torch
    spec = model.spec
    clips, ranges = clips_from_frames(frames, spec)
    n = spec.ring_size
    with torch.no_grad():
        desc = model.backbone(torch.from_numpy(clips))
        out = []
        for k in range(len(clips)):
            lo = max(0, k - n + 1)
            valid = k - lo + 1
            ring = torch.zeros(1, n, spec.dim)
            mask = torch.zeros(1, n)
            ring[0, n - valid:] = desc[lo:k + 1]
            mask[0, n - valid:] = 1
            logits, gates = model.head(ring, mask)
            out.append((logits[0].numpy(), gates[0, n - valid:].numpy(), ranges[lo:k + 1]))
    return out


def assert_matches(predictions: list[Prediction], reference, index_map=None) -> None:
    assert len(predictions) == len(reference) > 0
    for k, (pred, (logits, gates, ranges)) in enumerate(zip(predictions, reference)):
        if index_map is not None:
            ranges = [(index_map[a], index_map[b]) for a, b in ranges]
        assert pred.clip_index == k
        np.testing.assert_allclose(pred.logits, logits, atol=ATOL, rtol=0, err_msg=f"clip {k}")
        np.testing.assert_allclose(pred.gate_values, gates, atol=ATOL, rtol=0, err_msg=f"clip {k}")
        assert [g.frame_range for g in pred.gates] == [tuple(r) for r in ranges]
        assert [g.clip_index for g in pred.gates] == list(range(k - len(ranges) + 1, k + 1))
        assert pred.frame_range == (ranges[0][0], ranges[-1][1])
        assert pred.ring_fill == len(ranges)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "long.avi"
    # MJPG in AVI: every frame is a key frame, decoding is exact and cheap.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    assert writer.isOpened()
    for frame in varied_frames(NUM_FRAMES):
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def long_frames(long_video):
    return read_frames(long_video)


@pytest.fixture(scope="module")
def long_reference(calibrated_model, long_frames):
    return reference_predictions(calibrated_model, long_frames)


def test_parity_check_is_sensitive(calibrated_model, long_frames, long_reference):
    """Guard against a parity test that cannot fail: swapping two ring slots, or shifting the
    clip boundaries by one frame, must change the reference far beyond the tolerance."""
    import torch
    model = calibrated_model
    logits, _, _ = long_reference[-1]
    clips, _ = clips_from_frames(long_frames, model.spec)
    shifted, _ = clips_from_frames(long_frames[1:], model.spec)
    n = model.spec.ring_size
    with torch.no_grad():
        desc = model.backbone(torch.from_numpy(clips[-n:]))[None]
        swapped, _ = model.head(desc[:, [1, 0, *range(2, n)]], torch.ones(1, n))
        moved, _ = model.head(model.backbone(torch.from_numpy(shifted[-n:]))[None], torch.ones(1, n))
    assert np.abs(swapped[0].numpy() - logits).max() > 100 * ATOL
    assert np.abs(moved[0].numpy() - logits).max() > 100 * ATOL


@pytest.mark.parametrize("head", ["auto", "engine"])
@pytest.mark.parametrize("runtime", cpu_runtimes())
def test_streaming_equals_offline_pytorch(runtime, head, calibrated_engines, long_video, long_frames, long_reference):
    """Every prediction, from the first (ring filling) through many ring wraps, equals PyTorch,
    with the numpy head (``auto`` on a CPU runtime) and with the head engine (head.onnx)."""
    assert len(long_frames) == NUM_FRAMES
    assert len(long_reference) > 3 * TINY_SPEC["ring_size"]
    with StreamingClassifier(calibrated_engines, runtime=runtime, options=runtime_options(runtime),
                             head=head) as clf:
        assert clf.engines.head.runtime == ("numpy" if head == "auto" else runtime)
        predictions = list(clf.run(str(long_video)))
        state = clf.state
    assert_matches(predictions, long_reference)
    assert state.frames_seen == NUM_FRAMES and state.clips == len(long_reference)
    assert state.ring_fill == TINY_SPEC["ring_size"] and state.bad_frames == 0
    assert state.dropped_frames == 0  # files never drop by default


def test_reset_gives_a_fresh_stream(calibrated_engines, long_frames, long_reference):
    with StreamingClassifier(calibrated_engines) as clf:
        clf.run_frames(long_frames[:30])  # leave a partial clip and a full ring behind
        assert clf.state.clips > 0 and clf.ring.fill > 0
        clf.reset()
        assert clf.state.frames_seen == 0 and clf.state.clips == 0 and clf.state.ring_fill == 0
        assert len(clf.history) == 0
        again = clf.run_frames(long_frames)
    assert_matches(again, long_reference)


def test_bad_frames_are_skipped_and_counted(calibrated_engines, long_frames, long_reference):
    """A NaN frame, a float frame, a 2-channel frame mid-stream: skipped, counted, no effect."""
    h, w = long_frames[0].shape[:2]
    bad = {5: np.full((h, w, 3), np.nan, np.float32), 17: np.zeros((h, w, 3), np.float64),
           40: np.zeros((h, w, 2), np.uint8)}
    stream, index_map = [], []
    for i, frame in enumerate(long_frames):
        while len(stream) in bad:
            stream.append(bad[len(stream)])
        index_map.append(len(stream))
        stream.append(frame)
    with StreamingClassifier(calibrated_engines) as clf:
        predictions = clf.run_frames(stream)
        state = clf.state
    assert state.bad_frames == 3 and state.frames_seen == len(stream)
    assert "NaN" in state.last_bad_frame or "channel" in state.last_bad_frame or "shape" in state.last_bad_frame
    # Frame ranges are in pushed-frame indices, so they skip over the bad frames.
    assert_matches(predictions, long_reference, index_map=index_map)


def test_gray_bgra_and_size_changes_are_accepted(calibrated_engines, long_frames):
    """Grayscale and BGRA frames are converted; a resolution change mid-stream is fine."""
    frames = []
    for i, f in enumerate(long_frames[:24]):
        if i % 3 == 1:
            f = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
        elif i % 3 == 2:
            f = cv2.cvtColor(f, cv2.COLOR_BGR2BGRA)
        if i >= 12:
            f = cv2.resize(f, (96, 80))
        frames.append(f)
    with StreamingClassifier(calibrated_engines) as clf:
        predictions = clf.run_frames(frames)
        assert clf.state.bad_frames == 0
    assert len(predictions) == 24 // TINY_SPEC["stride"]
    with pytest.raises(FrameError, match="shape"):
        StreamingClassifier.check_frame(clf, np.zeros((8, 8, 2), np.uint8))


def test_prediction_fields_and_json(calibrated_engines, long_frames):
    with StreamingClassifier(calibrated_engines, top_k=2) as clf:
        pred = clf.run_frames(long_frames[:8])[-1]
    assert pred.label in TINY_SPEC["labels"] and pred.label == pred.top_k[0][0]
    assert len(pred.top_k) == 2 and pred.top_k[0][1] >= pred.top_k[1][1]
    probs = np.exp(pred.logits - pred.logits.max())
    assert pred.score == pytest.approx(float(probs.max() / probs.sum()), rel=1e-5)
    assert set(pred.latency_ms) == {"preprocess", "backbone", "head", "total"}
    assert pred.latency_ms["total"] >= pred.latency_ms["backbone"] > 0
    data = json.loads(json.dumps(pred.to_dict()))
    assert data["clip_index"] == 1 and data["frame_range"] == [0, 7]
    assert [g["frame_range"] for g in data["gates"]] == [[0, 3], [4, 7]]
    assert any(g["selected"] for g in data["gates"])
    in_view = max(g["gate"] for g in data["gates"]) >= 0.5
    assert data["action"] == (pred.label if in_view else None) == pred.action


def test_gap_discards_the_partial_clip(calibrated_engines, long_frames):
    with StreamingClassifier(calibrated_engines) as clf:
        assert clf.run_frames(long_frames[:6]) != []   # clip 0 = frames 0-3, 4-5 pending
        clf.note_gap(frames_missed=10, seconds=0.5, reason="test")
        preds = clf.run_frames(long_frames[6:10])
        state = clf.state
    # 4 frames after the gap form one clip with indices shifted past the 10 missed frames.
    assert [p.gates[-1].frame_range for p in preds] == [(16, 19)]
    assert state.gap_frames == 10 and state.gap_seconds == 0.5 and state.gaps[0].at_frame == 6


@pytest.mark.parametrize("clip_len,stride,frame_step", [(4, 4, 1), (4, 2, 1), (3, 5, 2), (2, 7, 3), (5, 1, 2)])
def test_assembler_emits_exactly_the_offline_clips(clip_len, stride, frame_step):
    spec = ModelSpec(clip_len=clip_len, stride=stride, frame_step=frame_step, size=16, resize_short=20,
                     dim=8, ring_size=3)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (24, 30, 3), dtype=np.uint8) for _ in range(41)]
    clips, ranges = clips_from_frames(frames, spec)
    assembler = ClipAssembler(spec)
    got_clips, got_ranges = [], []
    for i, frame in enumerate(frames):
        _, frame_range = assembler.push(frame, i)
        if frame_range is not None:
            got_clips.append(assembler.clip[0].copy())
            got_ranges.append(frame_range)
    assert got_ranges == ranges and len(ranges) > 0
    np.testing.assert_array_equal(np.stack(got_clips), clips)


def test_engines_errors(tmp_path, calibrated_engines):
    with pytest.raises(EngineError, match="no manifest.json"):
        StreamingClassifier(tmp_path)
    with pytest.raises(EngineError, match="not 0123456789abcdef"):
        StreamingClassifier(calibrated_engines, expect_model_hash="0123456789abcdef")
    engines = load_engines(calibrated_engines)
    try:
        with pytest.raises(InputError, match="runtime/options"):
            StreamingClassifier(engines, runtime="onnxruntime")
        with StreamingClassifier(engines):  # borrowed engines stay open after close()
            pass
        assert engines.backbone.session is not None
    finally:
        engines.close()


def test_runtime_path_never_imports_torch(calibrated_engines, tmp_path):
    """Stream a video in a fresh interpreter; torch must not be loaded afterwards."""
    video = write_video(tmp_path / "v.mp4", num_frames=12)
    code = textwrap.dedent(f"""
        import sys
        from gcf_trt.runtime import StreamingClassifier, open_source
        with StreamingClassifier({str(calibrated_engines)!r}) as clf:
            preds = list(clf.run({str(video)!r}))
        assert len(preds) == 3, len(preds)
        import gcf_trt.commands.run, gcf_trt.runtime.draw
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_int8_engines_stream_close_to_fp32(calibrated_checkpoint, calibrated_engines, long_frames, tmp_path):
    """INT8 (Q/DQ backbone) engines stream through the same code.  The tiny model is untrained,
    so exact top-1 equality would be luck; instead its newest-clip descriptors must stay close
    to FP32 (cosine) and the logits must move with FP32's from step to step (correlation after
    removing each class's mean, so the constant bias cannot inflate it)."""
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import CalibrationOptions, GateOptions
    calib = tmp_path / "calib"
    calib.mkdir()
    for seed in (21, 22):
        writer = cv2.VideoWriter(str(calib / f"c{seed}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
        for frame in varied_frames(40, seed=seed):
            writer.write(frame)
        writer.release()
    build_engines(calibrated_checkpoint, tmp_path / "int8", target="cpu", precision="int8", runtime="onnxruntime",
                  calib=calib, calibration=CalibrationOptions(clips=16, gate_predictions=4),
                  gate=GateOptions(min_agreement=0.0))

    def stream(engines_dir):
        with StreamingClassifier(engines_dir) as clf:
            newest = []
            clf.listeners.append(lambda p: newest.append(clf.ring.valid_descriptors()[-1]))
            predictions = clf.run_frames(long_frames)
            return clf.engines.backbone.precision, predictions, np.stack(newest)

    fp32_precision, fp32, fp32_desc = stream(calibrated_engines)
    int8_precision, int8, int8_desc = stream(tmp_path / "int8")
    assert (fp32_precision, int8_precision) == ("fp32", "int8")
    assert [p.frame_range for p in int8] == [p.frame_range for p in fp32] and len(int8) == len(long_frames) // 4
    cosine = (fp32_desc * int8_desc).sum(1) / np.linalg.norm(fp32_desc, axis=1) / np.linalg.norm(int8_desc, axis=1)
    assert cosine.mean() > 0.95 and cosine.min() > 0.85, cosine
    a = np.stack([p.logits for p in fp32])
    b = np.stack([p.logits for p in int8])
    assert np.abs(a - b).max() > 1e-5  # really a different (quantized) engine
    centred = np.corrcoef((a - a.mean(0)).ravel(), (b - b.mean(0)).ravel())[0, 1]
    assert centred > 0.8, centred
    assert np.mean([p.label == q.label for p, q in zip(fp32, int8)]) >= 0.5


def test_run_records_gaps_from_a_live_source(calibrated_engines):
    """run() on a loopback HTTP camera that drops once: the gap lands in state, the clip in
    progress is discarded, indices continue past the missed frames, then the bounded retries end."""
    from gcf_trt.errors import SourceError
    from gcf_trt.runtime.sources import Backoff
    from tests.live.helpers import MjpegServer
    predictions = []
    with MjpegServer(frames_per_session=14, sessions=2) as server, StreamingClassifier(calibrated_engines) as clf:
        with pytest.raises(SourceError, match="did not come back"):
            for p in clf.run(server.url(), reconnect=Backoff(initial=0.05, maximum=0.1, max_attempts=1)):
                predictions.append(p)
        state = clf.state
    assert len(state.gaps) == 1 and state.gaps[0].at_frame == 14 and state.gaps[0].seconds > 0
    # 14 frames per session: clips 0-2 use frames 0-11, frames 12-13 are discarded by the gap,
    # then 3 more clips start right after the missed frames.
    after = 14 + state.gaps[0].frames_missed
    assert [p.gates[-1].frame_range for p in predictions] == [
        (0, 3), (4, 7), (8, 11), (after, after + 3), (after + 4, after + 7), (after + 8, after + 11)]
    assert state.frames_seen == 28 and state.clips == 6


def test_frame_index_follows_the_source(calibrated_engines, long_frames):
    """Indices passed by a source that dropped frames show up in the clip ranges."""
    with StreamingClassifier(calibrated_engines) as clf:
        predictions = [p for i, f in enumerate(long_frames[:8]) if (p := clf.push(f, frame_index=10 * i))]
    assert [p.gates[-1].frame_range for p in predictions] == [(0, 30), (40, 70)]


def test_measure_stage_costs(calibrated_engines):
    from gcf_trt.runtime import measure_stage_costs
    with load_engines(calibrated_engines) as engines:
        costs = measure_stage_costs(engines, iterations=3, warmup=1)
    assert costs["backbone_ms"] > 0 and costs["head_ms"] > 0
    assert costs["head_share"] == pytest.approx(costs["head_ms"] / (costs["head_ms"] + costs["backbone_ms"]))


def test_run_with_frames_yields_every_frame_with_its_prediction(calibrated_engines, long_video, long_reference):
    """run(frames=True): one FrameResult per frame (for drawing/writing), the prediction on the
    frame that completed its clip, the same predictions as run()."""
    from gcf_trt.runtime.stream import FrameResult
    with StreamingClassifier(calibrated_engines) as clf:
        results = list(clf.run(str(long_video), frames=True))
    assert len(results) == NUM_FRAMES and all(isinstance(r, FrameResult) for r in results)
    assert [r.frame.index for r in results] == list(range(NUM_FRAMES))
    done = [r for r in results if r.prediction is not None]
    assert [r.frame.index for r in done] == [p.frame_range[1] for p in (r.prediction for r in done)]
    assert_matches([r.prediction for r in done], long_reference)
    assert results[0].frame.image.shape == (48, 64, 3)


def test_stream_core_steps_are_explicit(calibrated_engines, long_frames):
    """The core's public steps in order; misuse is an InputError with a hint, not silence."""
    from gcf_trt.runtime.core import StreamCore, run_head
    with load_engines(calibrated_engines) as engines:
        core = StreamCore(engines.spec)
        with pytest.raises(InputError, match="no completed clip") as err:
            core.take_clip()
        assert err.value.hint
        ready = [core.push(f) for f in long_frames[:4]]
        assert ready == [False, False, False, True] and core.clip_ready
        with pytest.raises(InputError, match="not taken"):
            core.push(long_frames[4])
        clip = core.take_clip()
        assert clip.frame_range == (0, 3) and clip.clip.shape == engines.spec.clip_shape and core.in_flight == 1
        with pytest.raises(InputError, match="without a committed clip"):
            core.finish(np.zeros(3), np.zeros(4), {})
        core.commit(engines.backbone.infer({"clip": clip.clip[None]})["descriptor"], clip)
        logits, gates, calls = run_head(engines.head, [core])
        p = core.finish(logits[0], gates[0], {"total": 1.0})
        assert calls == 1 and p.clip_index == 0 and p.ring_fill == 1 and core.state.clips == 1
        assert core.in_flight == 0 and list(core.history) == [p]


def test_a_model_with_a_no_action_class_decides_no_action_when_it_predicts_that_class(long_frames):
    """Prediction.action is None when the top class is the model's no-action class, even with a
    gate over ACTION_GATE; an action class with such a gate is the decision (docs/INT8.md)."""
    from gcf_trt.runtime.core import StreamCore
    from gcf_trt.spec import NO_ACTION_LABEL
    spec = ModelSpec(**{**TINY_SPEC, "labels": [*TINY_SPEC["labels"], NO_ACTION_LABEL], "dim": 32},
                     no_action_label=NO_ACTION_LABEL)
    core = StreamCore(spec)
    decided = []
    for top in (3, 1):
        assert [core.push(f) for f in long_frames[:4]][-1]
        core.commit(np.zeros((1, spec.dim), np.float32), core.take_clip())
        logits = np.zeros(4, np.float32)
        logits[top] = 3.0
        gates = np.array([0, 0, 0, 0.9], np.float32)
        p = core.finish(logits, gates, {"total": 1.0})
        assert p.action_in_view and p.no_action_label == NO_ACTION_LABEL
        decided.append((p.label, p.action, p.to_dict()["action"]))
    assert decided == [(NO_ACTION_LABEL, None, None), ("right", "right", "right")]
