"""A live run: sources -> classifier -> sinks, what ``gcf-trt run`` and camera apps are made of.

:class:`LiveRun` opens the sources, runs one :class:`~gcf_trt.runtime.stream.StreamingClassifier`
(one source) or one :class:`~gcf_trt.runtime.multistream.MultiStreamClassifier` (several), tracks
action segments per stream, stamps every prediction with its stream time, wall time and source,
and hands frames, predictions, segments and gaps to its :class:`~gcf_trt.runtime.sinks.Sink` s.
SIGINT/SIGTERM end it cleanly (:class:`SignalGuard`): whole lines only, outputs finalised.

:func:`run_streams` builds the sinks from a :class:`RunConfig` (what the CLI's flags say) and
runs; an app builds its own list and calls ``LiveRun(config, sinks).run()``.
Nothing here imports torch.
"""
from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..errors import InputError, VideoError
from ..segments import Segment, SegmentTracker
from .sinks import (JsonLinesSink, PredictionEvent, SegmentEvent, ShowSink, Sink, StopRequested, StreamInfo,
                    VideoSink)
from .sources import Backoff, Source, SourceFrame, SourceGap, open_source
from .uris import parse_uri, redact


def _say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class RunConfig:
    """What to run: sources, engines, source options and outputs (``gcf-trt run``'s flags).

    ``jsonl``: a file for the JSON lines, ``"-"`` for stdout, None for none.  ``output``: an
    annotated video (one source).  ``show``: an OpenCV window (one source).  ``serve``:
    ``HOST:PORT`` of the live web view (:mod:`gcf_trt.runtime.serve`).  ``events``: an
    ``mqtt://`` URL or a ``.jsonl`` file for completed action segments (:mod:`gcf_trt.runtime.events`).
    """

    sources: Sequence[Any]
    engines: Any
    runtime: str | None = None
    expect_model_hash: str | None = None
    threads: int | None = None
    top_k: int = 5
    loop: bool = False
    fps: float | None = None
    max_frames: int | None = None
    max_batch: int = 8
    flush_timeout_ms: float = 50.0
    reconnect_attempts: int = 8
    reconnect_max_delay: float = 10.0
    transport: str | None = None
    jsonl: str | None = "-"
    output: str | None = None
    show: bool = False
    serve: str | None = None
    events: str | None = None
    serve_fps: float = 10.0
    quiet: bool = False


class _Stop(Exception):
    """Raised by the signal handler to leave a blocking read."""


class SignalGuard:
    """SIGINT/SIGTERM -> stop.  Raises out of blocking waits, but never in the middle of writing
    a line or a frame (inside ``with guard.critical():``), so no half-written JSON line is left."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._critical = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        if not self._critical:
            raise _Stop()

    def begin(self) -> None:
        self._critical = True

    def end(self) -> None:
        self._critical = False
        if self.signal_name:
            raise _Stop()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class _StreamClock:
    """Stream and wall times of a stream's recent frames (by index), and of its clips."""

    def __init__(self, frames: int = 4096, clips: int = 4096):
        self._lock = threading.Lock()
        self._frames: dict[int, tuple[float | None, float | None]] = {}
        self._order: collections.deque[int] = collections.deque()
        self._max_frames = frames
        self.clips: collections.OrderedDict[int, tuple[tuple, tuple]] = collections.OrderedDict()
        self._max_clips = clips

    def note(self, frame: SourceFrame) -> None:
        with self._lock:
            self._frames[frame.index] = (frame.stream_time_s, frame.wall_time)
            self._order.append(frame.index)
            while len(self._order) > self._max_frames:
                self._frames.pop(self._order.popleft(), None)

    def at(self, index: int) -> tuple[float | None, float | None]:
        with self._lock:
            return self._frames.get(index, (None, None))

    def note_clip(self, clip_index: int, frame_range: Sequence[int]) -> None:
        self.clips[clip_index] = (self.at(frame_range[0]), self.at(frame_range[1]))
        while len(self.clips) > self._max_clips:
            self.clips.popitem(last=False)


