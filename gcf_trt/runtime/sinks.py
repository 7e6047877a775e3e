"""Output sinks of a live run: where predictions, frames, segments and gaps go.

After jetson-inference's videoSource/videoOutput: a run (:func:`gcf_trt.runtime.pipeline.run_streams`)
reads sources and hands what it sees to a list of sinks, so an app is only wiring.  The sinks
here are JSON lines (:class:`JsonLinesSink`), an annotated video written atomically in a
browser-playable codec where this machine has one (:class:`VideoSink`) and an OpenCV window
(:class:`ShowSink`); the live web view is :class:`gcf_trt.runtime.serve.LiveServer`, action
events are :mod:`gcf_trt.runtime.events`.

A sink's methods are called from the thread that runs inference, except :meth:`Sink.frame`,
which with several sources is called from each source's reader thread: it must be cheap and
thread-safe (keep a reference, never encode there).  Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TextIO

import numpy as np

from ..errors import InputError, OutputError
from ..segments import Segment

if TYPE_CHECKING:
    from .sources import SourceFrame, SourceGap
    from .stream import Prediction

DEFAULT_OUTPUT_FPS = 25.0


@dataclass
class StreamInfo:
    """One stream of a run: its id (position, from 0), redacted source, fps and liveness."""

    id: int
    source: str
    fps: float | None
    live: bool


@dataclass
class SegmentEvent:
    """A completed action segment of one stream, with the times a consumer needs.

    ``label``/``label_score``: the best-scored prediction made while the segment's clips were
    in the ring; ``score``: the segment's mean gate (as :class:`~gcf_trt.segments.Segment`);
    ``start``/``end``: source frames; times are the stream times and wall-clock times of the
    first and last frame (None when unknown).
    """

    stream: int
    source: str
    segment: Segment
    label: str | None
    label_score: float | None
    start_stream_time_s: float | None
    end_stream_time_s: float | None
    start_wall_time: float | None
    end_wall_time: float | None

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None, n: int = 3) -> float | None:
            return None if v is None else round(float(v), n)
        return {"stream": self.stream, "source": self.source, **self.segment.to_dict(), "label": self.label,
                "label_score": r(self.label_score, 6), "start_stream_time_s": r(self.start_stream_time_s),
                "end_stream_time_s": r(self.end_stream_time_s), "start_wall_time": r(self.start_wall_time),
                "end_wall_time": r(self.end_wall_time)}


@dataclass
class PredictionEvent:
    """A prediction of one stream, its JSON line (``record``) and the segments it completed."""

    stream: int
    source: str
    prediction: Any
    record: dict[str, Any]
    segments: list[SegmentEvent] = field(default_factory=list)


class RunView(Protocol):
    """What a sink may read of the run it belongs to (:class:`gcf_trt.runtime.pipeline.LiveRun`)."""

    streams: Sequence[StreamInfo]
    spec: Any                                   # the engines' ModelSpec
    say: Callable[[str], None]                  # one line to the user (stderr for the CLI)
    note: Callable[[str], None]                 # an informational line (not shown with --quiet)

    def health(self, stream: int) -> dict[str, Any]: ...


class Sink:
    """Base class: every hook is optional.  ``wants_frames`` asks for :meth:`frame` calls."""

    wants_frames = False
    multi_stream = True  # False: the sink takes a single source (a video file, a window)

    def start(self, run: RunView) -> None:
        """The run is about to read its sources (``run.streams``, ``run.spec``, ``run.health()``)."""

    def frame(self, stream: int, frame: "SourceFrame", latest: "Prediction | None") -> None:
        """A decoded frame of ``stream`` and the stream's latest prediction (None before the first)."""

    def prediction(self, event: "PredictionEvent") -> None:
        """A prediction, with its JSON record and the segments it completed."""

    def segment(self, event: "SegmentEvent") -> None:
        """A completed action segment (with stream and wall-clock times)."""

    def gap(self, stream: int, gap: "SourceGap") -> None:
        """A live source dropped and came back."""

    def close(self, ok: bool) -> None:
        """The run ended; ``ok`` is False when it ended in an error (discard partial outputs)."""


