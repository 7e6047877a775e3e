"""Calibration data: clips cut from the user's videos exactly as the stream cuts them.

:func:`calibration_split` gives the INT8 calibration clips and, from *other* videos, the held-out
clip sequences the agreement gate decides on (:mod:`.agreement`); :class:`ClipDataReader` feeds
ONNX Runtime's calibrator.  Design and measurements: docs/INT8.md.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..errors import CalibrationError, InputError
from ..preprocess import clips_from_frames
from ..progress import progress_bar
from ..spec import ModelSpec

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
GATE_PREDICTIONS = 256  # held-out predictions the gate decides on by default (resolves 99%)


def _list_videos(calib_dir: Path) -> list[Path]:
    return sorted(p for p in calib_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _read_frames(path: Path, limit: int) -> Iterable[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return
        count = 0
        while count < limit:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            count += 1
            yield frame
    finally:
        cap.release()


def calibration_clips(calib_dir: str | os.PathLike, spec: ModelSpec, max_clips: int = 64, seed: int = 0,
                      *, max_clips_per_video: int | None = None, report: dict | None = None,
                      progress: bool = False) -> np.ndarray:
    """Clips ``float32 [K, 3, T, H, W]`` cut from the videos in ``calib_dir`` (recursively).

    Clips are assembled exactly as the stream assembles them (:func:`clips_from_frames`), from at
    most ``max_clips_per_video`` clips per video (default: an even share of ``max_clips``, at
    least 1), then at most ``max_clips`` are drawn with ``seed`` and returned in source order.

    Args:
        report: if given, filled with what was used (videos, their clip counts, skipped files).

    Raises:
        CalibrationError: the directory is missing, holds no readable video, or every video is
            shorter than one clip.
    """
    if max_clips < 1:
        raise InputError(f"max_clips must be >= 1, got {max_clips}")
    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise CalibrationError(f"calibration directory {calib_dir} does not exist",
                               hint="pass --calib DIR with a few real videos (mp4/avi/mkv/mov) "
                                    "longer than one clip")
    videos = _list_videos(calib_dir)
    if not videos:
        raise CalibrationError(f"no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) in {calib_dir}")
    per_video = max_clips_per_video or max(1, -(-max_clips // len(videos)))
    read = _read_video_clips(calib_dir, videos, spec, per_video, progress)
    if not read.chunks:
        read.raise_empty(calib_dir, spec)
    clips = np.concatenate(read.chunks)
    if len(clips) > max_clips:
        keep = np.sort(np.random.default_rng(seed).choice(len(clips), max_clips, replace=False))
        clips = clips[keep]
    if report is not None:
        report.update({"dir": str(calib_dir), "videos": read.used, "unreadable": read.unreadable,
                       "too_short": read.short, "num_clips": int(len(clips)), "seed": seed,
                       "preprocessing": "gcf_trt.preprocess.clips_from_frames"})
    return np.ascontiguousarray(clips, dtype=np.float32)


class _VideoClips:
    """Clips per readable video, and what was skipped (for reports and errors)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.used: list[dict[str, Any]] = []
        self.unreadable: list[str] = []
        self.short: list[str] = []

    def raise_empty(self, calib_dir: Path, spec: ModelSpec) -> None:
        if self.short:
            raise CalibrationError(
                f"every video in {calib_dir} is shorter than one clip "
                f"({spec.frames_per_clip} frames needed): {', '.join(self.short[:5])}",
                hint=f"add videos with at least {spec.frames_per_clip} frames")
        raise CalibrationError(f"no readable video in {calib_dir} (OpenCV could not decode: "
                               f"{', '.join(self.unreadable[:5])})",
                               hint="put videos OpenCV can decode (mp4/avi/mkv/mov) into the calib dir")


def _read_video_clips(calib_dir: Path, videos: Sequence[Path], spec: ModelSpec, per_video: int,
                      progress: bool) -> _VideoClips:
    """At most ``per_video`` clips of each video, assembled exactly as the stream assembles them."""
    frames_needed = ((per_video - 1) * spec.stride + spec.clip_len - 1) * spec.frame_step + 1
    read = _VideoClips()
    with progress_bar(videos, desc="calibration videos", unit="video", enabled=progress) as bar:
        for path in bar:
            frames = list(_read_frames(path, frames_needed))
            if not frames:
                read.unreadable.append(path.name)
                continue
            clips, _ = clips_from_frames(frames, spec)
            if len(clips) == 0:
                read.short.append(f"{path.name} ({len(frames)} frames)")
                continue
            clips = np.ascontiguousarray(clips[:per_video], dtype=np.float32)
            read.chunks.append(clips)
            read.used.append({"file": str(path.relative_to(calib_dir)), "clips": int(len(clips))})
    return read


