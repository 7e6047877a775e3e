"""The procedural action videos: deterministic, labels checked against the rendered pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from gcf_trt.data import (CLASSES, GenConfig, clip_overlap, make_videos, plan_video, read_labels,
                          read_video, render_frame, render_video)
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
