"""The one frame -> tensor transform, shared by calibration, training, evaluation and runtime.

torch-free (numpy + OpenCV) so the runtime can use it.  A frame is an ``HxWx3`` BGR ``uint8``
array as OpenCV decodes it; grayscale (``HxW`` or ``HxWx1``) and BGRA (``HxWx4``) frames are
converted, anything else is refused with :class:`~gcf_trt.errors.FrameError`.

Transform (the torchvision video preset): resize the shorter side to ``spec.resize_short``
(bilinear), centre-crop ``spec.size`` x ``spec.size``, BGR -> RGB, scale to [0, 1], subtract
``spec.mean`` and divide by ``spec.std``.  Output ``float32 [3, size, size]``; a clip stacks T of
them along axis 1: ``[3, T, size, size]``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from .errors import FrameError
from .spec import ModelSpec


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Return ``frame`` as a contiguous HxWx3 uint8 BGR array, converting gray/BGRA.

    Raises:
        FrameError: wrong type, dtype, rank, channel count, or an empty frame.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0:
        raise FrameError(f"empty frame of shape {frame.shape}")
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating) and not np.isfinite(frame).all():
            raise FrameError("frame contains NaN or inf values",
                             hint="drop or repair the frame before pushing it")
        raise FrameError(f"frame dtype must be uint8, got {frame.dtype}",
                         hint="convert with np.clip(frame, 0, 255).astype(np.uint8)")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[0], frame.shape[1]), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return np.ascontiguousarray(frame)
    raise FrameError(f"frame shape {frame.shape} is not HxW, HxWx1, HxWx3 or HxWx4")


class Preprocessor:
    """Callable frame transform for one :class:`ModelSpec` (constants computed once)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        std = np.asarray(spec.std, np.float32)
        mean = np.asarray(spec.mean, np.float32)
        # x_norm = (x / 255 - mean) / std = x * scale + offset, per RGB channel.
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._offset = (-mean / std).reshape(3, 1, 1)

    def resize_crop(self, frame: np.ndarray) -> np.ndarray:
        """Resize the shorter side and centre-crop; returns ``size x size x 3`` uint8 BGR."""
        bgr = as_bgr(frame)
        h, w = bgr.shape[:2]
        short, size = self.spec.resize_short, self.spec.size
        scale = short / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(bgr, (new_w, new_h), interpolation=interp)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return resized[top:top + size, left:left + size]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Transform one frame to ``float32 [3, size, size]`` (normalised RGB)."""
        crop = self.resize_crop(frame)
        chw = crop[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)  # BGR -> RGB, HWC -> CHW
        chw *= self._scale
        chw += self._offset
        return chw


def preprocess_frame(frame: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Transform one frame (see module docstring); prefer :class:`Preprocessor` in loops."""
    return Preprocessor(spec)(frame)


def stack_clip(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Stack T preprocessed frames ``[3, H, W]`` into one clip ``[3, T, H, W]``."""
    return np.ascontiguousarray(np.stack(frames, axis=1))


def clip_starts(num_sampled_frames: int, spec: ModelSpec) -> list[int]:
    """Start indices (in sampled frames) of every complete clip, as the stream emits them.

    Clip k covers sampled frames ``[k * stride, k * stride + clip_len)``.
    """
    last = num_sampled_frames - spec.clip_len
    return list(range(0, last + 1, spec.stride)) if last >= 0 else []


def clips_from_frames(frames: Iterable[np.ndarray], spec: ModelSpec) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Offline clip assembly with exactly the streaming semantics.

    Args:
        frames: raw source frames (BGR uint8), in order.
        spec: the model spec (clip_len, stride, frame_step, preprocessing).

    Returns:
        ``(clips, ranges)``: ``clips`` is ``float32 [K, 3, T, H, W]`` and ``ranges[k]`` the
        (first, last) *source* frame index of clip k, inclusive.
    """
    prep = Preprocessor(spec)
    sampled, source_index = [], []
    for i, frame in enumerate(frames):
        if i % spec.frame_step == 0:
            sampled.append(prep(frame))
            source_index.append(i)
    starts = clip_starts(len(sampled), spec)
    if not starts:
        return np.zeros((0, *spec.clip_shape), np.float32), []
    clips = np.stack([stack_clip(sampled[s:s + spec.clip_len]) for s in starts])
    ranges = [(source_index[s], source_index[s + spec.clip_len - 1]) for s in starts]
    return clips, ranges
