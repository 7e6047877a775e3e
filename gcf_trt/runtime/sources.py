"""Video sources by URI: files, cameras, RTSP/HTTP streams, GStreamer pipelines, frame iterators.

:func:`open_source` returns a :class:`Source`; iterating it yields :class:`SourceFrame` items
and, for live sources that dropped and came back, :class:`SourceGap` items (frames and seconds
missed), so the consumer can report the gap instead of crashing.

URIs (see docs/STREAMING.md):

=====================================  ==============================================
``clip.mp4``, ``file:///v/clip.mp4``   a video file (not live; can loop)
``0``, ``/dev/video0``                 a camera (live)
``rtsp://``, ``rtsps://``, ``rtmp://``, a network stream via OpenCV's FFMPEG backend (live)
``http://``, ``https://``
``gst:PIPELINE`` or ``a ! b ! appsink`` a GStreamer pipeline, only if OpenCV was built with it
any iterable of numpy frames            frames the app captured itself (not live)
=====================================  ==============================================

Credentials in URIs (``rtsp://user:pass@host``) are never logged or put in messages: every
message uses :func:`~gcf_trt.runtime.uris.redact`.  Parsing and redaction are in
:mod:`gcf_trt.runtime.uris`; this module opens the sources and runs the capture thread.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from ..errors import InputError, SourceError
from .uris import SourceSpec, parse_uri

log = logging.getLogger(__name__)

DROP_POLICIES = ("block", "drop_oldest")
RTSP_TRANSPORTS = ("tcp", "udp")
# OpenCV's FFMPEG backend takes demuxer options only from this environment variable, read when a
# capture opens; the lock keeps two sources opening at once from seeing each other's options.
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()

# ----------------------------------------------------------------------------- items
@dataclass
class SourceFrame:
    """One decoded frame.

    Attributes:
        index: frames since the source opened (dropped and rate-skipped frames included,
            reconnect gaps estimated).
        timestamp: monotonic seconds when it was decoded (for latency and rates).
        stream_time_s: the frame's time in the stream: ``index / fps`` for files (exact, also
            across loops), the decoder's position (``CAP_PROP_POS_MSEC``) for live sources, made
            monotonic across reconnects (the gap's duration is added); seconds since the first
            frame when neither is known.
        wall_time: wall-clock (``time.time()``, Unix seconds) when it was decoded.
    """

    image: np.ndarray
    index: int
    timestamp: float
    stream_time_s: float | None = None
    wall_time: float | None = None


@dataclass
class SourceGap:
    """A live source dropped and was reopened: roughly ``frames_missed`` frames over ``seconds``."""

    frames_missed: int
    seconds: float
    attempts: int
    reason: str


@dataclass
class SourceStats:
    frames_read: int = 0       # frames decoded from the device/file/stream
    frames_yielded: int = 0    # frames handed to the consumer
    frames_skipped: int = 0    # skipped on purpose by fps/step subsampling
    frames_dropped: int = 0    # dropped by the bounded queue (drop_oldest policy)
    gaps: int = 0
    reconnects: int = 0
    loops: int = 0
    frames_corrupt: int = 0    # file frames the decoder failed on: skipped, the file goes on


@dataclass
class Backoff:
    """Reconnect policy of a live source: delays ``initial * factor**k`` capped at ``maximum``.

    ``max_attempts`` bounds the attempts per outage (None = keep trying forever).
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0
    max_attempts: int | None = 8

    def delays(self) -> Iterator[float]:
        delay, attempt = self.initial, 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield min(delay, self.maximum)
            delay *= self.factor
            attempt += 1


# ----------------------------------------------------------------------------- sources
class Source:
    """Iterable of :class:`SourceFrame` / :class:`SourceGap`; close it (or use ``with``)."""

    uri: str = ""     # redacted
    live: bool = False

    def __init__(self) -> None:
        self.stats = SourceStats()

    @property
    def fps(self) -> float | None:
        """Frames per second the source delivers, if known."""
        return None

    def __iter__(self) -> Iterator[SourceFrame | SourceGap]:
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        """Only the images (gaps are skipped) - for apps that do not care about gaps."""
        for item in self:
            if isinstance(item, SourceFrame):
                yield item.image

    def request_stop(self) -> None:
        """Ask a running iteration (possibly in another thread) to end soon, releasing nothing.

        :class:`ThreadedSource` calls this before :meth:`close` so a decoder thread is never
        pulled out from under a ``VideoCapture.grab()`` it is blocked in.
        """

    def close(self) -> None:
        """Release the device/file/thread.  Idempotent."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, live={self.live})"


class _RateLimiter:
    """Keeps a frame every ``step`` frames and/or at most ``target_fps`` (by source fps or clock)."""

    def __init__(self, step: int = 1, target_fps: float | None = None, native_fps: float | None = None):
        self.step, self.target, self.native = step, target_fps, native_fps
        self._budget = 0.0
        self._last_kept: float | None = None

    def keep(self, index: int, timestamp: float) -> bool:
        if self.step > 1 and index % self.step:
            return False
        if not self.target:
            return True
        if self.native and self.native > 0:
            # Accumulate target/native per (stepped) frame: keeps ~target fps of a known rate.
            self._budget += self.target * self.step / self.native
            if self._budget >= 1.0 - 1e-9 or index == 0:
                self._budget = max(0.0, self._budget - 1.0)
                return True
            return False
        if self._last_kept is None or timestamp - self._last_kept >= 1.0 / self.target - 1e-4:
            self._last_kept = timestamp
            return True
        return False


class VideoCaptureSource(Source):
    """A file, camera, stream or GStreamer pipeline read with ``cv2.VideoCapture``.

    A file ends at its last frame (or loops with ``loop=True``); a frame the decoder fails on
    in the middle of a file is skipped and counted (``stats.frames_corrupt``), up to
    ``MAX_CORRUPT_RUN`` in a row (more is taken as the end of the file).  A live source whose read
    fails is reopened following ``reconnect`` (exponential backoff, bounded); a successful
    reopen yields a :class:`SourceGap`, and giving up raises :class:`SourceError`.
    """

    MAX_CORRUPT_RUN = 32

    def __init__(self, spec: SourceSpec, *, loop: bool = False, fps: float | None = None, step: int = 1,
                 reconnect: Backoff | None = None, open_timeout_ms: int = 10000, read_timeout_ms: int = 5000,
                 transport: str | None = None):
        super().__init__()
        if loop and spec.live:
            raise InputError(f"loop applies to files, not to the live source {spec.display}")
        if transport is not None:
            if transport not in RTSP_TRANSPORTS:
                raise InputError(f"unknown RTSP transport {transport!r}; use one of {', '.join(RTSP_TRANSPORTS)}")
            if not (spec.kind == "stream" and str(spec.target).lower().startswith(("rtsp://", "rtsps://"))):
                raise InputError(f"an RTSP transport applies to rtsp:// sources, not to {spec.display}",
                                 hint="drop the transport option for this source")
        self.transport = transport
        self._time_offset = 0.0       # added to the decoder's position: grows by each reconnect gap
        self._last_stream_time = 0.0
        self._first_frame_at: float | None = None
        self.spec, self.uri, self.live = spec, spec.display, spec.live
        self.loop = loop
        self.reconnect = reconnect or Backoff()
        self._timeouts = (open_timeout_ms, read_timeout_ms)
        self._stop_event = threading.Event()  # wakes a backoff sleep when the source is closed
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self._closed = False
        self._open_or_raise()
        self._limiter = _RateLimiter(step, fps, self.fps)

    def _open(self) -> cv2.VideoCapture | None:
        params: list[int] = []
        if self.spec.kind == "stream":  # FFMPEG honours these; they stop a dead server hanging us
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._timeouts[0], cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._timeouts[1]]
        if self.transport is None:
            cap = cv2.VideoCapture(self.spec.target, self.spec.api, params)
        else:
            with _OPEN_LOCK:
                previous = os.environ.get(_FFMPEG_OPTIONS_ENV)
                os.environ[_FFMPEG_OPTIONS_ENV] = f"rtsp_transport;{self.transport}"
                try:
                    cap = cv2.VideoCapture(self.spec.target, self.spec.api, params)
                finally:
                    if previous is None:
                        os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
                    else:
                        os.environ[_FFMPEG_OPTIONS_ENV] = previous
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _stream_time(self, index: int, now: float) -> float:
        """The frame's stream time (see :class:`SourceFrame`); monotonic non-decreasing."""
        if self._first_frame_at is None:
            self._first_frame_at = now
        value: float | None = None
        if not self.live and self.fps:
            value = index / self.fps
        elif self._cap is not None:
            pos = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            if pos and pos > 0:
                value = self._time_offset + pos / 1e3
        if value is None:
            value = now - self._first_frame_at
        value = max(value, self._last_stream_time)  # a decoder's position can step back a frame
        self._last_stream_time = value
        return value

    def _open_or_raise(self) -> None:
        self._cap = self._open()
        if self._cap is None:
            if self.spec.kind == "file" and os.path.getsize(self.spec.target) == 0:
                raise SourceError(f"video file {self.uri!r} is empty (0 bytes)",
                                  hint="the recording or copy failed: re-record or re-copy the file")
            hints = {"file": "check that the file is a video OpenCV/FFmpeg can decode",
                     "camera": "check the camera index/device and that no other program holds it",
                     "stream": "check the URL, credentials, network and that the server is up",
                     "gstreamer": "test the pipeline with gst-launch-1.0"}
            raise SourceError(f"cannot open {self.spec.kind} source {self.uri!r}", hint=hints[self.spec.kind])
        log.debug("opened %s with %s", self.uri, self._cap.getBackendName())
        self._remember_fps()

    def _remember_fps(self) -> None:
        value = self._cap.get(cv2.CAP_PROP_FPS) if self._cap is not None else 0.0
        if value and 0 < value < 1000:  # 0 or absurd values mean "unknown" for many cameras/streams
            self._fps = float(value)

    @property
    def fps(self) -> float | None:
        """The frame rate OpenCV reports (kept after close); None if unknown."""
        return self._fps

    def __iter__(self) -> Iterator[SourceFrame | SourceGap]:
        index = 0
        failed = 0  # consecutive failed grabs of a file: corrupt frames, or its end
        while not self._closed and self._cap is not None:
            # grab() then retrieve() only for kept frames: skipped frames are not colour-converted.
            ok = self._cap.grab()
            now = time.monotonic()
            if not ok and not self.live and failed < self.MAX_CORRUPT_RUN:
                failed += 1  # FFmpeg goes on after an undecodable packet: try the next frame
                continue
            if ok and failed:  # the file went on, so those were corrupt frames: skipped, counted
                log.warning("%s: skipped %d undecodable frame(s) at frame %d", self.uri, failed, index)
                self.stats.frames_corrupt += failed
                index += failed
            failed = 0
            if ok:
                self.stats.frames_read += 1
                if not self._limiter.keep(index, now):
                    self.stats.frames_skipped += 1
                    index += 1
                    continue
                ok, image = self._cap.retrieve()
                if ok and image is not None:
                    self.stats.frames_yielded += 1
                    yield SourceFrame(image, index, now, self._stream_time(index, now), time.time())
                    index += 1
                    continue
            if not self.live:
                if self.loop and self.stats.frames_read > 0:
                    self._cap.release()
                    self._open_or_raise()
                    self.stats.loops += 1
                    continue
                return
            gap = self._reopen(now)
            if gap is None:
                return
            index += gap.frames_missed
            yield gap

    def _reopen(self, lost_at: float) -> SourceGap | None:
        """Reconnect a dropped live source with exponential backoff; None if closed meanwhile."""
        if self._cap is not None:
            self._cap.release()
        log.warning("source %s dropped; reconnecting", self.uri)
        attempts = 0
        for delay in self.reconnect.delays():
            if self._stop_event.wait(delay) or self._closed:
                return None
            attempts += 1
            cap = self._open()
            if cap is not None:
                self._cap = cap
                self._remember_fps()
                seconds = time.monotonic() - lost_at
                rate = self.fps or 0.0
                # The reopened decoder counts from zero again: carry on from where the stream
                # stopped plus the outage, so stream time stays monotonic and shows the gap.
                self._time_offset = self._last_stream_time + seconds
                self.stats.gaps += 1
                self.stats.reconnects += 1
                log.warning("source %s back after %.1f s (%d attempts)", self.uri, seconds, attempts)
                return SourceGap(int(round(seconds * rate)), seconds, attempts, "source dropped, reconnected")
        self._cap = None
        raise SourceError(f"live source {self.uri!r} dropped and did not come back after {attempts} "
                          f"reconnect attempts ({time.monotonic() - lost_at:.1f} s)",
                          hint="check the camera/server; raise Backoff.max_attempts to wait longer")

    def request_stop(self) -> None:
        self._closed = True
        self._stop_event.set()

    def close(self) -> None:
        self.request_stop()
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class IteratorSource(Source):
    """Frames from any iterable of numpy arrays (an app's own capture loop)."""

    def __init__(self, frames: Iterable[np.ndarray], *, fps: float | None = None, step: int = 1,
                 live: bool = False):
        super().__init__()
        self._frames = frames
        self.uri, self.live = f"<{type(frames).__name__} of frames>", live
        self._limiter = _RateLimiter(step, fps, None)

    def __iter__(self) -> Iterator[SourceFrame]:
        start = None
        for index, image in enumerate(self._frames):
            self.stats.frames_read += 1
            now = time.monotonic()
            start = now if start is None else start
            if not self._limiter.keep(index, now):
                self.stats.frames_skipped += 1
                continue
            self.stats.frames_yielded += 1
            # No native rate is known for an app's frames: stream time is time since the first one.
            yield SourceFrame(image, index, now, now - start, time.time())

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if callable(close):
            close()


class ThreadedSource(Source):
    """Decodes ``inner`` in its own thread into a bounded queue.

    Drop policy when the consumer (inference) is slower than capture and the queue is full:

    * ``"block"``: the decoder waits - every frame is processed (default for files);
    * ``"drop_oldest"``: the oldest queued *frame* is discarded and counted in
      ``stats.frames_dropped`` - latency stays bounded (default for live sources).

    Gaps are never dropped.  An exception in the decoder thread is re-raised to the consumer.
    """

    _END = object()

    def __init__(self, inner: Source, *, queue_size: int = 16, drop: str = "block"):
        super().__init__()
        if drop not in DROP_POLICIES:
            raise InputError(f"unknown drop policy {drop!r}; use one of {', '.join(DROP_POLICIES)}")
        if int(queue_size) < 1:
            raise InputError(f"queue_size must be >= 1, got {queue_size}")
        self.inner, self.uri, self.live = inner, inner.uri, inner.live
        self.stats = inner.stats  # one set of counters: the decoder's and the queue's
        self.drop, self.queue_size = drop, int(queue_size)
        self._queue: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def fps(self) -> float | None:
        return self.inner.fps

    def _produce(self) -> None:
        try:
            for item in self.inner:
                with self._cond:
                    while (len(self._queue) >= self.queue_size and self.drop == "block" and not self._stop):
                        self._cond.wait(0.1)
                    if self._stop:
                        return
                    if len(self._queue) >= self.queue_size:  # drop_oldest
                        for i, queued in enumerate(self._queue):
                            if isinstance(queued, SourceFrame):
                                del self._queue[i]
                                self.stats.frames_dropped += 1
                                break
                    self._queue.append(item)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._error = exc
        finally:
            with self._cond:
                self._queue.append(self._END)
                self._cond.notify_all()
                stopping = self._stop
            if stopping:  # close() may have given up waiting for us: release here, in our thread
                self.inner.close()

    def __iter__(self) -> Iterator[SourceFrame | SourceGap]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="gcf-source", daemon=True)
            self._thread.start()
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait(0.1)
                item = self._queue.popleft()
                self._cond.notify_all()
            if item is self._END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.inner.request_stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # A decoder blocked in grab() returns within the read timeout; only then is it safe
            # to release the capture.  If it is still stuck, its own exit path releases it.
            thread.join(timeout=15)
            if thread.is_alive():
                log.warning("decoder thread of %s did not stop in time; it will release the source itself", self.uri)
                return
        self.inner.close()


