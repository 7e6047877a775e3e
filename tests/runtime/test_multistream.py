"""MultiStreamClassifier: K streams, batched backbone/head calls, same results as K single streams."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from gcf_trt.errors import InputError
from gcf_trt.runtime.engines import load_engines
from gcf_trt.runtime.multistream import MultiStreamClassifier, StreamPrediction
from gcf_trt.runtime.stream import StreamingClassifier
from tests.conftest import read_frames, write_video

ATOL = 1e-4
LENGTHS = {"cam-a": 24, "cam-b": 20, "cam-c": 30}  # 6, 5 and 7 clips of 4 frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("multistream")
    return {sid: write_video(root / f"{sid}.mp4", num_frames=n, seed=10 + i) for i, (sid, n) in enumerate(LENGTHS.items())}


@pytest.fixture(scope="module")
def frames(videos):
    return {sid: read_frames(path) for sid, path in videos.items()}


@pytest.fixture(scope="module")
def engines(tiny_engines):
    with load_engines(tiny_engines, options={"threads": 1}) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def single(engines, frames):
    """Three independent single-stream runs: the reference."""
    out = {}
    for sid, fr in frames.items():
        with StreamingClassifier(engines) as clf:
            out[sid] = clf.run_frames(fr)
    assert [len(v) for v in out.values()] == [6, 5, 7]
    return out


def assert_same(multi: list[StreamPrediction], single: dict) -> None:
    by_stream = {sid: [p for p in multi if p.stream_id == sid] for sid in single}
    assert sum(map(len, by_stream.values())) == len(multi)
    for sid, refs in single.items():
        got = by_stream[sid]
        assert len(got) == len(refs), sid
        for p, r in zip(got, refs):
            assert isinstance(p, StreamPrediction) and p.stream_id == sid
            assert (p.clip_index, p.frame_range, p.ring_fill, p.label) == (r.clip_index, r.frame_range, r.ring_fill, r.label)
            np.testing.assert_allclose(p.logits, r.logits, atol=ATOL, rtol=0)
            np.testing.assert_allclose(p.gate_values, r.gate_values, atol=ATOL, rtol=0)
            assert [(g.clip_index, g.frame_range, g.selected) for g in p.gates] == \
                   [(g.clip_index, g.frame_range, g.selected) for g in r.gates]


@pytest.mark.parametrize("batch_sizes", [None, [1, 4]])
def test_three_streams_equal_three_single_streams_with_fewer_backbone_calls(engines, frames, single, batch_sizes):
    with MultiStreamClassifier(engines, max_batch=3 if batch_sizes is None else 4, batch_sizes=batch_sizes,
                               flush_timeout_ms=1e6, dispatch="batch") as multi:
        predictions = multi.run_frames(frames)
        stats = multi.stats
        assert_same(predictions, single)
        clips = sum(len(v) for v in single.values())
        assert stats.clips == clips == 18
        # Interleaved streams complete clips together: batches of 3, not 18 calls of 1.
        if batch_sizes is None:
            assert stats.backbone_calls == 6 and stats.batch_histogram == {3: 6}
            assert stats.flushes["full"] == 6
        else:  # max_batch 4: full batches of 4, padding only for the last partial batch
            assert stats.backbone_calls == 5 and stats.batch_histogram == {4: 4, 2: 1}
            assert stats.padded_rows == 2  # 2 clips padded up to the 4-bucket
        assert stats.head_calls < clips
        assert all(p.batch_size > 1 for p in predictions)
        assert multi.state("cam-c").clips == 7 and multi.state("cam-b").frames_seen == 20


def test_flush_timeout_flushes_a_partial_batch(engines, frames, single):
    now = [100.0]
    multi = MultiStreamClassifier(engines, max_batch=4, flush_timeout_ms=20, clock=lambda: now[0])
    a, b = multi.add_stream(), multi.add_stream()
    assert (a, b) == (0, 1)
    fr = frames["cam-a"]
    got = []
    for f in fr[:4]:  # exactly one clip of stream a
        got += multi.push(a, f)
    assert got == [] and multi.pending == 1
    assert multi.next_deadline() == pytest.approx(0.020)
    now[0] += 0.019
    assert multi.poll() == [] and multi.pending == 1
    now[0] += 0.002
    (p,) = multi.poll()
    assert p.stream_id == a and p.batch_size == 1 and multi.pending == 0
    assert p.latency_ms["queue"] == pytest.approx(21.0, abs=0.01)
    assert multi.stats.flushes == {"full": 0, "timeout": 1, "forced": 0}
    np.testing.assert_allclose(p.logits, single["cam-a"][0].logits, atol=ATOL)
    assert multi.next_deadline() is None
    # a push that finds an expired batch flushes it too, whichever stream pushes
    for f in fr[4:8]:
        got += multi.push(a, f)
    now[0] += 0.05
    (q,) = multi.push(b, frames["cam-b"][0])
    assert q.stream_id == a and q.clip_index == 1
    multi.close()


def test_zero_timeout_means_no_batching(engines, frames, single):
    with MultiStreamClassifier(engines, max_batch=8, flush_timeout_ms=0) as multi:
        predictions = multi.run_frames(frames)
        assert multi.stats.backbone_calls == multi.stats.clips == 18
        assert multi.stats.batch_histogram == {1: 18}
    assert_same(predictions, single)


def test_fifo_no_stream_starves(engines, frames):
    """A busy stream cannot push a quiet one's clip back: dispatch order is completion order."""
    with MultiStreamClassifier(engines, max_batch=2, flush_timeout_ms=1e6) as multi:
        busy, quiet = multi.add_stream("busy"), multi.add_stream("quiet")
        completed, out = [], []
        busy_frames, quiet_frames = frames["cam-c"], frames["cam-a"][:4]
        for i, f in enumerate(busy_frames[:12]):
            out += multi.push(busy, f)
            if i % 4 == 3:
                completed.append(("busy", i // 4))
            if i == 5:  # the quiet stream's only clip completes between busy clips 0 and 1
                for g in quiet_frames:
                    out += multi.push(quiet, g)
                completed.append(("quiet", 0))
        out += multi.flush()
        order = [(p.stream_id, p.clip_index) for p in out]
        assert order == completed == [("busy", 0), ("quiet", 0), ("busy", 1), ("busy", 2)]
        assert out[1].batch_size == 2  # batched with busy clip 0, not left behind


def test_run_reads_several_sources_at_once(tiny_engines, videos, single):
    with MultiStreamClassifier(tiny_engines, options={"threads": 1}, max_batch=3, flush_timeout_ms=200) as multi:
        predictions = list(multi.run(dict(videos)))
        assert multi.streams == []  # run() removes the streams it added
        assert {sid: st.clips for sid, st in multi.last_run_states.items()} == {"cam-a": 6, "cam-b": 5, "cam-c": 7}
        assert multi.stats.clips == 18 and multi.stats.backbone_calls < 18
    assert_same(predictions, single)
    assert predictions[0].to_dict()["stream"] in LENGTHS


def test_stream_management_errors(engines, frames):
    with MultiStreamClassifier(engines, max_batch=4, flush_timeout_ms=1e6) as multi:
        with pytest.raises(InputError, match="unknown stream"):
            multi.push("nope", frames["cam-a"][0])
        multi.add_stream("x")
        with pytest.raises(InputError, match="already exists"):
            multi.add_stream("x")
        for f in frames["cam-a"][:4]:
            assert multi.push("x", f) == []
        (p,) = multi.remove_stream("x")  # its queued clip is run, not lost
        assert p.stream_id == "x" and multi.streams == []
    with pytest.raises(InputError):
        MultiStreamClassifier(engines, max_batch=0)


def test_multistream_never_imports_torch():
    code = "import sys, gcf_trt.runtime.multistream; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_backbone_profile_limits_max_batch(engines):
    """A TensorRT build's recorded optimization profile caps the batch (manifest layout of trt_build),
    and a MultiStreamClassifier asked for more is refused with the limit in the hint."""
    from gcf_trt.errors import EngineError
    from gcf_trt.manifest import Manifest
    data = engines.manifest.to_dict()
    data["tensorrt"] = {"builds": {"backbone": {"profile": {"clip": {"min": [1, 3, 4, 32, 32],
                                                                     "opt": [2, 3, 4, 32, 32],
                                                                     "max": [4, 3, 4, 32, 32]}}}}}
    trt_like = Manifest.from_dict(data)
    assert trt_like.max_batch() == 4
    assert engines.manifest.max_batch() is None  # ONNX Runtime engines: any batch
    capped = dataclasses.replace(engines, manifest=trt_like)
    with pytest.raises(EngineError, match="profile maximum 4") as err:
        MultiStreamClassifier(capped, max_batch=8, dispatch="batch")
    assert "max_batch <= 4" in err.value.hint
    with MultiStreamClassifier(capped, max_batch=4, dispatch="batch") as multi:
        assert multi.max_batch == 4


def test_gap_runs_queued_clips_then_drops_the_partial_clip(engines, frames):
    fr = frames["cam-c"]
    with StreamingClassifier(engines, reset_ring_on_gap=True) as clf:
        ref = clf.run_frames(fr[:6])
        clf.note_gap(5, 0.2, "test")
        ref += clf.run_frames(fr[6:])
    with MultiStreamClassifier(engines, max_batch=8, flush_timeout_ms=1e6, reset_ring_on_gap=True) as multi:
        sid = multi.add_stream()
        got = [p for f in fr[:6] for p in multi.push(sid, f)]
        assert got == [] and multi.pending == 1
        got += multi.note_gap(sid, 5, 0.2, "test")  # the clip before the gap is run first
        assert len(got) == 1 and multi.pending == 0
        got += [p for f in fr[6:] for p in multi.push(sid, f)] + multi.flush()
        assert multi.state(sid).gaps[0].frames_missed == 5
    assert len(got) == len(ref) == 7  # 1 clip before the gap, 6 after it (the partial one dropped)
    for p, r in zip(got, ref):
        assert (p.clip_index, p.frame_range, p.ring_fill) == (r.clip_index, r.frame_range, r.ring_fill)
        np.testing.assert_allclose(p.logits, r.logits, atol=ATOL)


def test_a_failing_backbone_call_loses_no_clip(engines, frames, single):
    with MultiStreamClassifier(engines, max_batch=2, flush_timeout_ms=1e6, dispatch="batch") as multi:
        sid = multi.add_stream("cam-a")
        real = engines.backbone.infer
        calls = []

        def flaky(feeds):
            calls.append(len(feeds["clip"]))
            if len(calls) == 1:
                raise RuntimeError("device lost")
            return real(feeds)
        engines.backbone.infer = flaky
        try:
            with pytest.raises(RuntimeError, match="device lost"):
                for f in frames["cam-a"][:8]:
                    multi.push(sid, f)
            assert multi.pending == 2  # both clips still queued
            got = multi.flush()
        finally:
            del engines.backbone.infer  # back to the class method
        assert calls == [2, 2] and [p.clip_index for p in got] == [0, 1]
        for p, r in zip(got, single["cam-a"]):
            np.testing.assert_allclose(p.logits, r.logits, atol=ATOL)


def test_cli_run_several_sources_tags_each_line(tiny_engines, videos, single, tmp_path, capsys):
    """`gcf-trt run A B C`: one MultiStreamClassifier, every line tagged with its stream."""
    import json
    from gcf_trt.cli import main
    sources = list(videos.values())
    out = tmp_path / "lines.jsonl"
    rc = main(["run", *map(str, sources), "--engines", str(tiny_engines), "--jsonl", str(out),
               "--max-batch", "3", "--flush-timeout-ms", "200", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for i, (sid, refs) in enumerate(single.items()):
        mine = [r for r in lines if r["stream"] == i]
        assert len(mine) == len(refs) and all(r["source"] == str(sources[i]) for r in mine)
        for r, ref in zip(mine, refs):
            assert r["clip_index"] == ref.clip_index and r["frame_range"] == list(ref.frame_range)
            np.testing.assert_allclose(r["logits"], ref.logits, atol=1e-4)
            assert "segments_completed" in r
    assert "3 streams, 18 clips in" in err
    rc = main(["run", *map(str, sources[:2]), "--engines", str(tiny_engines), "--output", str(tmp_path / "v.mp4")])
    assert rc == 1 and "single SOURCE" in capsys.readouterr().err


@pytest.mark.parametrize("parallel", [1, 2])
def test_concurrent_dispatch_equals_single_streams(tiny_engines, frames, single, parallel):
    """n batch-1 requests side by side (ONNX Runtime parallel runs) instead of one batch-n call:
    the same per-stream results, the same dispatch counters."""
    from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    calls = []
    with MultiStreamClassifier(tiny_engines, options={"threads": 1, "parallel": parallel}, max_batch=3,
                               flush_timeout_ms=1e6, dispatch="concurrent") as multi:
        assert multi.dispatch == "concurrent" and multi.engines.backbone.parallel_requests == parallel
        real = OnnxRuntimeBackend.infer
        multi.engines.backbone.infer = lambda feeds: calls.append(len(feeds["clip"])) or real(multi.engines.backbone, feeds)
        predictions = multi.run_frames(frames)
        assert multi.stats.backbone_calls == 6 and multi.stats.batch_histogram == {3: 6}
    assert set(calls) == {1} and len(calls) == 18  # never a batched call
    assert_same(predictions, single)


def test_auto_dispatch_measures_real_dispatches_and_keeps_the_faster(engines, frames, single):
    """auto runs blocks of batch / concurrent dispatches on real traffic, keeps the lower median
    cycle per clip, and the results are those of single streams throughout."""
    from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    sizes = []
    real = OnnxRuntimeBackend.infer
    engines.backbone.infer = lambda feeds: sizes.append(len(feeds["clip"])) or real(engines.backbone, feeds)
    try:
        with MultiStreamClassifier(engines, max_batch=3, flush_timeout_ms=1e6) as multi:
            assert multi.dispatch == "auto"
            multi.dispatch_choice.block, multi.dispatch_choice.rounds = 2, 1
            predictions = multi.run_frames(frames)
            choice = multi.dispatch_choice
            medians = choice.medians()
            assert choice.chosen == multi.dispatch == min(medians, key=medians.get)
            assert choice.to_dict()["samples"] == {"batch": 1, "concurrent": 1}
    finally:
        del engines.backbone.infer
    # 6 full dispatches of 3 clips: a block of 2 batch, a block of 2 concurrent (the first cycle of
    # each block is a warm-up, the second is measured), then the chosen mode
    assert sizes == [3, 3] + [1] * 6 + ([3, 3] if choice.chosen == "batch" else [1] * 6)
    assert_same(predictions, single)
    with MultiStreamClassifier(engines, max_batch=3, flush_timeout_ms=0) as multi:
        assert multi.dispatch == "batch" and multi.dispatch_choice is None  # one clip per dispatch
    with pytest.raises(InputError, match="dispatch must be one of"):
        MultiStreamClassifier(engines, dispatch="sometimes")


def test_openvino_concurrent_requests_equal_single_streams(tiny_engines, frames, single):
    """OpenVINO with the THROUGHPUT hint: several infer requests (AsyncInferQueue) at once."""
    pytest.importorskip("openvino")
    with MultiStreamClassifier(tiny_engines, runtime="openvino", options={"inference_precision": "f32"},
                               max_batch=3, flush_timeout_ms=1e6, dispatch="concurrent") as multi:
        backbone = multi.engines.backbone
        assert backbone.properties["performance_hint"].upper().endswith("THROUGHPUT")
        predictions = multi.run_frames(frames)
        outs = backbone.infer_many([{"clip": np.full((1, *multi.spec.clip_shape), v, np.float32)}
                                    for v in (0.0, 1.0, -1.0)])
        ref = [backbone.infer({"clip": np.full((1, *multi.spec.clip_shape), v, np.float32)}) for v in (0.0, 1.0, -1.0)]
    for o, r in zip(outs, ref):  # results in request order, not completion order
        np.testing.assert_allclose(o["descriptor"], r["descriptor"], atol=1e-5)
    assert_same(predictions, single)