def calibration_split(calib_dir: str | os.PathLike, spec: ModelSpec, *, max_clips: int = 64,
                      gate_predictions: int = GATE_PREDICTIONS, seed: int = 0,
                      max_clips_per_video: int = 64, report: dict | None = None,
                      progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Calibration clips and, from *other* videos, the held-out clip sequences of the gate.

    The videos are shuffled with ``seed``; whole videos are held out until their clips give at
    least ``gate_predictions`` ring predictions (one per clip, as a stream predicts after each
    clip), the remaining videos give at most ``max_clips`` calibration clips.  No video feeds
    both sides, so the gate measures how INT8 generalises, not how it fits its calibration.

    Returns:
        ``(calibration [K,3,T,H,W], holdout)`` where ``holdout`` is one ``[k_i,3,T,H,W]`` array
        per held-out video, in stream order (pass it to :func:`agreement`).

    Raises:
        CalibrationError: no readable video, or too few videos/clips for the gate plus at least
            one calibration video (the message says how many are there and how many are needed).
    """
    if max_clips < 1 or gate_predictions < 1 or max_clips_per_video < 1:
        raise InputError("max_clips, gate_predictions and max_clips_per_video must be >= 1")
    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise CalibrationError(f"calibration directory {calib_dir} does not exist",
                               hint="pass --calib DIR with real videos (mp4/avi/mkv/mov) longer than one clip")
    videos = _list_videos(calib_dir)
    if not videos:
        raise CalibrationError(f"no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) in {calib_dir}")
    order = [videos[i] for i in np.random.default_rng(seed).permutation(len(videos))]
    read = _read_video_clips(calib_dir, order, spec, max_clips_per_video, progress)
    if not read.chunks:
        read.raise_empty(calib_dir, spec)
    holdout, held_files, pool, pool_files = [], [], [], []
    for clips, used in zip(read.chunks, read.used):
        if sum(len(c) for c in holdout) < gate_predictions:
            holdout.append(clips)
            held_files.append(used)
        else:
            pool.append(clips)
            pool_files.append(used)
    have = sum(len(c) for c in read.chunks)
    held = sum(len(c) for c in holdout)
    if held < gate_predictions or not pool:
        per = have / len(read.chunks)
        more = max(1, int(np.ceil((gate_predictions - held + per) / max(per, 1.0)))) if not pool else \
            max(1, int(np.ceil((gate_predictions - held) / max(per, 1.0))))
        raise CalibrationError(
            f"the agreement gate needs {gate_predictions} held-out predictions from videos not used for "
            f"calibration, plus at least one video to calibrate on; {calib_dir} gives {have} clips in "
            f"{len(read.chunks)} readable video(s) (at most {max_clips_per_video} clips read per video)",
            hint=f"add about {more} more video(s) like these to the calib dir, or lower --gate-predictions "
                 f"(fewer predictions resolve the agreement less precisely)")
    calib = np.concatenate(pool)
    if len(calib) > max_clips:
        keep = np.sort(np.random.default_rng(seed + 1).choice(len(calib), max_clips, replace=False))
        calib = calib[keep]
    if report is not None:
        report.update({"dir": str(calib_dir), "videos": pool_files, "holdout_videos": held_files,
                       "unreadable": read.unreadable, "too_short": read.short, "seed": seed,
                       "num_clips": int(len(calib)) + held, "calibration_clips": int(len(calib)),
                       "holdout_clips": int(held), "holdout_split": "by video (disjoint from calibration)",
                       "preprocessing": "gcf_trt.preprocess.clips_from_frames"})
    return np.ascontiguousarray(calib, dtype=np.float32), holdout


def split_holdout(clips: np.ndarray, holdout: float = 0.25, seed: int = 0,
                  min_holdout: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Split clips into (calibration, held-out); both keep source order and are non-empty.

    Raises:
        CalibrationError: fewer than 2 clips.
    """
    n = len(clips)
    if n < 2:
        raise CalibrationError(f"only {n} calibration clip(s): need at least 2 (some are held out "
                               f"to check agreement with FP32)",
                               hint="add more or longer videos to the calib dir")
    k = min(n - 1, max(min_holdout, int(round(n * holdout))))
    held = np.zeros(n, bool)
    held[np.random.default_rng(seed + 1).choice(n, k, replace=False)] = True
    return clips[~held], clips[held]


class ClipDataReader(CalibrationDataReader):
    """ONNX Runtime calibration data reader over preprocessed clips (``{"clip": [b,3,T,H,W]}``)."""

    def __init__(self, clips: np.ndarray, input_name: str = "clip", batch: int = 1,
                 progress: bool = False):
        self.clips, self.input_name, self.batch = clips, input_name, max(1, int(batch))
        self._pos = 0
        self._bar = progress_bar(total=len(clips), desc="calibrating", unit="clip") if progress else None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.clips):
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return None
        batch = self.clips[self._pos:self._pos + self.batch]
        self._pos += len(batch)
        if self._bar is not None:
            self._bar.update(len(batch))
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self._pos = 0

    def close(self) -> None:
        """Close the progress bar (also when calibration stops on an error)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
