"""``gcf-trt run SOURCE --engines DIR``: stream a video source and print predictions.

One JSON object per line (``Prediction.to_dict()``) to stdout or ``--jsonl FILE``, each line
flushed as soon as it is written.  ``--output video.mp4`` writes the frames with the label,
score and gate bar drawn on them (headless; written under a temporary name and renamed at the
end).  SIGINT/SIGTERM stop the stream cleanly: the lines so far are flushed, the video is
finalised, the summary is printed and the exit code is 0.  Never imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError, OutputError, VideoError

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
DEFAULT_OUTPUT_FPS = 25.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="stream a video file, camera or URL through an engines directory",
                       description="Stream SOURCE (file, file://, camera index, /dev/videoN, rtsp://, "
                                   "http(s)://, GStreamer pipeline) and write one JSON prediction per line.")
    p.add_argument("source", metavar="SOURCE", nargs="+",
                   help="video file, camera index, /dev/videoN, rtsp:// or http(s):// URL; several SOURCEs run as "
                        "one stream each, their clips batched together, each line tagged with its \"stream\"")
    p.add_argument("--engines", required=True, metavar="DIR", help="engines directory from 'gcf-trt build'")
    p.add_argument("--runtime", default=None, help="force a runtime (onnxruntime, openvino, tensorrt)")
    p.add_argument("--expect-model-hash", default=None, metavar="HASH",
                   help="refuse engines built from another model (the model_hash in manifest.json)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    p.add_argument("--top-k", type=int, default=5, help="classes listed per prediction (default 5)")
    p.add_argument("--jsonl", default=None, metavar="FILE", help="write the JSON lines here instead of stdout")
    p.add_argument("--output", default=None, metavar="VIDEO", help="write the annotated frames to this video")
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window (needs a display)")
    p.add_argument("--loop", action="store_true", help="restart a video file at its end")
    p.add_argument("--fps", type=float, default=None, help="subsample the source to about this frame rate")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N source frames")
    p.add_argument("--max-batch", type=int, default=8, help="several sources: most clips per backbone call (default 8)")
    p.add_argument("--flush-timeout-ms", type=float, default=50.0,
                   help="several sources: longest a clip waits for its batch to fill (default 50)")
    p.add_argument("--reconnect-attempts", type=int, default=8, metavar="N",
                   help="live sources: reconnect attempts per outage before giving up, 0 = forever (default 8)")
    p.add_argument("--reconnect-max-delay", type=float, default=10.0, metavar="S",
                   help="live sources: cap of the exponential backoff between attempts (default 10 s)")
    p.set_defaults(func=_run)


class _Stop(Exception):
    """Raised by the signal handler to leave a blocking read."""


class _SignalGuard:
    """SIGINT/SIGTERM -> stop.  Raises out of blocking waits, but never in the middle of writing
    a line or a frame (``critical`` section), so no half-written JSON line is left behind."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.critical = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalGuard":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        if not self.critical:
            raise _Stop()

    def check(self) -> None:
        if self.signal_name:
            raise _Stop()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _AtomicVideoWriter:
    """cv2.VideoWriter into a hidden temp file beside ``path``; renamed over ``path`` on commit."""

    def __init__(self, path: str, fps: float):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FOURCC:
            raise InputError(f"--output {self.path} has an unsupported extension {suffix!r}",
                             hint=f"use one of {', '.join(VIDEO_FOURCC)}")
        if not self.path.parent.is_dir() or not os.access(self.path.parent, os.W_OK):
            raise OutputError(f"cannot write {self.path}: {self.path.parent} is not a writable directory")
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{suffix}")
        self.fourcc, self.fps = VIDEO_FOURCC[suffix], fps
        self.size: tuple[int, int] | None = None
        self.writer = None
        self.frames = 0

    def write(self, frame) -> None:
        import cv2
        if self.writer is None:
            h, w = frame.shape[:2]
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                self.tmp.unlink(missing_ok=True)
                raise OutputError(f"OpenCV cannot write a {self.fourcc} video to {self.path}")
        if (frame.shape[1], frame.shape[0]) != self.size:  # the source changed resolution
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)
        self.frames += 1

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def _check_display() -> None:
    """--show needs a GUI-enabled OpenCV and a display; say clearly which is missing."""
    import cv2
    import re
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if not gui or gui.group(1).upper() in ("NONE", "NO"):
        raise InputError("--show needs an OpenCV with a GUI backend; this one is headless "
                         "(opencv-python-headless)",
                         hint="use --output video.mp4 instead, or install opencv-python on a machine with a display")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set",
                         hint="use --output video.mp4 instead, or run where a display is available")