class _Tap(Source):
    """A source seen through a callback: every item is offered to ``on_item`` before it goes on."""

    def __init__(self, inner: Source, on_item: Callable[[Any], None]):
        super().__init__()
        self.inner, self.on_item = inner, on_item
        self.uri, self.live, self.stats = inner.uri, inner.live, inner.stats

    @property
    def fps(self) -> float | None:
        return self.inner.fps

    def __iter__(self) -> Iterator[Any]:
        for item in self.inner:
            self.on_item(item)
            yield item

    def request_stop(self) -> None:
        self.inner.request_stop()

    def close(self) -> None:
        self.inner.close()


class _StreamRun:
    """Per-stream bookkeeping of a run: clock, segments, labels, health counters."""

    def __init__(self, info: StreamInfo, source: Source, delay: int):
        self.info, self.source = info, source
        self.clock = _StreamClock()
        self.tracker = SegmentTracker(delay=delay)
        self.delay = delay
        self.labels: collections.OrderedDict[int, tuple[str, float]] = collections.OrderedDict()
        self.frames = 0
        self.frame_times: collections.deque[float] = collections.deque(maxlen=64)
        self.latest: Any = None
        self.bad_frames = 0
        self.segments: list[SegmentEvent] = []

    def on_frame(self, frame: SourceFrame) -> None:
        self.clock.note(frame)
        self.frames += 1
        self.frame_times.append(frame.timestamp)

    def fps(self) -> float:
        times = list(self.frame_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        if time.monotonic() - times[-1] > 5.0:  # nothing for a while: the stream is stalled
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def segment_event(self, seg: Segment) -> SegmentEvent:
        best = None
        for clip in range(seg.first_clip, seg.last_clip + self.delay + 1):
            entry = self.labels.get(clip)
            if entry is not None and (best is None or entry[1] > best[1]):
                best = entry
        first = self.clock.clips.get(seg.first_clip, ((None, None), (None, None)))[0]
        last = self.clock.clips.get(seg.last_clip, ((None, None), (None, None)))[1]
        return SegmentEvent(self.info.id, self.info.source, seg, best[0] if best else None,
                            best[1] if best else None, first[0], last[0], first[1], last[1])


class LiveRun:
    """Run :class:`RunConfig` s sources through the engines into ``sinks``.

    Attributes available to sinks (from :meth:`Sink.start` on): ``streams`` (list of
    :class:`StreamInfo`), ``spec`` (the engines' ModelSpec), :meth:`health`, :meth:`say`.
    """

    def __init__(self, config: RunConfig, sinks: Sequence[Sink] = (), *, say: Callable[[str], None] = _say_stderr):
        self.config, self.sinks, self.say = config, list(sinks), say
        if not config.sources:
            raise InputError("no source given", hint="pass a video file, camera index or URL")
        if len(config.sources) > 1:
            single = [type(s).__name__ for s in self.sinks if not s.multi_stream]
            if single:
                raise InputError("--output and --show take a single SOURCE",
                                 hint="run one 'gcf-trt run' per source for videos, or use --serve for a live view")
        self.streams: list[StreamInfo] = []
        self.spec: Any = None
        self._runs: list[_StreamRun] = []
        self.guard = SignalGuard()
        self.started = time.monotonic()
        self.ended = False
        self._stop_requested = threading.Event()

    def note(self, message: str) -> None:
        """An informational line (which codec, where events go): dropped with ``quiet``."""
        if not self.config.quiet:
            self.say(message)

    def stop(self) -> None:
        """Ask the run to end soon, from any thread (outputs are finalised as at a signal)."""
        self._stop_requested.set()

    # --- what sinks may read -------------------------------------------------------------
    def health(self, stream: int) -> dict[str, Any]:
        """A snapshot of one stream's health (safe from any thread)."""
        run = self._runs[stream]
        stats = run.source.stats
        latest = run.latest
        return {"stream": stream, "source": run.info.source, "frames": run.frames, "fps": round(run.fps(), 2),
                "clips": latest.clip_index + 1 if latest is not None else 0,
                "latency_ms": round(float(latest.latency_ms.get("total", 0.0)), 2) if latest is not None else None,
                "dropped_frames": stats.frames_dropped, "bad_frames": run.bad_frames + stats.frames_corrupt,
                "gaps": stats.gaps, "reconnects": stats.reconnects, "segments": len(run.segments),
                "action": latest.action if latest is not None else None,
                "label": latest.label if latest is not None else None,
                "score": round(float(latest.score), 4) if latest is not None else None,
                "live": run.info.live}

    # --- the run -------------------------------------------------------------------------
    def _open(self) -> list[Source]:
        c = self.config
        backoff = Backoff(maximum=c.reconnect_max_delay, max_attempts=c.reconnect_attempts or None)
        opened: list[Source] = []

        def is_rtsp(uri: Any) -> bool:
            return isinstance(uri, str) and uri.lower().startswith(("rtsp://", "rtsps://"))
        any_rtsp = any(is_rtsp(uri) for uri in c.sources)
        try:
            for uri in c.sources:
                # --transport is for the rtsp:// sources among several (alone, a non-RTSP source is told).
                transport = c.transport if is_rtsp(uri) or not any_rtsp else None
                # --loop applies to the files among several sources; live ones never end anyway.
                loop = c.loop and not (isinstance(uri, (str, int, os.PathLike)) and parse_uri(uri).live)
                opened.append(open_source(uri, loop=loop, fps=c.fps, reconnect=backoff, transport=transport))
        except BaseException:
            for src in opened:
                src.close()
            raise
        return opened

    def _on_item(self, stream: int, item: Any, frames_to_sinks: bool) -> None:
        if self._stop_requested.is_set():
            raise StopRequested()
        run = self._runs[stream]
        if isinstance(item, SourceGap):
            self.say(f"gap: {run.info.source} dropped for {item.seconds:.1f} s (~{item.frames_missed} frames), "
                     f"reconnected after {item.attempts} attempt(s)")
            for sink in self.sinks:
                sink.gap(stream, item)
            return
        run.on_frame(item)
        if frames_to_sinks:
            for sink in self._framed:
                sink.frame(stream, item, run.latest)

    def _prediction(self, stream: int, prediction: Any) -> None:
        # All of it is critical: a signal raising in the middle of tracker.update() would leave
        # the segment tracker torn (a clip counted but not stored) and its final flush failing.
        self.guard.begin()
        try:
            self._record_prediction(stream, prediction)
        finally:
            self.guard.end()

    def _record_prediction(self, stream: int, prediction: Any) -> None:
        run = self._runs[stream]
        newest = prediction.gates[-1]
        run.clock.note_clip(newest.clip_index, newest.frame_range)
        run.labels[prediction.clip_index] = (prediction.label, float(prediction.score))
        while len(run.labels) > 4096:
            run.labels.popitem(last=False)
        stream_time, wall_time = run.clock.at(prediction.frame_range[1])
        prediction.stream_time_s, prediction.wall_time, prediction.source = stream_time, wall_time, run.info.source
        segments = [run.segment_event(seg) for seg in run.tracker.update(prediction.gates)]
        record = {**prediction.to_dict(), "segments_completed": [s.to_dict() for s in segments]}
        run.latest = prediction
        run.segments += segments
        event = PredictionEvent(stream, run.info.source, prediction, record, segments)
        for sink in self.sinks:
            sink.prediction(event)
        for seg in segments:
            for sink in self.sinks:
                sink.segment(seg)

    def run(self) -> int:
        """Run to the end of the sources (or a signal); returns 0.  Raises GcfError on bad input.

        Every sink is closed at the end, with ``ok=False`` when the run failed (a partial video
        is then removed), also when the sources or the engines could not be opened."""
        c = self.config
        self._framed = [s for s in self.sinks if s.wants_frames]
        opened: list[Source] = []
        classifier: Any = None
        ok = False
        try:
            opened = self._open()
            multi = len(opened) > 1
            classifier = self._classifier(multi)
            self.spec = classifier.spec
            for i, src in enumerate(opened):
                info = StreamInfo(i, src.uri if isinstance(c.sources[i], Source) else redact(c.sources[i]),
                                  src.fps, src.live)
                self.streams.append(info)
                self._runs.append(_StreamRun(info, src, classifier.spec.long_range))
            taps = [_Tap(src, lambda item, i=i: self._on_item(i, item, multi)) for i, src in enumerate(opened)]
            for sink in self.sinks:
                sink.start(self)
            with self.guard:
                try:
                    if multi:
                        self._run_many(classifier, taps)
                    else:
                        self._run_one(classifier, taps[0])
                except (_Stop, StopRequested):
                    pass
                except BrokenPipeError:  # e.g. `gcf-trt run ... | head`: the reader is gone
                    self.guard.signal_name = self.guard.signal_name or "SIGPIPE"
                    try:
                        sys.stdout = open(os.devnull, "w")
                    except OSError:
                        pass
            self._flush_segments()
            ok = True
        finally:
            for src in opened:
                src.close()
            failure: BaseException | None = None
            for sink in self.sinks:
                try:
                    sink.close(ok)
                except Exception as exc:  # noqa: BLE001 - one failing sink must not keep the others open
                    failure = failure or exc
            if classifier is not None:
                self._summary(classifier, len(opened) > 1)
                classifier.close()
            if failure is not None and ok:
                raise failure
        return 0

    def _flush_segments(self) -> None:
        """The streams' end closes their open segments: they go to the sinks like the others."""
        for run in self._runs:
            for seg in run.tracker.flush():
                event = run.segment_event(seg)
                run.segments.append(event)
                for sink in self.sinks:
                    sink.segment(event)

    def _classifier(self, multi: bool) -> Any:
        c = self.config
        options = {"threads": c.threads} if c.threads else None
        if multi:
            from .multistream import MultiStreamClassifier
            return MultiStreamClassifier(c.engines, runtime=c.runtime, top_k=c.top_k, options=options,
                                         expect_model_hash=c.expect_model_hash, max_batch=c.max_batch,
                                         flush_timeout_ms=c.flush_timeout_ms)
        from .stream import StreamingClassifier
        return StreamingClassifier(c.engines, runtime=c.runtime, top_k=c.top_k, options=options,
                                   expect_model_hash=c.expect_model_hash)

    def _run_one(self, classifier: Any, tap: _Tap) -> None:
        for result in classifier.run(tap, frames=True, max_frames=self.config.max_frames):
            # The prediction and the frame that completed its clip are one critical section:
            # a signal between them would stop the run with the line written but the clip's
            # last frame missing from the video.
            self.guard.begin()
            try:
                if result.prediction is not None:
                    self._record_prediction(0, result.prediction)
                for sink in self._framed:
                    sink.frame(0, result.frame, self._runs[0].latest)
            finally:
                self.guard.end()
        self._runs[0].bad_frames = classifier.state.bad_frames
        self.ended = True
        if not tap.live and classifier.state.clips == 0:
            _no_clip(self.streams[0].source, classifier)

    def _run_many(self, multi: Any, taps: list[_Tap]) -> None:
        predictions = multi.run(taps, max_frames=self.config.max_frames)
        try:
            for prediction in predictions:
                self._runs[prediction.stream_id].bad_frames = multi.state(prediction.stream_id).bad_frames
                self._prediction(prediction.stream_id, prediction)
            self.ended = True
        finally:
            predictions.close()  # stops the readers, closes the sources

    def _summary(self, classifier: Any, multi: bool) -> None:
        elapsed = time.monotonic() - self.started
        stopped = f", stopped by {self.guard.signal_name}" if self.guard.signal_name else ""
        for run in self._runs:
            run.tracker.flush()  # after an error: the open segment still ends the report
        if not multi:
            run, state = self._runs[0], classifier.state
            if run.tracker.segments:
                # JSON lines stay one prediction each; the stream's segments precede the summary.
                self.say("action segments (frames): " + _segment_list(run.tracker.segments))
            stats = run.source.stats
            self.say(f"gcf-trt run: {run.frames} frames, {state.clips} clips, {run.frames / max(elapsed, 1e-9):.1f} fps, "
                     f"{state.bad_frames + stats.frames_corrupt} bad frames, {state.dropped_frames} dropped frames, "
                     f"{len(state.gaps)} gaps ({state.gap_frames} frames, {state.gap_seconds:.1f} s missed) "
                     f"in {elapsed:.1f} s{stopped}")
            return
        states = classifier.last_run_states
        for run in self._runs:
            i = run.info.id
            st = states.get(i)
            if st is not None:
                self.say(f"gcf-trt run: stream {i} {run.info.source}: {st.frames_seen} frames, {st.clips} clips, "
                         f"{st.bad_frames} bad frames, {st.dropped_frames} dropped frames, {len(st.gaps)} gaps")
            if run.tracker.segments:
                self.say(f"action segments of stream {i} (frames): " + _segment_list(run.tracker.segments))
        stats = classifier.stats
        self.say(f"gcf-trt run: {len(self._runs)} streams, {stats.clips} clips in {stats.backbone_calls} backbone "
                 f"calls (mean batch {stats.mean_batch:.2f}) in {elapsed:.1f} s{stopped}")


def _segment_list(segments: Sequence[Segment], last: int = 50) -> str:
    """``start-end (score)`` of the last ``last`` segments (a long looping run has thousands)."""
    text = ", ".join(f"{seg.start}-{seg.end} ({seg.score:.2f})" for seg in segments[-last:])
    return text if len(segments) <= last else f"{text} (the last {last} of {len(segments)})"


def _no_clip(shown: str, classifier: Any) -> None:
    """A file that ended without one clip: say whether nothing decoded or it is too short."""
    good, need = classifier.state.good_frames, classifier.spec.frames_per_clip
    if good == 0:
        raise VideoError(f"{shown}: no decodable frame (the file opens, but none of its frames could be "
                         f"decoded into a usable image)",
                         hint="check that it plays (e.g. ffplay); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    raise VideoError(f"{shown} is shorter than one clip: {good} usable frame(s), one clip needs {need}",
                     hint=f"use a video of at least {need} frames (after --fps subsampling, if given)")


def make_sinks(config: RunConfig) -> list[Sink]:
    """The sinks :class:`RunConfig` asks for, in the order they get each event.  Each one checks
    its target now (extension, port, broker URL), before any engine loads; if one fails, those
    made before it are closed."""
    sinks: list[Sink] = []
    try:
        if config.show:
            sinks.append(ShowSink())
        if config.output:
            sinks.append(VideoSink(config.output, config.fps))
        if config.events:
            from .events import open_events
            sinks.append(open_events(config.events))
        if config.serve:
            from .serve import LiveServer
            sinks.append(LiveServer(config.serve, max_fps=config.serve_fps))
        if config.jsonl is not None:
            sinks.append(JsonLinesSink(None if config.jsonl == "-" else config.jsonl))
    except BaseException:
        for sink in sinks:
            sink.close(False)
        raise
    return sinks


def run_streams(config: RunConfig, *, say: Callable[[str], None] = _say_stderr, extra_sinks: Sequence[Sink] = ()) -> int:
    """Run ``config`` with the sinks its options ask for (plus ``extra_sinks``); returns 0."""
    sinks = make_sinks(config)
    try:
        live = LiveRun(config, [*sinks, *extra_sinks], say=say)
    except BaseException:
        for sink in sinks:
            sink.close(False)
        raise
    return live.run()


__all__ = ["LiveRun", "PredictionEvent", "RunConfig", "SegmentEvent", "SignalGuard", "StreamInfo", "make_sinks",
           "run_streams"]
