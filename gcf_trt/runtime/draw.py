"""Overlay a prediction on a frame: label, score and a gate bar (OpenCV only, headless-safe).

The gate bar has one cell per ring slot (oldest left, newest right); each cell's filled height
is the clip's gate in [0, 1]; clips kept by the head's clip selection are green, the others
grey, empty slots are just outlined.  So a glance shows which of the last N clips the
prediction rests on.  The label is the decision (:attr:`Prediction.action`): "no action" and
the class guessed, in brackets, when no clip of the ring reaches the action gate.
"""
from __future__ import annotations

import cv2
import numpy as np

from .stream import Prediction

SELECTED = (80, 200, 80)    # BGR
UNSELECTED = (150, 150, 150)
OUTLINE = (230, 230, 230)
TEXT = (255, 255, 255)
SHADOW = (0, 0, 0)
IDLE = (200, 200, 200)      # "no action" on the timeline's prediction strip
NO_ACTION = "no action"


def decision_text(prediction: Prediction) -> str:
    """'grow 0.91', or 'no action (grow 0.31)' when no clip of the ring reaches the action gate;
    'no action 0.94' when a model with a no-action class predicts it."""
    guess = f"{prediction.label} {prediction.score:.2f}"
    if prediction.action is not None or prediction.predicts_no_action_class:
        return guess
    return f"{NO_ACTION} ({guess})"


def draw_prediction(frame: np.ndarray, prediction: Prediction | None, ring_size: int | None = None,
                    *, copy: bool = True) -> np.ndarray:
    """Draw ``prediction`` on a BGR uint8 frame and return it.

    Args:
        frame: ``HxWx3`` uint8 BGR (as decoded).
        prediction: what to draw; None draws "waiting for first clip".
        ring_size: number of cells in the gate bar (default: the prediction's ring fill).
        copy: draw on a copy (default) instead of in place.
    """
    canvas = frame.copy() if copy else frame
    h, w = canvas.shape[:2]
    scale = max(0.35, min(w, h) / 640.0)
    thickness = max(1, int(round(scale * 2)))
    margin = max(4, int(8 * scale))
    if prediction is None:
        _text(canvas, "waiting for first clip...", (margin, margin + int(20 * scale)), scale, thickness)
        return canvas
    text = decision_text(prediction)
    _text(canvas, text, (margin, margin + int(20 * scale)), scale, thickness)

    slots = max(ring_size or 0, len(prediction.gates), 1)
    bar_h = max(8, int(40 * scale))
    bar_w = min(w - 2 * margin, max(slots * 6, int(w * 0.35)))
    cell = max(3, bar_w // slots)
    top = h - margin - bar_h
    first = slots - len(prediction.gates)  # empty slots come first, like the ring
    for slot in range(slots):
        x0 = margin + slot * cell
        x1 = x0 + cell - 2
        cv2.rectangle(canvas, (x0, top), (x1, top + bar_h), OUTLINE, 1)
        if slot < first:
            continue
        gate = prediction.gates[slot - first]
        filled = int(round(float(np.clip(gate.gate, 0.0, 1.0)) * (bar_h - 2)))
        if filled > 0:
            cv2.rectangle(canvas, (x0 + 1, top + bar_h - 1 - filled), (x1 - 1, top + bar_h - 1),
                          SELECTED if gate.selected else UNSELECTED, -1)
    return canvas


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float, thickness: int) -> None:
    # A dark outline under white text stays readable on any background.
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, SHADOW, thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT, thickness, cv2.LINE_AA)


# ----------------------------------------------------------------------------- timelines
TRUTH = (80, 200, 80)       # BGR: the annotated action window
DETECTED = (40, 160, 255)   # detected action segments
GATE = (200, 120, 30)       # gate curve
BURST = (90, 90, 200)       # distractor bursts (procedural videos)


