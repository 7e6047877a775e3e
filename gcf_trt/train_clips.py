"""Training clips: decoded videos cut into clips, normalised, and the label-consistent augmentations.

:func:`load_set` decodes the labelled videos of one or several datasets
(:class:`~gcf_trt.datasets.VideoSet`) into :class:`VideoClips` with the shared preprocessing;
:class:`Augment` mirrors / reverses clips with their label swaps.  Used by :mod:`gcf_trt.train`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import CLASSES
from .datasets import VideoSet, clip_overlap
from .errors import InputError
from .preprocess import Preprocessor, clip_starts
from .progress import progress_bar
from .spec import ModelSpec

# Label-swapping augmentations: what each class becomes when the clip is mirrored or played
# backwards.  They break the "this video's texture -> this label" shortcut a small backbone
# otherwise learns on a few hundred videos (measured: chance accuracy on held-out videos
# without them): the same background now appears with the mirrored / reversed labels too.
FLIP_PAIRS = (("move_left", "move_right"), ("rotate_cw", "rotate_ccw"))
VFLIP_PAIRS = (("move_up", "move_down"), ("rotate_cw", "rotate_ccw"))
REVERSE_PAIRS = (("move_left", "move_right"), ("move_up", "move_down"), ("rotate_cw", "rotate_ccw"),
                 ("grow", "shrink"))


# ----------------------------------------------------------------------------- clip data
@dataclass
class VideoClips:
    """One decoded video: resized/cropped frames (uint8) and its clips' bookkeeping."""

    crops: np.ndarray                  # [F', size, size, 3] uint8 BGR, sampled frames
    starts: list[int]                  # clip start indices into crops
    ranges: list[tuple[int, int]]      # source frame range of each clip (inclusive)
    overlap: np.ndarray                # [K] fraction of each clip inside the action
    label: int
    start: int
    end: int


def load_video_clips(frames, record, spec: ModelSpec, label_index: int) -> VideoClips:
    """Resize/crop every sampled frame once (the shared Preprocessor) and index the clips."""
    prep = Preprocessor(spec)
    idx = list(range(0, len(frames), spec.frame_step))
    crops = np.stack([prep.resize_crop(frames[i]) for i in idx])
    starts = clip_starts(len(idx), spec)
    ranges = [(idx[s], idx[s + spec.clip_len - 1]) for s in starts]
    return VideoClips(crops, starts, ranges, clip_overlap(ranges, record.start, record.end),
                      label_index, record.start, record.end)


def normalize(crops: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """uint8 BGR ``[..., T, H, W, 3]`` -> normalised RGB float ``[..., 3, T, H, W]``.

    Same arithmetic as :class:`~gcf_trt.preprocess.Preprocessor` (x * scale + offset, float32).
    """
    std = torch.tensor(spec.std, dtype=torch.float32)
    mean = torch.tensor(spec.mean, dtype=torch.float32)
    scale = (1.0 / (255.0 * std.double())).float()
    offset = (-mean / std)
    x = crops.flip(-1).to(torch.float32) * scale + offset  # BGR -> RGB
    return x.movedim(-1, -4)


def video_clips_tensor(v: VideoClips, spec: ModelSpec, flip: bool = False) -> torch.Tensor:
    """All clips of a video, normalised: ``[K, 3, T, H, W]``."""
    crops = torch.from_numpy(np.stack([v.crops[s:s + spec.clip_len] for s in v.starts]))
    if flip:
        crops = crops.flip(-2)
    return normalize(crops, spec)


def flip_map(labels: list[str], pairs=FLIP_PAIRS) -> list[int]:
    """Label index after a transform swapping ``pairs`` (default: horizontal flip)."""
    index = {name: i for i, name in enumerate(labels)}
    out = list(range(len(labels)))
    for a, b in pairs:
        if a in index and b in index:
            out[index[a]], out[index[b]] = index[b], index[a]
    return out


class Augment:
    """Random label-consistent clip transforms on uint8 ``[B, T, H, W, 3]`` batches.

    Horizontal flip, vertical flip, time reversal (each with its label swap), a random RGB
    channel permutation and a brightness gain (both label-free).
    """

    def __init__(self, labels: list[str], seed: int = 0):
        self.maps = [torch.tensor(flip_map(labels, p)) for p in (FLIP_PAIRS, VFLIP_PAIRS, REVERSE_PAIRS)]
        self.dims = (-2, -3, -4)   # W, H, T
        self.rng = np.random.default_rng(seed)
        # A user's classes have no known swaps: upside down or backwards, "fall" becomes "get
        # up".  Only the horizontal mirror (and colour) is label-free for them.
        procedural = set(labels) <= set(CLASSES)
        self.allowed = (True, procedural, procedural)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(x)
        for fmap, dim, ok in zip(self.maps, self.dims, self.allowed):
            if not ok:
                continue
            sel = torch.from_numpy(self.rng.random(b) < 0.5)
            shape = [b] + [1] * (x.dim() - 1)
            x = torch.where(sel.view(shape), x.flip(dim), x)
            labels = torch.where(sel, fmap[labels], labels)
        perms = torch.from_numpy(np.stack([self.rng.permutation(3) for _ in range(b)]))
        x = torch.gather(x, -1, perms.view(b, 1, 1, 1, 3).expand_as(x))
        gain = torch.from_numpy(self.rng.uniform(0.75, 1.25, b).astype(np.float32)).view(b, 1, 1, 1, 1)
        x = (x.to(torch.float32) * gain).clamp(0, 255).round().to(torch.uint8)
        return x, labels

    def video(self, crops: torch.Tensor, label: int, overlap: np.ndarray, which: tuple[bool, bool, bool]):
        """Transform a whole video's clips ``[K, T, H, W, 3]`` (time reversal also reverses the clip order)."""
        which = tuple(w and ok for w, ok in zip(which, self.allowed))
        for on, fmap, dim in zip(which, self.maps, self.dims):
            if on:
                crops = crops.flip(dim)
                label = int(fmap[label])
        if which[2]:
            crops, overlap = crops.flip(0), overlap[::-1].copy()
        return crops, label, overlap


def load_set(videos_dirs, spec: ModelSpec, limit: int | None = None, progress: bool = True) -> list[VideoClips]:
    """Decode the labelled videos of one or several datasets (``limit``: first N in total).

    Each entry is a dataset in any layout :class:`~gcf_trt.datasets.VideoSet` reads, or a
    :class:`VideoSet` already opened (e.g. the training side of a split).
    """
    items = [videos_dirs] if isinstance(videos_dirs, (str, Path, VideoSet)) else list(videos_dirs)
    sets = [d if isinstance(d, VideoSet) else VideoSet(d, labels=spec.labels) for d in items]
    pairs = [(vs, i) for vs in sets for i in range(len(vs))]
    if limit is not None:
        pairs = pairs[:limit]
    label_index = {name: i for i, name in enumerate(spec.labels)}
    out = []
    with progress_bar(pairs, desc="decode", unit="video", enabled=progress) as bar:
        for vs, i in bar:
            frames, rec = vs[i]
            if rec.label not in label_index:
                raise InputError(f"{rec.path.name}: label {rec.label!r} is not one of the model's labels")
            v = load_video_clips(frames, rec, spec, label_index[rec.label])
            if v.starts:
                out.append(v)
    if not out:
        raise InputError(f"no video in {', '.join(str(vs.root) for vs in sets)} is long enough for one clip "
                         f"of {spec.clip_len} frames", hint="use longer videos or a smaller --clip-len")
    return out
