"""Overlay a prediction on a frame: label, score and a gate bar (OpenCV only, headless-safe).

The gate bar has one cell per ring slot (oldest left, newest right); each cell's filled height
is the clip's gate in [0, 1]; clips kept by the head's clip selection are green, the others
grey, empty slots are just outlined.  So a glance shows which of the last N clips the
prediction rests on.
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
    text = f"{prediction.label} {prediction.score:.2f}"
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
