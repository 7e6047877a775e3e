"""The one frame -> tensor transform, shared by calibration, training, evaluation and runtime.

torch-free (numpy + OpenCV) so the runtime can use it.  A frame is an ``HxWx3`` BGR ``uint8``
array as OpenCV decodes it; grayscale (``HxW`` or ``HxWx1``) and BGRA (``HxWx4``) frames are
converted, anything else is refused with :class:`~gcf_trt.errors.FrameError`.

Transform (the geometry of torchvision's video preset: shorter side to ``spec.resize_short``,
centre crop ``spec.size`` x ``spec.size``), computed crop-first:

1. crop, in *source* coordinates, the centred square the preset's crop keeps: side
   ``min(H, W) * size / resize_short`` rounded to a multiple of ``2**k`` (see 2), or without
   halvings to an integer of the shorter side's parity so that the crop is exactly centred;
2. downscale it with ``k`` exact 2x ``INTER_AREA`` halvings (``k = floor(log2(side / size))``,
   OpenCV's integer fast path), then one ``INTER_LINEAR`` step of less than 2x to ``size``
   (the halvings already low-pass filtered it).  Without halvings (side < 2 * size) the last
   step is ``INTER_AREA`` when it shrinks and ``INTER_LINEAR`` when it enlarges;
3. BGR -> RGB, HWC -> CHW, ``(x / 255 - mean) / std`` in one OpenCV call
   (``cv2.dnn.blobFromImageWithParams``).

Output ``float32 [3, size, size]``; a clip stacks T of them along axis 1: ``[3, T, size, size]``.

Why crop-first and why these filters: preprocessing, mostly one ``INTER_AREA`` resize of the
whole frame at a non-integer ratio, was 67-79 % of the end-to-end wall time (issue 14); 1-3
cost a small fraction of that and differ from it by the old crop's offset from the centre (up
to half an output pixel) and the filter kernels; docs/PREPROCESSING.md has the measurements.  The
normalisation stays outside the backbone graph: in one OpenCV call it is too cheap for a change
of every engine's input contract to pay (measured there too).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

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


# cv2.dnn.blobFromImageWithParams (OpenCV >= 4.8, which setup.cfg requires) does the channel
# swap, the layout change and the per-channel normalisation in one pass; builds of OpenCV
# without the dnn module fall back to numpy (same arithmetic up to float32 rounding).
_HAS_BLOB = hasattr(getattr(cv2, "dnn", None), "blobFromImageWithParams")


class CropPlan(NamedTuple):
    """How one source frame size is cropped and downscaled (see the module docstring)."""

    top: int
    left: int
    side: int        # square crop side in source pixels, a multiple of 2**halvings
    halvings: int    # exact 2x INTER_AREA steps after the crop
    last: int | None  # interpolation of the final step to ``size``; None when already there


def crop_plan(height: int, width: int, size: int, resize_short: int) -> CropPlan:
    """The source-coordinate crop and resize steps for a ``height`` x ``width`` frame."""
    short = min(height, width)
    exact = short * size / resize_short
    halvings = 0
    while exact >= (2 << halvings) * size:
        halvings += 1
    unit = 1 << halvings
    if halvings:
        side = unit * min(round(exact / unit), short // unit)
    else:
        # The side with the parity of the shorter frame side centres the crop exactly on it
        # (a 0.5-pixel shift moves the predictions of a small model measurably).
        side = short - 2 * round((short - exact) / 2)
    side = max(1, side)
    rest = side >> halvings
    if rest == size:
        last = None
    elif halvings or rest < size:
        last = cv2.INTER_LINEAR
    else:
        last = cv2.INTER_AREA
    return CropPlan((height - side) // 2, (width - side) // 2, side, halvings, last)


class Preprocessor:
    """Callable frame transform for one :class:`ModelSpec` (constants computed once)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        std = np.asarray(spec.std, np.float32)
        mean = np.asarray(spec.mean, np.float32)
        # x_norm = (x / 255 - mean) / std = x * scale + offset, per RGB channel.
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._offset = (-mean / std).reshape(3, 1, 1)
        self._blob = None
        if _HAS_BLOB:
            # blobFromImage computes (x - mean) * scalefactor, channels in RGB order after swapRB.
            params = cv2.dnn.Image2BlobParams()
            params.scalefactor = (*(float(v) for v in self._scale.reshape(3)), 0.0)
            params.mean = (*(255.0 * float(v) for v in mean), 0.0)
            params.swapRB = True
            params.ddepth = cv2.CV_32F
            self._blob = params
        self._plans: dict[tuple[int, int], CropPlan] = {}

    def resize_crop(self, frame: np.ndarray) -> np.ndarray:
        """Centre-crop and downscale (module docstring, steps 1-2); ``size x size x 3`` uint8 BGR."""
        bgr = as_bgr(frame)
        h, w = bgr.shape[:2]
        plan = self._plans.get((h, w))
        if plan is None:
            if len(self._plans) >= 16:  # a source whose size keeps changing: stay bounded
                self._plans.clear()
            plan = self._plans[(h, w)] = crop_plan(h, w, self.spec.size, self.spec.resize_short)
        out = bgr[plan.top:plan.top + plan.side, plan.left:plan.left + plan.side]
        side = plan.side
        for _ in range(plan.halvings):
            side //= 2
            out = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
        if plan.last is not None:
            out = cv2.resize(out, (self.spec.size, self.spec.size), interpolation=plan.last)
        return np.ascontiguousarray(out)

    def to_tensor(self, crop: np.ndarray) -> np.ndarray:
        """``size x size x 3`` uint8 BGR -> ``float32 [3, size, size]`` normalised RGB (step 3)."""
        if self._blob is not None:
            return cv2.dnn.blobFromImageWithParams(crop, self._blob)[0]
        chw = crop[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)  # BGR -> RGB, HWC -> CHW
        chw *= self._scale
        chw += self._offset
        return chw

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Transform one frame to ``float32 [3, size, size]`` (normalised RGB)."""
        return self.to_tensor(self.resize_crop(frame))


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
