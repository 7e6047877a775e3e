"""The accuracy table on a tiny set: keys, ranges, and agreement with a direct computation."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gcf_trt.compile.model import GCFNet, save_checkpoint  # noqa: E402
from gcf_trt.data import make_videos, read_video  # noqa: E402
from gcf_trt.datasets import read_labels  # noqa: E402
from gcf_trt.evaluate import evaluate, fuse_video, head_windows, markdown_table, write_report  # noqa: E402
from gcf_trt.preprocess import clips_from_frames  # noqa: E402
from gcf_trt.train_config import TrainConfig  # noqa: E402

TINY = dict(width=4, clip_len=4, stride=4, size=32, resize_short=36, ring_size=32, head_hidden=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_videos(root / "videos", 4, seed=9)
    torch.manual_seed(3)
    model = GCFNet(TrainConfig(**TINY).spec()).eval()
    ckpt = save_checkpoint(model, root / "m.pt")
    return root, model, ckpt


def test_head_windows():
    assert head_windows(5, 16) == [(0, 5)]
    assert head_windows(16, 16) == [(0, 16)]
    assert head_windows(20, 16) == [(0, 16), (4, 20)]
    assert head_windows(40, 16) == [(0, 16), (8, 24), (16, 32), (24, 40)]


def test_fuse_video_pads_left_like_the_ring():
    calls = []

    def head(x, mask):
        calls.append((x.copy(), mask.copy()))
        return np.ones((len(x), 3)), mask * 0.5

    desc = np.arange(12, dtype=np.float32).reshape(3, 4)
    logits, gates = fuse_video(desc, 5, head)
    x, mask = calls[0]
    assert mask.tolist() == [[0, 0, 1, 1, 1]]
    np.testing.assert_array_equal(x[0, 2:], desc)
    assert gates.tolist() == [0.5, 0.5, 0.5]


def test_eval_table_matches_a_direct_computation(setup, tmp_path):
    root, model, ckpt = setup
    report = evaluate(ckpt, root / "videos", progress=False)
    for key in ("central_clip_top1", "average_top1", "gcf_top1", "segment_tiou"):
        assert 0.0 <= report[key] <= 1.0
    assert report["int8_top1"] is None and "int8_note" in report
    assert set(report["diagnostics"]) == {"gated_average_top1", "oracle_action_average_top1"}
    assert all(0.0 <= v <= 1.0 for v in report["diagnostics"].values())
    assert report["num_videos"] == 4 and report["seed"] == 9
    # direct computation
    hits = {"central": 0, "average": 0, "gcf": 0}
    with torch.no_grad():
        for rec in read_labels(root / "videos"):
            clips, _ = clips_from_frames(read_video(rec.path), model.spec)
            desc = model.backbone(torch.from_numpy(clips))[None]
            mask = torch.ones(1, desc.shape[1])
            hits["central"] += int(model.central_clip_logits(desc, mask).argmax()) == rec.label_index
            hits["average"] += int(model.average_logits(desc, mask).argmax()) == rec.label_index
            logits, _ = model(torch.from_numpy(clips)[None])   # K <= ring_size: one head call
            hits["gcf"] += int(logits.argmax()) == rec.label_index
    assert report["central_clip_top1"] == hits["central"] / 4
    assert report["average_top1"] == hits["average"] / 4
    assert report["gcf_top1"] == hits["gcf"] / 4
    tious = [v["tiou"] for v in report["videos"]]
    assert report["segment_tiou"] == pytest.approx(np.mean(tious), abs=1e-4)
    write_report(report, tmp_path / "a.json", tmp_path / "a.md")
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["gcf_top1"] == report["gcf_top1"] and "videos" not in saved
    assert "| GCF fusion (PyTorch FP32) |" in markdown_table(report)


def test_eval_through_fp32_engines_agrees_with_pytorch(setup):
    from gcf_trt.compile.build import build_engines
    root, model, ckpt = setup
    build_engines(ckpt, root / "engines", target="cpu", precision="fp32", runtime="onnxruntime")
    report = evaluate(ckpt, root / "videos", [root / "engines"], progress=False)
    row = report["engines"][str(root / "engines")]
    assert row["precision"] == "fp32"
    assert row["agreement_with_pytorch"] == 1.0 and row["max_gate_diff"] < 1e-4
    assert report["fp32_engine_top1"] == report["gcf_top1"]


@pytest.fixture(scope="module")
def demo_engines(tmp_path_factory):
    from gcf_trt.commands.demo import bundled_checkpoint
    from gcf_trt.compile.build import build_engines
    out = tmp_path_factory.mktemp("demo") / "engines"
    build_engines(bundled_checkpoint(), out, target="cpu", precision="fp32", runtime="onnxruntime")
    return out


def test_streaming_segments_equal_offline_segments(demo_engines):
    """SegmentTracker(delay=long_range) on the stream's rings == segments of the offline gates."""
    from gcf_trt.data import plan_video, render_video
    from gcf_trt.evaluate import batched, engine_fns
    from gcf_trt.runtime.engines import load_engines
    from gcf_trt.runtime.stream import StreamingClassifier
    from gcf_trt.segments import SegmentTracker, segments_from_gates
    frames = list(render_video(plan_video(21, 0)))
    with load_engines(demo_engines) as eng:
        spec = eng.spec
        clips, ranges = clips_from_frames(frames, spec)
        assert len(clips) <= spec.ring_size
        backbone, head = engine_fns(eng)
        _, offline_gates = fuse_video(batched(backbone, clips), spec.ring_size, head)
        with StreamingClassifier(eng) as clf:
            tracker = SegmentTracker(delay=spec.long_range)
            streamed = []
            for f in frames:
                pred = clf.push(f)
                if pred is not None:
                    streamed += tracker.update(pred.gates)
            streamed += tracker.flush()
    offline = segments_from_gates(offline_gates, ranges)
    assert offline, "the demo model finds no action in this video"
    assert [(s.start, s.end) for s in streamed] == [(s.start, s.end) for s in offline]
    assert [s.score for s in streamed] == pytest.approx([s.score for s in offline], abs=1e-5)