def open_source(uri: Any, *, loop: bool = False, fps: float | None = None, step: int = 1,
                threaded: bool | None = None, queue_size: int = 16, drop: str | None = None,
                reconnect: Backoff | None = None, open_timeout_ms: int = 10000,
                read_timeout_ms: int = 5000, transport: str | None = None) -> Source:
    """Open a video source by URI (see the module docstring) or wrap an iterable of frames.

    Args:
        uri: path, ``file://``, camera index, ``/dev/videoN``, ``rtsp://``/``http(s)://`` URL,
            GStreamer pipeline, or any iterable of numpy frames.
        loop: restart a file at its end (files only).
        fps: target frame rate; frames are subsampled to about this rate.
        step: keep every ``step``-th frame (applied before ``fps``).
        threaded: decode in a background thread with a bounded queue (default: True for
            OpenCV sources, False for iterables).
        queue_size: bound of that queue.
        drop: ``"block"`` (default for files/iterables: nothing dropped) or ``"drop_oldest"``
            (default for live sources).
        reconnect: backoff policy for live sources (default :class:`Backoff`).
        transport: ``"tcp"`` or ``"udp"`` for ``rtsp://`` sources (default: FFmpeg's, which
            tries UDP first); TCP passes firewalls and NAT, UDP has lower latency on a clean LAN.

    Raises:
        SourceError: unknown scheme, missing file, GStreamer unsupported, cannot open.
    """
    if fps is not None and not fps > 0:
        raise InputError(f"fps must be > 0, got {fps}")
    if int(step) < 1:
        raise InputError(f"step must be >= 1, got {step}")
    if isinstance(uri, Source):
        return uri
    if isinstance(uri, np.ndarray):
        raise SourceError("a single numpy array is not a source", hint="pass an iterable of frames")
    if not isinstance(uri, (str, bytes, int, os.PathLike)) and isinstance(uri, Iterable):
        source: Source = IteratorSource(uri, fps=fps, step=step)
        threaded = bool(threaded)
    elif isinstance(uri, (str, int, os.PathLike)):
        spec = parse_uri(uri)
        source = VideoCaptureSource(spec, loop=loop, fps=fps, step=step, reconnect=reconnect,
                                    open_timeout_ms=open_timeout_ms, read_timeout_ms=read_timeout_ms,
                                    transport=transport)
        threaded = True if threaded is None else threaded
    else:
        raise SourceError(f"cannot use a {type(uri).__name__} as a video source")
    if transport is not None and not isinstance(source, VideoCaptureSource):
        raise InputError("an RTSP transport applies to rtsp:// sources, not to an iterable of frames")
    if not threaded:
        return source
    return ThreadedSource(source, queue_size=queue_size, drop=drop or ("drop_oldest" if source.live else "block"))


__all__ = ["RTSP_TRANSPORTS", "Backoff", "IteratorSource", "Source", "SourceFrame", "SourceGap", "SourceStats",
           "ThreadedSource", "VideoCaptureSource", "open_source"]
