"""The procedural action videos: deterministic, labels checked against the rendered pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from gcf_trt.data import CLASSES, GenConfig, make_videos, plan_video, read_video, render_frame, render_video
from gcf_trt.datasets import clip_overlap, read_labels
from gcf_trt.errors import InputError


def _actor_stats(plan, t):
    """Centroid, area and moment orientation of the actor, measured on a clean render."""
    frame = render_frame(plan, t, background=False, clutter=False, noise=False)
    mask = (frame.max(-1) > 0).astype(np.uint8)
    m = cv2.moments(mask, binaryImage=True)
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    theta = 0.5 * math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"])
    return cx, cy, m["m00"], theta


def _measure(plan, frames):
    stats = np.array([_actor_stats(plan, t) for t in frames])
    dtheta = np.diff(stats[:, 3])
    dtheta = (dtheta + math.pi / 2) % math.pi - math.pi / 2   # orientation is defined mod 180 deg
    return stats, float(np.degrees(dtheta.sum()))


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_label_matches_the_rendered_motion(label):
    """Measure the actor in the action window from clean renders; only the labelled motion happens.

    Per-frame medians make the measure robust to the wrap-around of long actions (a
    translation re-entering on the other side, a growth restarting at the size limit).
    """
    plan = plan_video(seed=3, index=label, label=label)
    name = CLASSES[label]
    assert plan.label_name == name
    length = plan.end - plan.start + 1
    assert 0.24 <= length / plan.num_frames <= 0.51
    # the middle of the window, where the actor is fully inside the frame most of the time
    stats, _ = _measure(plan, range(plan.start, plan.end + 1))
    inside = (stats[:, 0] > 16) & (stats[:, 0] < 112) & (stats[:, 1] > 14) & (stats[:, 1] < 82)
    step = np.diff(stats, axis=0)[inside[1:] & inside[:-1]]
    dx, dy = np.median(step[:, 0]), np.median(step[:, 1])
    area_rate = np.median(np.exp(np.diff(np.log(stats[:, 2]))[inside[1:] & inside[:-1]]))
    dtheta = (step[:, 3] + math.pi / 2) % math.pi - math.pi / 2   # orientation is defined mod 180 deg
    turn = float(np.degrees(np.median(dtheta)))
    facts = {"move_left": dx < -1.2, "move_right": dx > 1.2, "move_up": dy < -1.0, "move_down": dy > 1.0,
             "grow": area_rate > 1.05, "shrink": area_rate < 1 / 1.05,
             # image y points down, so a growing image angle turns clockwise on screen
             "rotate_cw": turn > 4, "rotate_ccw": turn < -4}
    for other, happened in facts.items():
        assert happened == (name == other), (name, other, dx, dy, area_rate, turn)
    ys = stats[:, 1]
    dys = np.diff(ys)
    ups_and_downs = int(np.sum(np.diff(np.sign(dys[np.abs(dys) > 0.3])) != 0))
    assert (ups_and_downs >= 3 and np.ptp(ys) > 6) == (name == "bounce"), (name, ups_and_downs, np.ptp(ys))


def test_plan_is_deterministic_and_seed_dependent():
    a, b = plan_video(7, 2), plan_video(7, 2)
    assert (a.label, a.start, a.end, a.num_frames, a.bursts) == (b.label, b.start, b.end, b.num_frames, b.bursts)
    np.testing.assert_array_equal(render_video(a), render_video(b))
    c = plan_video(8, 2)
    assert not np.array_equal(render_frame(a, 0), render_frame(c, 0))


def test_make_videos_writes_decodable_files_and_labels(tmp_path):
    recs1 = make_videos(tmp_path / "a", 3, seed=5)
    recs2 = make_videos(tmp_path / "b", 3, seed=5)
    rows = read_labels(tmp_path / "a")
    assert [(r.label, r.start, r.end, r.num_frames) for r in rows] == \
        [(r.label, r.start, r.end, r.num_frames) for r in recs1] == \
        [(r.label, r.start, r.end, r.num_frames) for r in recs2]
    for r in rows:
        assert r.label == CLASSES[r.label_index]
        frames = read_video(r.path)
        assert len(frames) == r.num_frames and frames[0].shape == (96, 128, 3)
        assert 0 <= r.start <= r.end < r.num_frames
    # same seed -> the same decoded pixels (the encoder is deterministic too)
    f1, f2 = read_video(rows[0].path), read_video(tmp_path / "b" / rows[0].path.name)
    np.testing.assert_array_equal(np.stack(f1), np.stack(f2))
    # and the decoded video is the rendered one up to compression
    plan = plan_video(5, 0, label=rows[0].label_index)
    rendered = render_video(plan)
    assert np.abs(rendered.astype(int) - np.stack(f1).astype(int)).mean() < 12


def test_background_motion_does_not_depend_on_the_label():
    """Bursts use a distractor class drawn independently of the label."""
    cfg = GenConfig()
    labels, distractors = [], []
    for i in range(300):
        p = plan_video(11, i, config=cfg)
        labels.append(p.label)
        distractors.append(p.distractor)
        for s, e, _ in p.bursts:
            assert e < p.start - 3 or s > p.end + 3  # bursts stay out of the action window
    agree = np.mean(np.array(labels) == np.array(distractors))
    assert agree < 0.25  # chance is 1/9; a leak would push it up


def test_clip_overlap_and_errors(tmp_path):
    np.testing.assert_allclose(clip_overlap([(0, 7), (8, 15), (16, 23)], 12, 19), [0, 0.5, 0.5])
    with pytest.raises(InputError):
        read_labels(tmp_path)
    with pytest.raises(InputError):
        plan_video(0, 0, label=len(CLASSES))


# ----------------------------------------------------------------------------- user layouts
from tests.conftest import write_video as _write_clip

from gcf_trt.datasets import VideoSet, open_dataset  # noqa: E402
from gcf_trt.errors import InputError as _InputError  # noqa: E402


def _folders(root, spec):
    """spec: {label: [(name, frames), ...]}; real OpenCV-written files."""
    for label, files in spec.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, (name, frames) in enumerate(files):
            _write_clip(root / label / name, num_frames=frames, fps=25.0, seed=i,
                        fourcc="MJPG" if name.endswith(".avi") else "mp4v")
    return root


def test_class_folders_summary_and_skipped_files(tmp_path):
    root = _folders(tmp_path / "ds", {"wave": [("a.mp4", 20), ("b.avi", 30)], "clap": [("c.mp4", 25)]})
    (root / "clap" / "broken.mp4").write_text("not a video")
    (root / "clap" / "notes.txt").write_text("ignored: not a video extension")
    ds = open_dataset(root)
    assert ds.layout == "folders" and ds.labels == ["clap", "wave"]
    assert [(r.path.name, r.label, r.label_index, r.window) for r in ds.records] == [
        ("c.mp4", "clap", 0, False), ("a.mp4", "wave", 1, False), ("b.avi", "wave", 1, False)]
    s = ds.summary()
    assert s["classes"]["wave"]["videos"] == 2 and s["classes"]["wave"]["seconds"] == pytest.approx(2.0, abs=0.1)
    assert s["skipped"] == [{"file": str(root / "clap" / "broken.mp4"), "reason": "OpenCV cannot open it"}] or \
        s["skipped"][0]["reason"] == "no decodable frame"
    assert "skipped" in ds.summary_text() and "clap: 1, wave: 2" in ds.summary_text()
    frames, rec = ds[2]
    assert len(frames) == 30 and (rec.start, rec.end) == (0, 29)


def test_class_folders_errors(tmp_path):
    root = _folders(tmp_path / "ds", {"wave": [("a.mp4", 20)], "clap": [("c.mp4", 20)]})
    (root / "empty").mkdir()
    with pytest.raises(_InputError, match="'empty' contain no video files"):
        open_dataset(root)
    (root / "empty").rmdir()
    (root / "clap" / "c.mp4").write_bytes(b"garbage")
    with pytest.raises(_InputError, match="'clap' contain no readable video"):
        open_dataset(root)
    with pytest.raises(_InputError, match="'wave' are not among the model's labels"):
        open_dataset(_folders(tmp_path / "ok", {"wave": [("a.mp4", 20)], "jump": [("b.mp4", 20)]}),
                     labels=["jump", "run"])


def test_annotation_csv_jsonl_and_headerless(tmp_path):
    _write_clip(tmp_path / "v1.mp4", num_frames=50, fps=25.0)
    _write_clip(tmp_path / "v2.mp4", num_frames=40, fps=20.0)
    (tmp_path / "list.csv").write_text("path,label,start_s,end_s,split\n"
                                       "v1.mp4,fall,0.4,1.2,train\nv2.mp4,sit,,,val\nv1,sit,1.2,2.0,train\n"
                                       "missing.mp4,fall,,,train\nv2.mp4,fall,5.0,6.0,train\n")
    ds = open_dataset(tmp_path / "list.csv")
    assert ds.layout == "annotations" and ds.labels == ["fall", "sit"]
    r = ds.records
    assert (r[0].start, r[0].end, r[0].window) == (10, 29, True)        # 0.4 s .. 1.2 s at 25 fps
    assert (r[1].window, r[1].split) == (False, "val")
    assert r[2].path.name == "v1.mp4" and (r[2].start, r[2].end) == (30, 49)  # extension found
    reasons = {f.rsplit("/", 1)[-1]: why for f, why in ds.skipped}
    assert reasons["missing.mp4"] == "file not found" and "outside the video" in reasons["v2.mp4"]
    train, val = ds.split()
    assert [x.split for x in train.records] == ["train", "train"] and len(val) == 1
    (tmp_path / "list.jsonl").write_text('{"path": "v1.mp4", "label": "fall", "start_s": 0.4, "end_s": 1.2}\n'
                                         '\n{"path": "v2.mp4", "label": "sit"}\n')
    js = open_dataset(tmp_path / "list.jsonl")
    assert [(x.label, x.start, x.end) for x in js.records] == [("fall", 10, 29), ("sit", 0, 39)]
    (tmp_path / "plain.csv").write_text("v1.mp4,fall,0.4,1.2\nv2.mp4,sit\n")
    assert [(x.label, x.window) for x in open_dataset(tmp_path / "plain.csv").records] == [("fall", True), ("sit", False)]


@pytest.mark.parametrize("content, match", [
    ("path,label,start_s,end_s\nv1.mp4,fall,abc,1\n", "start_s and end_s must both be numbers"),
    ("path,label,start_s,end_s\nv1.mp4,fall,2,1\n", "is empty or negative"),
    ("path,label\nv1.mp4,\n", "needs a path and a label"),
    ('{"path": "v1.mp4"\n', "not a JSON object"),
])
def test_annotation_file_errors_name_the_line(tmp_path, content, match):
    _write_clip(tmp_path / "v1.mp4", num_frames=20)
    (tmp_path / "a.csv").write_text(content)
    with pytest.raises(_InputError, match=match) as info:
        open_dataset(tmp_path / "a.csv")
    assert "a.csv:" in info.value.message


def test_split_never_puts_one_video_on_both_sides(tmp_path):
    rows = ["path,label,start_s,end_s"]
    for i in range(8):
        _write_clip(tmp_path / f"v{i}.mp4", num_frames=60, fps=25.0, seed=i)
        label = "a" if i % 2 else "b"
        rows += [f"v{i}.mp4,{label},0.0,1.0", f"v{i}.mp4,{label},1.2,2.2"]   # two windows of one video
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(tmp_path / "l.csv")
    for seed in range(5):
        train, val = ds.split(0.25, seed=seed)
        assert {r.source for r in train.records}.isdisjoint({r.source for r in val.records})
        assert len(train) + len(val) == 16 and sorted({r.label for r in val.records}) == ["a", "b"]
    assert ds.split(0.25, seed=1)[1].records == ds.split(0.25, seed=1)[1].records  # seeded


def test_procedural_set_is_one_of_the_layouts(tmp_path):
    make_videos(tmp_path / "p", 3, seed=2)
    ds = VideoSet(tmp_path / "p")
    assert ds.layout == "procedural" and ds.labels == list(CLASSES) and ds.has_windows
    frames, rec = ds[0]
    assert rec == ds.records[0] and len(frames) == rec.num_frames
