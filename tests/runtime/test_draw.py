"""runtime/draw.py: the overlay, the gate timeline and the demo's annotated frames, checked by
their pixels (where the gate bar's cells are filled, in which colour; where the segments are)."""
from __future__ import annotations

import numpy as np
import pytest

from gcf_trt.runtime.core import ClipGate, Prediction
from gcf_trt.runtime.draw import (DETECTED, SELECTED, TRUTH, UNSELECTED, annotate_frames, draw_gate_timeline,
                                  draw_prediction)
from gcf_trt.segments import Segment


def prediction(gates: list[tuple[float, bool]], clip_len: int = 8, label: str = "wave") -> Prediction:
    first = 0
    clip_gates = []
    for i, (gate, selected) in enumerate(gates):
        clip_gates.append(ClipGate(i, (first, first + clip_len - 1), gate, selected))
        first += clip_len
    return Prediction(label=label, score=0.9, top_k=[(label, 0.9)], logits=np.zeros(3, np.float32),
                      gates=clip_gates, frame_range=(0, first - 1), clip_index=len(gates) - 1,
                      latency_ms={}, ring_fill=len(gates))


def colour_mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.asarray(colour, np.uint8), axis=-1)


def test_gate_bar_fills_each_cell_by_its_gate_and_colours_the_selected_ones():
    frame = np.zeros((480, 640, 3), np.uint8)
    pred = prediction([(1.0, True), (0.5, False), (0.0, False), (0.25, True)])
    out = draw_prediction(frame, pred, ring_size=4)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not frame.any()  # drawn on a copy by default
    bar = out[out.shape[0] // 2:]  # the bar sits at the bottom
    green, grey = colour_mask(bar, SELECTED), colour_mask(bar, UNSELECTED)
    cols_green = np.flatnonzero(green.any(axis=0))
    cols_grey = np.flatnonzero(grey.any(axis=0))
    assert cols_green.size and cols_grey.size
    assert cols_green.min() < cols_grey.min() < cols_grey.max() < cols_green.max()  # cells 0 and 3 vs cell 1
    # filled heights: gate 1.0 > gate 0.5 (grey) > gate 0.25 (last, green); gate 0 draws nothing
    heights = green.sum(axis=0)
    full, quarter = heights[cols_green.min()], heights[cols_green.max()]
    half = grey.sum(axis=0)[cols_grey.min()]
    assert full == pytest.approx(2 * half, rel=0.1) and half == pytest.approx(2 * quarter, rel=0.15)


def test_empty_ring_slots_come_first_and_none_draws_a_waiting_text():
    frame = np.zeros((240, 320, 3), np.uint8)
    out = draw_prediction(frame, prediction([(1.0, True)]), ring_size=4)
    green = np.flatnonzero(colour_mask(out, SELECTED).any(axis=0))
    assert green.min() > out.shape[1] // 8  # the one clip is the newest slot, right of 3 empty ones
    waiting = draw_prediction(frame, None)
    assert waiting.any() and not colour_mask(waiting, SELECTED).any()
    in_place = frame.copy()
    assert draw_prediction(in_place, None, copy=False) is in_place and in_place.any()


def test_timeline_marks_the_detected_segment_and_the_truth_where_they_are():
    preds = [prediction([(0.1, False)] * 3 + [(0.9, True)] * 4 + [(0.1, False)])]
    seg = Segment(start=24, end=55, score=0.9, first_clip=3, last_clip=6)
    image = draw_gate_timeline(preds, [seg], num_frames=64, truth=(24, 55, "wave"), size=(1000, 420))
    assert image.shape == (420, 1000, 3)
    left, right = 60, 20
    x = lambda frame: left + int(round(frame / 64 * (1000 - left - right)))  # noqa: E731 - the module's axis
    detected = np.flatnonzero(colour_mask(image[:300], DETECTED).any(axis=0))
    assert abs(detected.min() - x(24)) <= 1 and abs(detected.max() - x(56)) <= 1
    without = draw_gate_timeline(preds, [], num_frames=64, size=(1000, 420))
    assert not colour_mask(without[:300], DETECTED).any()


def test_annotated_frames_are_scaled_with_a_strip_of_truth_segments_and_a_cursor():
    frames = [np.full((12, 16, 3), 40, np.uint8) for _ in range(8)]
    per_frame = [None] * 4 + [prediction([(0.8, True)], clip_len=4)] * 4
    seg = Segment(start=4, end=7, score=0.8, first_clip=1, last_clip=1)
    out = annotate_frames(frames, per_frame, [seg], truth=(0, 3, "wave"), scale=4)
    assert len(out) == 8 and out[0].shape == (12 * 4 + 70 + 14, 64, 3)
    strip = out[0][-14:]
    assert colour_mask(strip[:7], TRUTH)[:, :32].all(axis=0)[1:].all()  # truth: frames 0-3, left half
    assert colour_mask(strip[7:], DETECTED)[:, 32:].all()                # segment: frames 4-7, right half
    cursor = [np.flatnonzero(colour_mask(o[-14:], (255, 255, 255)).all(axis=0)) for o in out]
    assert [c.tolist() for c in cursor] == [[i * 8] for i in range(8)]


def test_the_label_says_no_action_when_no_gate_reaches_the_action_gate():
    """The decision (Prediction.action) is the class when a clip's gate reaches ACTION_GATE (0.5),
    else None; the overlay then says "no action" with the class guessed in brackets, and the
    timeline's prediction strip draws those predictions in the "no action" grey."""
    from gcf_trt.runtime.draw import IDLE, decision_text
    idle, seen = prediction([(0.49, True), (0.2, False)]), prediction([(0.2, False), (0.5, True)])
    assert idle.action is None and not idle.action_in_view and idle.to_dict()["action"] is None
    assert seen.action == "wave" and seen.to_dict()["action"] == "wave"
    assert decision_text(idle) == "no action (wave 0.90)" and decision_text(seen) == "wave 0.90"
    own_class = prediction([(0.2, False), (0.5, True)], label="no action")
    own_class.no_action_label = "no action"   # a model trained with --no-action-class predicts it
    assert own_class.action is None and decision_text(own_class) == "no action 0.90"
    frame = np.zeros((240, 320, 3), np.uint8)
    assert not np.array_equal(draw_prediction(frame, idle), draw_prediction(frame, seen))  # the text differs
    idle_ink = colour_mask(draw_gate_timeline([idle], [], 16), IDLE).sum()
    seen_ink = colour_mask(draw_gate_timeline([seen], [], 16), IDLE).sum()  # anti-aliased text may hit it
    assert idle_ink > seen_ink + 10000  # the strip's cell: 24 px high, the width of the video
