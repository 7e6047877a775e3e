"""Many cameras, one set of engines: per-stream cores with shared backbone and head calls.

:class:`MultiStreamClassifier` holds K streams.  Each stream is a
:class:`~gcf_trt.runtime.core.StreamCore` (frame validation, clip assembly, ring, counters,
history: the state :class:`~gcf_trt.runtime.stream.StreamingClassifier` drives for one stream),
used only through its public steps: completed clips (``take_clip()``) are *queued*, run through
the backbone together, ``commit()``-ed to their cores in order, and the head runs once over
the rings of the cores that got a clip (:func:`~gcf_trt.runtime.core.run_head`).

* **FIFO.** One queue, in completion order; a dispatch always takes the oldest clips first, so
  no stream starves however busy the others are.
* **Full batch or timeout** (like DeepStream nvstreammux's ``batch-size`` /
  ``batched-push-timeout``): the queue is dispatched as soon as it holds ``max_batch`` clips, or
  when its oldest clip has waited ``flush_timeout_ms`` (the timer starts with the first clip of
  a new batch).  ``flush_timeout_ms=0`` dispatches every clip at once (no batching).
* **Batching or concurrency.** A dispatch of n clips runs the backbone either as one call of
  batch n (``dispatch="batch"``) or as n batch-1 requests the engine runs at once
  (``dispatch="concurrent"``: OpenVINO infer requests on a THROUGHPUT-hint model, ONNX Runtime
  parallel runs).  ``"auto"`` (default) measures both on the first dispatches and keeps the faster.
* **Buckets.** With ``batch_sizes`` (e.g. a TensorRT engine's optimization-profile sizes) a batch
  of n clips is zero-padded up to the smallest listed size >= n; padded rows are discarded.
* **Heads.** After the backbone each clip's descriptor goes into its own stream's ring, in
  order; the rings of the streams that got a clip are stacked into ``[K, N, D]`` for one head
  call (a stream with two clips in the same dispatch takes part in two successive head calls,
  so its second prediction sees its first clip in the ring).

There is no background thread: the timeout is checked by :meth:`~MultiStreamClassifier.push`
and :meth:`~MultiStreamClassifier.poll` (call it from your loop; :meth:`~MultiStreamClassifier.next_deadline`
says when), and :meth:`~MultiStreamClassifier.run` does this for you while reading several
sources in threads.  A MultiStreamClassifier is not thread-safe: call it from one thread.

Nothing here imports torch.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import EngineError, InputError
from ..manifest import read_manifest
from ..spec import BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS
from .core import PendingClip, Prediction, StreamCore, StreamState, run_head
from .engines import Engines, borrow_or_load

DISPATCH_MODES = ("auto", "batch", "concurrent")


@dataclass
class StreamPrediction(Prediction):
    """A :class:`~gcf_trt.runtime.core.Prediction` tagged with its stream.

    Attributes:
        stream_id: the id the stream was added with.
        batch_size: how many clips (all streams) the backbone dispatch that produced it held,
            padding excluded.
    ``latency_ms`` also has ``queue``: how long the clip waited for its batch.
    """

    stream_id: Hashable = None
    batch_size: int = 1

    @classmethod
    def from_prediction(cls, prediction: Prediction, stream_id: Hashable, batch_size: int) -> "StreamPrediction":
        fields = {f.name: getattr(prediction, f.name) for f in dataclasses.fields(Prediction)}
        return cls(**fields, stream_id=stream_id, batch_size=batch_size)

    def to_dict(self) -> dict[str, Any]:
        stream = self.stream_id if isinstance(self.stream_id, (str, int, float)) else str(self.stream_id)
        return {"stream": stream, **super().to_dict(), "batch_size": self.batch_size}


@dataclass
class MultiStreamStats:
    """Counters of the shared engines (what batching achieved).

    Attributes:
        clips: clips run through the backbone (= predictions).
        backbone_calls: backbone dispatches (one batched call, or one set of concurrent requests).
        head_calls: head engine calls.
        batch_histogram: ``{clips in a dispatch: number of such dispatches}`` (padding excluded).
        padded_rows: zero rows added to reach a bucket size.
        flushes: why batches were dispatched: ``full``, ``timeout``, ``forced`` (flush/remove/gap/end).
    """

    clips: int = 0
    backbone_calls: int = 0
    head_calls: int = 0
    batch_histogram: dict[int, int] = field(default_factory=dict)
    padded_rows: int = 0
    flushes: dict[str, int] = field(default_factory=lambda: {"full": 0, "timeout": 0, "forced": 0})

    @property
    def mean_batch(self) -> float:
        return self.clips / self.backbone_calls if self.backbone_calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["batch_histogram"] = {str(k): v for k, v in sorted(self.batch_histogram.items())}
        data["mean_batch"] = round(self.mean_batch, 3)
        return data


@dataclass
class _Queued:
    core: StreamCore
    clip: PendingClip   # a copy: the core's assembler reuses its buffer
    enqueued: float     # owner clock


class DispatchChooser:
    """Picks batching or concurrency for the backbone by measuring the streams' own dispatches.

    While undecided, dispatches of two or more clips run in blocks of ``block`` consecutive
    dispatches per mode (batch, concurrent, batch, concurrent, ... ``rounds`` times each):
    switching mode on every call was measured to disturb both (OpenVINO reshapes for the other
    batch size).  What is measured is the *cycle*: wall time from one dispatch to the next, per
    clip - the engine call, the head and the frames pushed meanwhile - so effects after the call
    count too (on OpenVINO THROUGHPUT a batched call timed alone was as fast as the requests,
    but whole runs were ~1.5-2x slower).  Only cycles that end in a *full* batch count (the
    classifier, not the sources, was the bottleneck), and the first cycle of each block is
    dropped (warm-up after a switch).  The mode with the lower median is then kept for good.
    Both modes give the same descriptors, so measuring changes no result.
    """

    MODES = ("batch", "concurrent")

    def __init__(self, block: int = 4, rounds: int = 2):
        self.block, self.rounds = int(block), int(rounds)
        self.ms_per_clip: dict[str, list[float]] = {m: [] for m in self.MODES}
        self._dispatches = 0                               # multi-clip dispatches while measuring
        self._open: tuple[str, int, float, bool] | None = None  # the cycle in progress
        self.chosen: str | None = None

    def next_mode(self) -> str:
        if self.chosen:
            return self.chosen
        return self.MODES[(self._dispatches // self.block) % 2]

    def start(self, reason: str, now: float) -> None:
        """A dispatch starts: close the previous cycle (counted when this batch is full)."""
        if self._open is not None and not self.chosen:
            mode, clips, began, first_of_block = self._open
            if reason == "full" and not first_of_block:
                self.ms_per_clip[mode].append((now - began) * 1e3 / clips)
        self._open = None
        if not self.chosen and self._dispatches >= 2 * self.block * self.rounds:
            medians = self.medians()
            if len(medians) == 2:
                self.chosen = min(medians, key=medians.get)

    def begin(self, mode: str, clips: int, now: float) -> None:
        """The dispatch that opens a cycle runs in ``mode`` with ``clips`` clips."""
        if self.chosen or clips < 2:
            self._open = None
            return
        self._open = (mode, clips, now, self._dispatches % self.block == 0)
        self._dispatches += 1

    def medians(self) -> dict[str, float]:
        return {m: float(np.median(v)) for m, v in self.ms_per_clip.items() if v}

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "median_ms_per_clip": self.medians(),
                "samples": {m: len(v) for m, v in self.ms_per_clip.items()}}


class MultiStreamClassifier:
    """GCF-Net over K video streams with shared backbone calls per batch of clips.

    Args:
        engines: an engines directory or loaded :class:`Engines` (shared by every stream).
        max_batch: most clips per backbone dispatch (also the "full batch" trigger).
        flush_timeout_ms: longest a clip waits for its batch to fill (0: no waiting, no batching).
        batch_sizes: allowed backbone batch sizes (buckets); batches are zero-padded up to one.
            Default: any size 1..max_batch (a fixed-batch engine forces its size).
        dispatch: ``"batch"`` (one call of n clips), ``"concurrent"`` (n batch-1 requests at
            once) or ``"auto"`` (measure blocks of both on the first dispatches, keep the
            faster; see :class:`DispatchChooser` and :attr:`dispatch_choice`).
            Loading a directory whose backbone runs on OpenVINO with ``auto``/``concurrent``
            compiles it with the THROUGHPUT hint (several streams) unless ``options`` set a hint.
        runtime, options, expect_model_hash, head: as for :func:`load_engines` (directory only).
        top_k, history_size, reset_ring_on_gap: per stream, as for :class:`StreamingClassifier`.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, engines: str | os.PathLike | Engines, *, max_batch: int = 8, flush_timeout_ms: float = 50.0,
                 batch_sizes: Sequence[int] | None = None, dispatch: str = "auto", runtime: str | None = None,
                 options: dict[str, Any] | None = None, expect_model_hash: str | None = None, top_k: int = 5,
                 history_size: int = 256, reset_ring_on_gap: bool = False, head: str = "auto",
                 clock: Callable[[], float] = time.perf_counter):
        if int(max_batch) < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch}", hint="use max_batch >= 1")
        if not float(flush_timeout_ms) >= 0:
            raise InputError(f"flush_timeout_ms must be >= 0, got {flush_timeout_ms}",
                             hint="0 runs every clip at once; 50 is a common choice")
        if dispatch not in DISPATCH_MODES:
            raise InputError(f"dispatch must be one of {', '.join(DISPATCH_MODES)}, got {dispatch!r}",
                             hint="auto measures batch against concurrent and keeps the faster")
        if int(top_k) < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}", hint="ask for at least one class")
        if not isinstance(engines, Engines) and dispatch != "batch":
            options = _throughput_options(engines, runtime, options)
        self.engines, self._owns_engines = borrow_or_load(engines, runtime=runtime, options=options,
                                                          expect_model_hash=expect_model_hash, head=head)
        try:
            self._configure(int(max_batch), batch_sizes, dispatch, float(flush_timeout_ms))
        except BaseException:
            if self._owns_engines:
                self.engines.close()
            raise
        self._clock = clock
        self._core_kwargs = dict(top_k=top_k, history_size=history_size, reset_ring_on_gap=reset_ring_on_gap,
                                 prediction_type=StreamPrediction)
        self._cores: dict[Hashable, StreamCore] = {}
        self._queue: collections.deque[_Queued] = collections.deque()
        self._ids = itertools.count()
        self.stats = MultiStreamStats()
        self.listeners: list[Callable[[StreamPrediction], None]] = []
        self.last_run_states: dict[Hashable, StreamState] = {}
        self._closed = False

    def _configure(self, max_batch: int, batch_sizes: Sequence[int] | None, dispatch: str,
                   flush_timeout_ms: float) -> None:
        fixed = (self.engines.backbone.input_shapes.get(BACKBONE_INPUT) or (-1,))[0]
        limit = self.engines.manifest.max_batch("backbone")
        if batch_sizes:
            sizes = sorted({int(b) for b in batch_sizes})
            if sizes[0] < 1:
                raise InputError(f"batch sizes must be >= 1, got {list(batch_sizes)}", hint="list sizes >= 1")
            max_batch = sizes[-1]
        elif fixed not in (-1, 0, None) and fixed != 1:
            sizes, max_batch = [int(fixed)], int(fixed)
        else:
            sizes = None
        if fixed not in (-1, 0, None):
            if fixed == 1 and not batch_sizes:
                dispatch = "concurrent"  # an engine of batch 1 can only run clips side by side
            elif sizes != [int(fixed)]:
                raise EngineError(f"the backbone engine takes batches of exactly {fixed}, not {sizes}",
                                  hint=f"use batch_sizes=[{fixed}] or rebuild with a dynamic batch")
        if limit is not None and max_batch > limit and dispatch != "concurrent":
            raise EngineError(f"max batch {max_batch} exceeds the backbone engine's profile maximum {limit}",
                              hint=f"use max_batch <= {limit} or rebuild the engine with a larger profile")
        self.max_batch, self.batch_sizes = max_batch, sizes
        self.flush_timeout = flush_timeout_ms / 1e3
        if dispatch == "auto" and (max_batch == 1 or flush_timeout_ms == 0 or sizes):
            dispatch = "batch"  # one clip per dispatch (or fixed buckets): nothing to choose
        self.dispatch_mode = dispatch
        #: the measurement behind ``dispatch="auto"`` (None for a fixed mode)
        self.dispatch_choice: DispatchChooser | None = DispatchChooser() if dispatch == "auto" else None
        head_batch = (self.engines.head.input_shapes.get(HEAD_INPUTS[0]) or (-1,))[0]
        self._head_batched = head_batch in (-1, 0, None)

    # --- streams ---------------------------------------------------------------------------
    def add_stream(self, stream_id: Hashable | None = None) -> Hashable:
        """Add a stream (its own core: clip assembler and ring); returns its id (default 0, 1, ...)."""
        self._check_open()
        if stream_id is None:
            stream_id = next(i for i in self._ids if i not in self._cores)
        if stream_id in self._cores:
            raise InputError(f"stream {stream_id!r} already exists", hint="pick another stream id")
        self._cores[stream_id] = StreamCore(self.spec, stream_id=stream_id, **self._core_kwargs)
        return stream_id

    def remove_stream(self, stream_id: Hashable) -> list[StreamPrediction]:
        """Remove a stream; its queued clips are run first (their predictions are returned)."""
        core = self._core(stream_id)
        out = self._flush_all("forced") if core.in_flight else []
        del self._cores[stream_id]
        return out

    def reset_stream(self, stream_id: Hashable) -> list[StreamPrediction]:
        """Run the stream's queued clips, then give it a fresh assembler, ring and counters."""
        core = self._core(stream_id)
        out = self._flush_all("forced") if core.in_flight else []
        core.reset()
        return out

    @property
    def spec(self):
        return self.engines.spec

    @property
    def dispatch(self) -> str:
        """``batch`` or ``concurrent``; ``auto`` while the automatic choice is still measuring."""
        if self.dispatch_choice is not None:
            return self.dispatch_choice.chosen or "auto"
        return self.dispatch_mode

    @property
    def streams(self) -> list[Hashable]:
        return list(self._cores)

    def stream(self, stream_id: Hashable) -> StreamCore:
        """The stream's core (``state``, ``history``, ``listeners``, ``ring``)."""
        return self._core(stream_id)

    def state(self, stream_id: Hashable) -> StreamState:
        return self._core(stream_id).state

    @property
    def pending(self) -> int:
        """Clips waiting for a backbone call."""
        return len(self._queue)

    def _core(self, stream_id: Hashable) -> StreamCore:
        self._check_open()
        try:
            return self._cores[stream_id]
        except KeyError:
            raise InputError(f"unknown stream {stream_id!r}; streams: {list(self._cores)}",
                             hint="add it first with add_stream()") from None

    def _check_open(self) -> None:
        if self._closed:
            raise InputError("this MultiStreamClassifier is closed", hint="create a new one")

    # --- input -----------------------------------------------------------------------------
    def push(self, stream_id: Hashable, frame: np.ndarray, frame_index: int | None = None) -> list[StreamPrediction]:
        """Feed one frame of one stream.  Returns the predictions that became ready (of any
        stream: a batch is run when it is full or its timeout expired), oldest clip first."""
        core = self._core(stream_id)
        if core.push(frame, frame_index):
            self._queue.append(_Queued(core, core.take_clip(copy=True), self._clock()))
        return self.poll()

    def note_gap(self, stream_id: Hashable, frames_missed: int, seconds: float, reason: str = "") -> list[StreamPrediction]:
        """A stream's source had a gap: its queued clips run first, then its partial clip is dropped."""
        core = self._core(stream_id)
        out = self._flush_all("forced") if core.in_flight else []
        core.note_gap(frames_missed, seconds, reason)
        return out

    def poll(self) -> list[StreamPrediction]:
        """Run the batches that are due (full, or oldest clip older than the timeout)."""
        out: list[StreamPrediction] = []
        while self._queue:
            if len(self._queue) >= self.max_batch:
                out += self._dispatch(self.max_batch, "full")
            elif self._clock() - self._queue[0].enqueued >= self.flush_timeout:
                out += self._dispatch(len(self._queue), "timeout")
            else:
                break
        return out

    def flush(self) -> list[StreamPrediction]:
        """Run every queued clip now (e.g. at the end of the input)."""
        return self._flush_all("forced")

    def next_deadline(self) -> float | None:
        """Seconds until the oldest queued clip's timeout (0 if due), None if nothing is queued."""
        if not self._queue:
            return None
        return max(0.0, self._queue[0].enqueued + self.flush_timeout - self._clock())

    def _flush_all(self, reason: str) -> list[StreamPrediction]:
        out: list[StreamPrediction] = []
        while self._queue:
            out += self._dispatch(min(self.max_batch, len(self._queue)), reason)
        return out

    # --- the shared engine calls -----------------------------------------------------------------
    def _backbone(self, items: list[_Queued]) -> tuple[np.ndarray, int]:
        """Descriptors ``[n, D]`` of the queued clips and the zero rows padded in."""
        n = len(items)
        backbone = self.engines.backbone
        chooser = self.dispatch_choice
        mode = chooser.next_mode() if chooser is not None else self.dispatch_mode
        if chooser is not None:
            chooser.begin(mode, n, time.perf_counter())
        if n > 1 and mode == "concurrent":
            outs = backbone.infer_many([{BACKBONE_INPUT: item.clip.clip[None]} for item in items])
            return np.concatenate([np.asarray(o[BACKBONE_OUTPUT], np.float32).reshape(1, -1) for o in outs]), 0
        rows = n
        if self.batch_sizes:
            rows = next((b for b in self.batch_sizes if b >= n), None)
            if rows is None:  # cannot happen: n <= max_batch == max(batch_sizes)
                raise EngineError(f"no bucket for a batch of {n} (buckets {self.batch_sizes})")
        batch = np.zeros((rows, *self.spec.clip_shape), np.float32)
        for i, item in enumerate(items):
            batch[i] = item.clip.clip
        descriptors = np.asarray(backbone.infer({BACKBONE_INPUT: batch})[BACKBONE_OUTPUT], np.float32)
        if descriptors.shape[0] != rows:
            raise EngineError(f"backbone returned {descriptors.shape[0]} descriptors for a batch of {rows}")
        return descriptors[:n], rows - n

    def _dispatch(self, n: int, reason: str) -> list[StreamPrediction]:
        items = [self._queue[i] for i in range(n)]  # popped only once the backbone succeeded
        start = self._clock()
        if self.dispatch_choice is not None:
            self.dispatch_choice.start(reason, time.perf_counter())
        t0 = time.perf_counter()
        descriptors, padded = self._backbone(items)
        backbone_s = time.perf_counter() - t0
        for _ in range(n):
            self._queue.popleft()
        self.stats.backbone_calls += 1
        self.stats.clips += n
        self.stats.batch_histogram[n] = self.stats.batch_histogram.get(n, 0) + 1
        self.stats.padded_rows += padded
        self.stats.flushes[reason] += 1

        # Rounds: a stream's k-th clip in this dispatch goes to round k, so rings advance in order.
        rounds: list[list[int]] = []
        seen: dict[int, int] = {}
        for i, item in enumerate(items):
            r = seen.get(id(item.core), 0)
            seen[id(item.core)] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        results: dict[int, StreamPrediction] = {}
        for members in rounds:
            cores = [items[i].core for i in members]
            for i, core in zip(members, cores):
                core.commit(descriptors[i], items[i].clip)
            t1 = time.perf_counter()
            logits, gates, calls = run_head(self.engines.head, cores, batched=self._head_batched)
            head_s = time.perf_counter() - t1
            self.stats.head_calls += calls
            done = self._clock()
            for k, i in enumerate(members):
                item = items[i]
                latency = {"preprocess": item.clip.preprocess_s * 1e3, "queue": (start - item.enqueued) * 1e3,
                           "backbone": backbone_s * 1e3, "head": head_s * 1e3,
                           "total": (item.clip.push_s + done - item.enqueued) * 1e3}
                prediction = item.core.finish(logits[k], gates[k], latency, stream_id=item.core.stream_id,
                                              batch_size=n)
                for listener in self.listeners:
                    listener(prediction)
                results[i] = prediction
        return [results[i] for i in range(n)]

    # --- sources -------------------------------------------------------------------------------
    def run(self, sources: Mapping[Hashable, Any] | Sequence[Any], *, max_frames: int | None = None,
            **source_options: Any) -> Iterator[StreamPrediction]:
        """Read several sources at once and yield every stream's predictions as they are ready.

        Args:
            sources: ``{stream_id: uri}``, or a list of URIs (ids 0, 1, ...).  A URI is anything
                :func:`~gcf_trt.runtime.sources.open_source` opens (file, camera, rtsp://, an
                iterable of frames, an opened Source).  Streams are added (and removed at the end).
            max_frames: stop each source after this many frames.
            **source_options: for ``open_source`` (``loop``, ``fps``, ``step``, ...).

        Each source is read in its own thread into one shared queue; this thread runs the
        engines, so a batch's timeout is honoured even when every source is quiet.  When the
        run ends, each stream's final :class:`StreamState` is kept in :attr:`last_run_states`.
        """
        from .sources import SourceGap, open_source
        items = list(sources.items()) if isinstance(sources, Mapping) else list(enumerate(sources))
        if not items:
            raise InputError("run() needs at least one source", hint="pass {stream_id: uri} or a list of URIs")
        for stream_id, _ in items:
            if stream_id in self._cores:
                raise InputError(f"stream {stream_id!r} already exists", hint="pick another stream id")
        opened: dict[Hashable, Any] = {}
        shared: queue.Queue = queue.Queue(maxsize=4 * len(items))
        stop = threading.Event()
        END = object()

        def offer(entry: tuple) -> bool:
            while not stop.is_set():  # never block forever once the consumer has gone
                try:
                    shared.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def pump(stream_id: Hashable, src: Any) -> None:
            count = 0
            try:
                for item in src:
                    if not offer((stream_id, item)):
                        return
                    if not isinstance(item, SourceGap):
                        count += 1
                        if max_frames is not None and count >= max_frames:
                            break
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                offer((stream_id, exc))
            finally:
                offer((stream_id, END))

        threads = []
        try:
            for stream_id, uri in items:
                opened[stream_id] = open_source(uri, **source_options)
                self.add_stream(stream_id)
            for stream_id, src in opened.items():
                t = threading.Thread(target=pump, args=(stream_id, src), name=f"gcf-multistream-{stream_id}",
                                     daemon=True)
                t.start()
                threads.append(t)
            live = len(items)
            while live:
                deadline = self.next_deadline()
                try:
                    stream_id, item = shared.get(timeout=0.5 if deadline is None else max(deadline, 1e-4))
                except queue.Empty:
                    yield from self.poll()
                    continue
                if item is END:
                    live -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                self._cores[stream_id].note_dropped(opened[stream_id].stats.frames_dropped)
                if isinstance(item, SourceGap):
                    yield from self.note_gap(stream_id, item.frames_missed, item.seconds, item.reason)
                    continue
                yield from self.push(stream_id, item.image, item.index)
            yield from self.flush()
        finally:
            stop.set()
            for src in opened.values():
                src.close()
            for t in threads:
                t.join(timeout=5)
            for stream_id, _ in items:
                if stream_id in self._cores:
                    core = self._cores.pop(stream_id)
                    self.last_run_states[stream_id] = core.state
                    self._queue = collections.deque(q for q in self._queue if q.core is not core)

    def run_frames(self, frames: Mapping[Hashable, Iterable[np.ndarray]]) -> list[StreamPrediction]:
        """Push frame lists round-robin (one frame per stream in turn), then flush; for tests/apps."""
        for stream_id in frames:
            if stream_id not in self._cores:
                self.add_stream(stream_id)
        iters = {sid: iter(f) for sid, f in frames.items()}
        out: list[StreamPrediction] = []
        while iters:
            for sid in list(iters):
                frame = next(iters[sid], None)
                if frame is None:
                    del iters[sid]
                    continue
                out += self.push(sid, frame)
        return out + self.flush()

    # --- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop queued clips and release the engines if this object loaded them.  Idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._cores.clear()
            if self._owns_engines:
                self.engines.close()

    def __enter__(self) -> "MultiStreamClassifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MultiStreamClassifier({self.engines.path}, streams={len(self._cores)}, max_batch={self.max_batch}, "
                f"dispatch={self.dispatch}, flush_timeout_ms={self.flush_timeout * 1e3:g}, clips={self.stats.clips}, "
                f"backbone_calls={self.stats.backbone_calls})")


def _throughput_options(engines_dir: str | os.PathLike, runtime: str | None,
                        options: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenVINO runs concurrent requests only on a model compiled for several streams: ask for
    the THROUGHPUT hint when the backbone will run on OpenVINO and the caller set no hint."""
    if options and "hint" in options:
        return options
    try:
        chosen = runtime or read_manifest(engines_dir).component("backbone")["runtime"]
    except EngineError:
        return options  # load_engines reports the problem with its own message
    if chosen != "openvino":
        return options
    return {**(options or {}), "hint": "throughput"}