# ----------------------------------------------------------------------------- JSON lines
class JsonLinesSink(Sink):
    """One JSON object per prediction, flushed per line, to a file or stdout (``path=None``)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = path
        if path is None:
            self._out: TextIO = sys.stdout
        else:
            try:
                self._out = open(path, "w", encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"cannot write --jsonl {path}: {exc.strerror}") from exc

    def prediction(self, event: "PredictionEvent") -> None:
        self._out.write(json.dumps(event.record) + "\n")
        self._out.flush()

    def close(self, ok: bool) -> None:
        if self.path is not None:
            self._out.close()


# ----------------------------------------------------------------------------- video
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi")


@dataclass
class VideoCodec:
    """How :class:`VideoSink` encodes: ``name`` (``h264``, ``vp9``, ``mpeg4``, ``mjpeg``), the
    encoder used (``how``) and, when it is not H.264, why (``why``)."""

    name: str
    how: str
    fourcc: str | None = None        # OpenCV writer; None = the ffmpeg binary
    why: str = ""
    browser_playable: bool = True

    def describe(self) -> str:
        text = f"{self.name.upper() if self.name != 'vp9' else 'VP9'} ({self.how})"
        return f"{text}; {self.why}" if self.why else text


def _opencv_can_write(fourcc: str, suffix: str) -> bool:
    """Whether this OpenCV's FFmpeg has an encoder for ``fourcc`` in a ``suffix`` container."""
    import tempfile

    import cv2
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"probe{suffix}")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 25.0, (64, 64))
        ok = writer.isOpened()
        if ok:
            writer.write(np.zeros((64, 64, 3), np.uint8))
        writer.release()
        return ok and os.path.getsize(path) > 0


def _ffmpeg_with_libx264() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    try:
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if re.search(r"^\s*V\S*\s+libx264\s", encoders, re.MULTILINE) else None


def choose_codec(suffix: str) -> VideoCodec:
    """The best codec this machine can write into a ``suffix`` file, tried in order:
    H.264 from OpenCV's FFmpeg (``avc1``), H.264 from the ``ffmpeg`` binary (libx264), VP9 from
    OpenCV (browsers play VP9 in MP4 too), then MPEG-4 Part 2 (``mp4v``, which browsers do not
    play).  ``.avi`` is always Motion JPEG.  The pip wheels of OpenCV ship an FFmpeg without an
    H.264 encoder (licensing), which is why the order matters."""
    import cv2  # noqa: F401 - fail here, not in a probe, if OpenCV is missing
    if suffix == ".avi":
        return VideoCodec("mjpeg", "OpenCV, Motion JPEG in AVI", "MJPG", browser_playable=False)
    log = os.environ.get("OPENCV_FFMPEG_LOGLEVEL")
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # a failed probe must not print FFmpeg's errors
    try:
        if _opencv_can_write("avc1", suffix):
            return VideoCodec("h264", "OpenCV's FFmpeg", "avc1")
        exe = _ffmpeg_with_libx264()
        if exe is not None:
            return VideoCodec("h264", f"libx264 through {exe}")
        missing = "this OpenCV's FFmpeg has no H.264 encoder and no ffmpeg with libx264 is on PATH"
        if suffix in (".mp4", ".m4v", ".mkv") and _opencv_can_write("vp09", suffix):
            return VideoCodec("vp9", "OpenCV's FFmpeg", "vp09", why=missing + " (install ffmpeg for H.264)")
        return VideoCodec("mpeg4", "OpenCV's FFmpeg, mp4v", "mp4v", browser_playable=False,
                          why=missing + "; browsers will not play this file (install ffmpeg for H.264)")
    finally:
        if log is None:
            os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)
        else:
            os.environ["OPENCV_FFMPEG_LOGLEVEL"] = log


def check_video_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it has a video extension and a writable directory, else the error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise InputError(f"--output {path} has an unsupported extension {suffix!r}",
                         hint=f"use one of {', '.join(VIDEO_EXTENSIONS)}")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OutputError(f"cannot write {path}: {path.parent} is not a writable directory")
    return path