def test_demo_command_runs_end_to_end(tmp_path, capsys):
    from gcf_trt.cli import main
    assert main(["demo", "--out", str(tmp_path / "demo"), "--precision", "fp32", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "prediction:" in out and "truth:" in out
    for name in ("input.mp4", "annotated.mp4", "timeline.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 1000


def test_eval_reuses_the_training_descriptor_cache_with_the_same_results(tmp_path):
    from tests.conftest import write_video as write_clip
    from gcf_trt.compile.model import build_backbone
    from gcf_trt.train import train
    from gcf_trt.train_config import TrainConfig
    for c, label in enumerate(("clap", "wave")):
        (tmp_path / "ds" / label).mkdir(parents=True)
        for i in range(3):
            write_clip(tmp_path / "ds" / label / f"{i}.mp4", num_frames=24, size=(48, 40), seed=10 * c + i)
    torch.manual_seed(1)
    torch.save(build_backbone("edge3d", width=4, blocks=(1, 1, 1, 1)).state_dict(), tmp_path / "w.pt")
    cfg = TrainConfig(width=4, clip_len=4, stride=4, size=32, resize_short=36, ring_size=8, head_hidden=16,
                      epochs=2, head_epochs=5, mode="freeze", backbone_weights=str(tmp_path / "w.pt"))
    ckpt = train(tmp_path / "ds", tmp_path / "m.pt", cfg, log=lambda m: None, progress=False).checkpoint
    fresh = evaluate(ckpt, tmp_path / "ds", progress=False)
    cached = evaluate(ckpt, tmp_path / "ds", progress=False, cache_dir="auto")   # beside the checkpoint
    assert fresh["descriptor_cache"] is None
    assert cached["descriptor_cache"]["hits"] == 6 and cached["descriptor_cache"]["computed"] == 0
    for key in ("gcf_top1", "average_top1", "central_clip_top1", "per_class"):
        assert cached[key] == fresh[key]
    for a, b in zip(fresh["videos"], cached["videos"]):
        np.testing.assert_allclose(a["gates"], b["gates"], atol=1e-4)