def _open_lines(path: str | None) -> tuple[TextIO, bool]:
    if path is None:
        return sys.stdout, False
    try:
        return open(path, "w", encoding="utf-8"), True
    except OSError as exc:
        raise OutputError(f"cannot write --jsonl {path}: {exc.strerror}") from exc


def _run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        # FFmpeg's own log lines (printed by libav, not by us) could quote a stream URL with
        # its credentials; silence them unless --verbose.  Read when OpenCV's FFMPEG backend
        # initialises, so this must happen before the first capture is opened.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        # OpenCV's own warnings (e.g. "backend is generally available but can't be used to capture
        # by name" for a refused stream) would precede the one error line; read at cv2's first log.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if len(args.source) > 1:
        return _run_many(args)
    args.source = args.source[0]
    from ..runtime.sources import Backoff, SourceGap, open_source, redact
    from ..runtime.stream import StreamingClassifier
    from ..segments import SegmentTracker

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.reconnect_attempts < 0 or args.reconnect_max_delay <= 0:
        raise InputError("--reconnect-attempts must be >= 0 and --reconnect-max-delay > 0")
    if args.show:
        _check_display()
    options = {"threads": args.threads} if args.threads else None
    shown = redact(args.source)
    classifier = StreamingClassifier(args.engines, runtime=args.runtime, top_k=args.top_k, options=options,
                                     expect_model_hash=args.expect_model_hash)
    # Action segments from the gates over time; a clip's gate is final once the long-range
    # fusion has seen its future neighbours (delay = long_range clips).
    tracker = SegmentTracker(delay=classifier.spec.long_range)
    lines, owns_lines = None, False
    source = video = None
    guard = _SignalGuard()
    frames = 0
    start = time.monotonic()
    ok = ended = False
    try:
        backoff = Backoff(maximum=args.reconnect_max_delay, max_attempts=args.reconnect_attempts or None)
        source = open_source(args.source, loop=args.loop, fps=args.fps, reconnect=backoff)
        lines, owns_lines = _open_lines(args.jsonl)
        if args.output:
            video = _AtomicVideoWriter(args.output, args.fps or source.fps or DEFAULT_OUTPUT_FPS)
        latest = None
        with guard:
            try:
                for item in source:
                    guard.check()
                    classifier.note_dropped(source.stats.frames_dropped)
                    if isinstance(item, SourceGap):
                        print(f"gap: {shown} dropped for {item.seconds:.1f} s (~{item.frames_missed} frames), "
                              f"reconnected after {item.attempts} attempt(s)", file=sys.stderr)
                        classifier.note_gap(item.frames_missed, item.seconds, item.reason)
                        continue
                    prediction = classifier.push(item.image, item.index)
                    frames += 1
                    guard.critical = True
                    if prediction is not None:
                        latest = prediction
                        record = prediction.to_dict()
                        record["segments_completed"] = [seg.to_dict() for seg in tracker.update(prediction.gates)]
                        lines.write(json.dumps(record) + "\n")
                        lines.flush()
                    if video is not None or args.show:
                        _emit_frame(item.image, latest, classifier.spec.ring_size, video, args.show)
                    guard.critical = False
                    guard.check()
                    if args.max_frames is not None and frames >= args.max_frames:
                        break
                else:
                    ended = True
            except _Stop:
                pass
            except BrokenPipeError:  # e.g. `gcf-trt run ... | head`: the reader is gone
                guard.signal_name = guard.signal_name or "SIGPIPE"
                try:
                    sys.stdout = open(os.devnull, "w")
                except OSError:
                    pass
        if ended and not source.live and classifier.state.clips == 0:
            _no_clip(shown, classifier, source)
        ok = True
    finally:
        if source is not None:
            source.close()
            classifier.note_dropped(source.stats.frames_dropped)
        if video is not None:
            video.commit() if ok else video.abort()
        if owns_lines and lines is not None:
            lines.close()
        if args.show:
            import cv2
            cv2.destroyAllWindows()
        elapsed = time.monotonic() - start
        state = classifier.state
        classifier.close()
        tracker.flush()  # the stream's end closes the open segment
        if tracker.segments:
            # JSON lines stay one prediction each; the stream's segments precede the summary (its last line).
            print("action segments (frames): " + ", ".join(
                f"{seg.start}-{seg.end} ({seg.score:.2f})" for seg in tracker.segments), file=sys.stderr)
        if source is not None:  # a source that never opened gets only the error message
            stopped = f", stopped by {guard.signal_name}" if guard.signal_name else ""
            print(f"gcf-trt run: {frames} frames, {state.clips} clips, {frames / max(elapsed, 1e-9):.1f} fps, "
                  f"{state.bad_frames + source.stats.frames_corrupt} bad frames, {state.dropped_frames} dropped frames, {len(state.gaps)} gaps "
                  f"({state.gap_frames} frames, {state.gap_seconds:.1f} s missed) in {elapsed:.1f} s{stopped}",
                  file=sys.stderr)
    return 0