class AtomicVideoWriter:
    """Frames into a hidden temp file beside ``path``, renamed over ``path`` on :meth:`commit`
    (so a reader never sees half a video), removed on :meth:`abort`.

    Args:
        path: the video to write (``.mp4``, ``.m4v``, ``.mov``, ``.mkv``, ``.avi``).
        fps: frames per second of the output.
        codec: a :class:`VideoCodec` (default: :func:`choose_codec` for the extension).
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: VideoCodec | None = None):
        self.path = check_video_path(path)
        suffix = self.path.suffix.lower()
        self.codec = codec or choose_codec(suffix)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{suffix}")
        self.fps = float(fps)
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._writer: Any = None
        self._proc: subprocess.Popen | None = None

    def _open(self, w: int, h: int) -> None:
        import cv2
        self.size = (w, h)
        if self.codec.fourcc is not None:
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.codec.fourcc), self.fps, self.size)
            if not self._writer.isOpened():
                self._writer = None
                self.tmp.unlink(missing_ok=True)
                raise OutputError(f"OpenCV cannot write a {self.codec.fourcc} video to {self.path}")
            return
        # yuv420p and even sizes: what every browser's H.264 decoder takes; faststart puts the
        # index first so the file plays while it downloads.
        exe = self.codec.how.split(" through ", 1)[1]
        self._proc = subprocess.Popen(
            [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
             "-s", f"{w}x{h}", "-r", f"{self.fps:g}", "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
             "-f", "mp4" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "matroska", str(self.tmp)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        """Append one BGR uint8 frame (resized to the first frame's size if the source changed)."""
        import cv2
        if self.size is None:
            self._open(frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        if self._writer is not None:
            self._writer.write(frame)
        else:
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
            except BrokenPipeError:
                err = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise OutputError(f"ffmpeg stopped writing {self.path}: {err[-1] if err else 'no message'}") from None
        self.frames += 1

    def _finish(self) -> bool:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            return True
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()
            return proc.returncode == 0
        return False

    def commit(self) -> None:
        """Finish the file and rename it over ``path``."""
        if self._finish():
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if self.frames:
                raise OutputError(f"the encoder failed to finish {self.path}")

    def abort(self) -> None:
        """Drop the partial file."""
        self._finish()
        self.tmp.unlink(missing_ok=True)


def _annotate(frame: "SourceFrame", latest: "Prediction | None", ring_size: int) -> np.ndarray | None:
    from ..preprocess import as_bgr
    from .draw import draw_prediction
    try:
        bgr = as_bgr(frame.image)
    except Exception:  # noqa: BLE001 - a bad frame was counted by the classifier; nothing to draw
        return None
    return draw_prediction(bgr, latest, ring_size, copy=True)


class VideoSink(Sink):
    """Every frame with its latest prediction drawn on it, into one video file (single source).

    ``fps``: the output rate (default: the source's, else 25).  The codec and why it was chosen
    are in :attr:`codec` (see :func:`choose_codec`) and reported at the start of the run.
    """

    wants_frames = True
    multi_stream = False

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path, self._fps = check_video_path(path), fps  # checked now, before the engines load
        self.writer: AtomicVideoWriter | None = None
        self.codec = choose_codec(self.path.suffix.lower())
        self._ring = 0

    def start(self, run: RunView) -> None:
        self._ring = run.spec.ring_size
        self.writer = AtomicVideoWriter(self.path, self._fps or run.streams[0].fps or DEFAULT_OUTPUT_FPS, self.codec)
        # A fallback codec is a warning (always said); the H.264 we wanted is only a note.
        (run.say if self.codec.why else run.note)(f"video: {self.path} as {self.codec.describe()}")

    def frame(self, stream: int, frame: "SourceFrame", latest: "Prediction | None") -> None:
        canvas = _annotate(frame, latest, self._ring)
        if canvas is not None:
            self.writer.write(canvas)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.commit() if ok else self.writer.abort()


# ----------------------------------------------------------------------------- window
def check_display() -> None:
    """A window needs a GUI-enabled OpenCV and a display; say clearly which is missing."""
    import cv2
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if not gui or gui.group(1).upper() in ("NONE", "NO"):
        raise InputError("--show needs an OpenCV with a GUI backend; this one is headless "
                         "(opencv-python-headless)",
                         hint="use --serve 127.0.0.1:8080 (a browser view) or --output video.mp4 instead")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set",
                         hint="use --serve 127.0.0.1:8080 (a browser view) or --output video.mp4 instead")


class StopRequested(Exception):
    """A sink asks the run to end (e.g. q or Esc in the window); the run ends cleanly."""


class ShowSink(Sink):
    """The annotated frames in an OpenCV window (single source); q or Esc stops the run."""

    wants_frames = True
    multi_stream = False

    def __init__(self, title: str = "gcf-trt"):
        check_display()
        self.title, self._ring = title, 0

    def start(self, run: RunView) -> None:
        self._ring = run.spec.ring_size

    def frame(self, stream: int, frame: "SourceFrame", latest: "Prediction | None") -> None:
        import cv2
        canvas = _annotate(frame, latest, self._ring)
        if canvas is None:
            return
        cv2.imshow(self.title, canvas)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise StopRequested()

    def close(self, ok: bool) -> None:
        import cv2
        cv2.destroyAllWindows()


__all__ = ["AtomicVideoWriter", "JsonLinesSink", "ShowSink", "Sink", "StopRequested", "VideoCodec", "VideoSink",
           "check_display", "choose_codec"]
