"""Segments from gates: exact segments on constructed sequences, tIoU, streaming == offline."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from gcf_trt.segments import Segment, SegmentTracker, segments_from_gates, temporal_iou

RANGES = [(8 * k, 8 * k + 7) for k in range(12)]


def spans(segs):
    return [(s.start, s.end, s.first_clip, s.last_clip) for s in segs]


def test_module_is_torch_free():
    import subprocess
    code = "import sys, gcf_trt.segments; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_single_segment_exact():
    g = [0.1, 0.2, 0.8, 0.9, 0.95, 0.7, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    segs = segments_from_gates(g, RANGES)
    assert spans(segs) == [(16, 47, 2, 5)]
    assert segs[0].score == pytest.approx(np.mean([0.8, 0.9, 0.95, 0.7]))


def test_hysteresis_extends_low_run_only_when_it_holds_a_high_clip():
    # 0.4 clips (>= low 0.35) join a run that reaches 0.5; a run of only 0.4s is not a segment
    g = [0.4, 0.4, 0.6, 0.4, 0.1, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0, 0.0]
    assert spans(segments_from_gates(g, RANGES)) == [(0, 31, 0, 3)]
    # with low == high, only the 0.6 clip is above: too short for min_clips=2
    assert segments_from_gates(g, RANGES, low=0.5) == []
    assert spans(segments_from_gates(g, RANGES, low=0.5, min_clips=1)) == [(16, 23, 2, 2)]


def test_merge_gap_and_min_clips():
    g = [0, 0.6, 0.9, 0.4, 0.1, 0.2, 0.6, 0.1, 0.7, 0.8, 0.2, 0.9]
    # gap of 2 clips (4, 5) splits; gaps of 1 clip (7, 10) merge
    assert spans(segments_from_gates(g, RANGES)) == [(8, 31, 1, 3), (48, 95, 6, 11)]
    assert spans(segments_from_gates(g, RANGES, merge_gap=0, min_clips=1)) == \
        [(8, 31, 1, 3), (48, 55, 6, 6), (64, 79, 8, 9), (88, 95, 11, 11)]
    assert spans(segments_from_gates(g, RANGES, merge_gap=0, min_clips=2)) == [(8, 31, 1, 3), (64, 79, 8, 9)]
    assert spans(segments_from_gates(g, RANGES, merge_gap=2)) == [(8, 95, 1, 11)]


def test_segment_touching_both_ends_and_empty_input():
    assert spans(segments_from_gates([0.9] * 12, RANGES)) == [(0, 95, 0, 11)]
    assert segments_from_gates([], []) == []
    assert segments_from_gates([0.1] * 12, RANGES) == []
    with pytest.raises(ValueError):
        segments_from_gates([0.1, 0.2], RANGES)


def test_overlapping_clip_ranges():
    ranges = [(4 * k, 4 * k + 7) for k in range(6)]  # stride 4, clip 8
    segs = segments_from_gates([0, 0.9, 0.9, 0, 0, 0], ranges)
    assert spans(segs) == [(4, 15, 1, 2)]


def test_temporal_iou():
    assert temporal_iou((0, 9), (0, 9)) == 1.0
    assert temporal_iou((0, 9), (10, 19)) == 0.0
    assert temporal_iou((0, 9), (5, 14)) == pytest.approx(5 / 15)
    assert temporal_iou((10, 19), (0, 39)) == pytest.approx(10 / 40)


def test_tracker_push_equals_offline_on_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        g = rng.random(n)
        ranges = [(8 * k, 8 * k + 7) for k in range(n)]
        opts = dict(high=float(rng.uniform(0.4, 0.8)), merge_gap=int(rng.integers(0, 3)),
                    min_clips=int(rng.integers(1, 4)))
        opts["low"] = opts["high"] * float(rng.uniform(0.5, 1.0))
        tracker = SegmentTracker(**opts)
        got = []
        for k in range(n):
            got += tracker.push(g[k], ranges[k])
        got += tracker.flush()
        assert got == segments_from_gates(g, ranges, **opts) == tracker.segments


def test_tracker_emits_a_segment_as_soon_as_it_cannot_grow_or_merge():
    t = SegmentTracker(high=0.5, low=0.5, merge_gap=1, min_clips=1)
    assert t.push(0.9, (0, 7)) == [] and t.open_segment == Segment(0, 7, 0.9, 0, 0)
    assert t.push(0.1, (8, 15)) == []           # may still merge across one clip
    assert t.push(0.1, (16, 23)) == [Segment(0, 7, 0.9, 0, 0)]
    assert t.open_segment is None


def test_tracker_update_from_a_ring_with_delay():
    """Ring mode: a clip's gate is taken once `delay` newer clips exist; later gates win."""
    gates = [0.1, 0.2, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    ranges = [(8 * k, 8 * k + 7) for k in range(len(gates))]
    t = SegmentTracker(delay=2)
    out = []
    ring = 4
    for newest in range(len(gates)):
        first = max(0, newest - ring + 1)
        # the newest clips' gates are still provisional (give them a misleading value) until the
        # stream ends, where the last ring's gates are final
        final = newest == len(gates) - 1
        ring_gates = [{"clip_index": k, "frame_range": ranges[k],
                       "gate": gates[k] if newest - k >= 2 or final else 0.99} for k in range(first, newest + 1)]
        out += t.update(ring_gates)
    out += t.flush()
    assert spans(out) == [(16, 39, 2, 4)]