def _no_clip(shown: str, classifier, source) -> None:
    """A file that ended without one clip: say whether nothing decoded or it is too short."""
    good, need = classifier.state.good_frames, classifier.spec.frames_per_clip
    if good == 0:
        raise VideoError(f"{shown}: no decodable frame (the file opens, but none of its frames could be "
                         f"decoded into a usable image)",
                         hint="check that it plays (e.g. ffplay); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    raise VideoError(f"{shown} is shorter than one clip: {good} usable frame(s), one clip needs {need}",
                     hint=f"use a video of at least {need} frames (after --fps subsampling, if given)")


def _emit_frame(image, prediction, ring_size: int, video: _AtomicVideoWriter | None, show: bool) -> None:
    import cv2
    from ..preprocess import as_bgr
    from ..runtime.draw import draw_prediction
    try:
        bgr = as_bgr(image)
    except Exception:  # noqa: BLE001 - a bad frame was counted by the classifier; nothing to draw
        return
    canvas = draw_prediction(bgr, prediction, ring_size, copy=False)
    if video is not None:
        video.write(canvas)
    if show:
        cv2.imshow("gcf-trt", canvas)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise _Stop()


def _run_many(args: argparse.Namespace) -> int:
    """Several sources: one MultiStreamClassifier (docs/MULTISTREAM.md).  Each JSON line is a
    prediction with ``"stream"`` (the source's position, from 0) and ``"source"`` (redacted)."""
    from ..runtime.multistream import MultiStreamClassifier
    from ..runtime.sources import Backoff, redact
    from ..segments import SegmentTracker

    if args.output or args.show:
        raise InputError("--output and --show take a single SOURCE", hint="run one 'gcf-trt run' per source for videos")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.reconnect_attempts < 0 or args.reconnect_max_delay <= 0:
        raise InputError("--reconnect-attempts must be >= 0 and --reconnect-max-delay > 0")
    shown = [redact(s) for s in args.source]
    multi = MultiStreamClassifier(args.engines, runtime=args.runtime, top_k=args.top_k,
                                  options={"threads": args.threads} if args.threads else None,
                                  expect_model_hash=args.expect_model_hash,
                                  max_batch=args.max_batch, flush_timeout_ms=args.flush_timeout_ms)
    trackers = [SegmentTracker(delay=multi.spec.long_range) for _ in shown]
    guard = _SignalGuard()
    lines, owns_lines = None, False
    predictions = None
    start = time.monotonic()
    try:
        lines, owns_lines = _open_lines(args.jsonl)
        backoff = Backoff(maximum=args.reconnect_max_delay, max_attempts=args.reconnect_attempts or None)
        predictions = multi.run(list(args.source), max_frames=args.max_frames, loop=args.loop, fps=args.fps,
                                reconnect=backoff)
        with guard:
            try:
                for prediction in predictions:
                    guard.critical = True
                    record = {**prediction.to_dict(), "source": shown[prediction.stream_id]}
                    completed = trackers[prediction.stream_id].update(prediction.gates)
                    record["segments_completed"] = [seg.to_dict() for seg in completed]
                    lines.write(json.dumps(record) + "\n")
                    lines.flush()
                    guard.critical = False
                    guard.check()
            except _Stop:
                pass
            except BrokenPipeError:
                guard.signal_name = guard.signal_name or "SIGPIPE"
                try:
                    sys.stdout = open(os.devnull, "w")
                except OSError:
                    pass
            finally:
                if predictions is not None:
                    predictions.close()  # stops the readers, closes the sources
    finally:
        if owns_lines and lines is not None:
            lines.close()
        elapsed = time.monotonic() - start
        stats, states = multi.stats, multi.last_run_states
        multi.close()
        stopped = f", stopped by {guard.signal_name}" if guard.signal_name else ""
        for i, name in enumerate(shown):
            st = states.get(i)
            if st is not None:
                print(f"gcf-trt run: stream {i} {name}: {st.frames_seen} frames, {st.clips} clips, {st.bad_frames} bad "
                      f"frames, {st.dropped_frames} dropped frames, {len(st.gaps)} gaps", file=sys.stderr)
            trackers[i].flush()
            if trackers[i].segments:
                print(f"action segments of stream {i} (frames): " + ", ".join(
                    f"{seg.start}-{seg.end} ({seg.score:.2f})" for seg in trackers[i].segments), file=sys.stderr)
        print(f"gcf-trt run: {len(shown)} streams, {stats.clips} clips in {stats.backbone_calls} backbone calls "
              f"(mean batch {stats.mean_batch:.2f}) in {elapsed:.1f} s{stopped}", file=sys.stderr)
    return 0