def draw_gate_timeline(predictions: list[Prediction], segments: list, num_frames: int, *,
                       truth: tuple[int, int, str] | None = None, shaded: list[tuple[int, int]] = (),
                       size: tuple[int, int] = (1000, 420)) -> np.ndarray:
    """A timeline image (BGR uint8) of a streamed video: the final ring's gate per clip, the
    detected segments, the annotated window and the predicted label after each clip.

    OpenCV only, so the runtime's users (and ``gcf-trt demo``) need no plotting library.

    Args:
        predictions: the stream's predictions in order (the last one's gates are drawn).
        segments: objects with ``start``, ``end`` (frames, inclusive) and ``score``.
        num_frames: length of the video in frames (the x axis).
        truth: ``(start, end, label)`` of the annotated action, if known.
        shaded: frame ranges to shade (e.g. distractor bursts).
        size: ``(width, height)`` in pixels.
    """
    w, h = size
    canvas = np.full((h, w, 3), 255, np.uint8)
    left, right, top = 60, 20, 40
    gate_h = int(h * 0.55)
    strip_top = top + gate_h + 30
    n = max(1, num_frames)

    def x(frame: float) -> int:
        return left + int(round(frame / n * (w - left - right)))

    def y(gate: float) -> int:
        return top + gate_h - int(round(float(np.clip(gate, 0, 1)) * gate_h))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for b0, b1 in shaded:
        cv2.rectangle(canvas, (x(b0), top), (x(b1 + 1), top + gate_h), (225, 225, 245), -1)
    if truth is not None:
        overlay = canvas.copy()
        cv2.rectangle(overlay, (x(truth[0]), top), (x(truth[1] + 1), top + gate_h), (200, 235, 200), -1)
        canvas = cv2.addWeighted(overlay, 0.7, canvas, 0.3, 0)
    for s in segments:
        cv2.rectangle(canvas, (x(s.start), top + gate_h - 8), (x(s.end + 1), top + gate_h), DETECTED, -1)
    cv2.rectangle(canvas, (left, top), (w - right, top + gate_h), (0, 0, 0), 1)
    for g in (0.0, 0.5, 1.0):
        cv2.putText(canvas, f"{g:.1f}", (8, y(g) + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if predictions:
        final = predictions[-1]
        points = []
        for gate in final.gates:
            points += [(x(gate.frame_range[0]), y(gate.gate)), (x(gate.frame_range[1] + 1), y(gate.gate))]
        if points:
            cv2.polylines(canvas, [np.array(points, np.int32)], False, GATE, 2, cv2.LINE_AA)
        title = f"GCF gates of the final ring: predicted {final.label} ({final.score:.2f})"
        if truth is not None:
            title += f", truth {truth[2]}"
        cv2.putText(canvas, title, (left, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        # predicted label after each clip, as coloured cells on a strip
        labels = sorted({p.action or NO_ACTION for p in predictions})
        palette = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
                   (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
        prev = 0
        for p in predictions:
            end = p.gates[-1].frame_range[1] + 1 if p.gates else prev
            name = p.action or NO_ACTION
            colour = IDLE if name == NO_ACTION else palette[labels.index(name) % len(palette)]
            cv2.rectangle(canvas, (x(prev), strip_top), (x(end), strip_top + 24), colour, -1)
            prev = end
        cv2.putText(canvas, "prediction", (4, strip_top + 17), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        lx = left
        for i, label in enumerate(labels):
            colour = IDLE if label == NO_ACTION else palette[i % len(palette)]
            cv2.rectangle(canvas, (lx, strip_top + 34), (lx + 14, strip_top + 48), colour, -1)
            cv2.putText(canvas, label, (lx + 18, strip_top + 46), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            lx += 30 + 9 * len(label)
    legend = [("gate per clip", GATE), ("detected segments", DETECTED)]
    if truth is not None:
        legend.append(("annotated action", TRUTH))
    if shaded:
        legend.append(("distractor bursts", BURST))
    lx = left
    for text, colour in legend:
        cv2.rectangle(canvas, (lx, h - 22), (lx + 14, h - 8), colour, -1)
        cv2.putText(canvas, text, (lx + 18, h - 10), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        lx += 40 + 9 * len(text)
    cv2.putText(canvas, "frame", (w - right - 50, strip_top - 8), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def annotate_frames(frames: list[np.ndarray], per_frame: list[Prediction | None], segments: list, *,
                    truth: tuple[int, int, str] | None = None, scale: int = 4) -> list[np.ndarray]:
    """Frames enlarged by ``scale`` with a panel (frame index, current prediction, truth) and a
    timeline strip (annotated window green, detected segments orange, a cursor)."""
    out = []
    n = len(frames)
    for i, (frame, pred) in enumerate(zip(frames, per_frame)):
        big = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        w = big.shape[1]
        panel = np.zeros((70, w, 3), np.uint8)
        text = f"frame {i}" + (f"  {decision_text(pred)}" if pred else "  (filling first clip)")
        cv2.putText(panel, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        if truth is not None:
            inside = truth[0] <= i <= truth[1]
            cv2.putText(panel, f"truth: {truth[2]} {'[action]' if inside else ''}", (8, 52),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6, (120, 255, 120) if inside else (180, 180, 180), 1, cv2.LINE_AA)
        if any(s.start <= i <= s.end for s in segments):
            cv2.putText(panel, "detected action", (w - 200, 52), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        DETECTED, 2, cv2.LINE_AA)
        strip = np.zeros((14, w, 3), np.uint8)
        if truth is not None:
            strip[:7, int(truth[0] / n * w):int((truth[1] + 1) / n * w)] = TRUTH
        for s in segments:
            strip[7:, int(s.start / n * w):int((s.end + 1) / n * w)] = DETECTED
        strip[:, min(w - 1, int(i / n * w))] = (255, 255, 255)
        out.append(np.concatenate([big, panel, strip], 0))
    return out
