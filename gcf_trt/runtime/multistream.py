"""Many cameras, one backbone: per-stream rings with batched backbone and head calls.

:class:`MultiStreamClassifier` holds K streams.  Each stream is a :class:`StreamingClassifier`
of its own (frame validation, clip assembly, ring, counters, history: the single-stream code,
reused) whose completed clips are *queued* instead of run at once.  Queued clips of all streams
go to the backbone together:

* **FIFO.** One queue, in completion order; a dispatch always takes the oldest clips first, so
  no stream starves however busy the others are.
* **Full batch or timeout** (like DeepStream nvstreammux's ``batch-size`` /
  ``batched-push-timeout``): the queue is dispatched as soon as it holds ``max_batch`` clips, or
  when its oldest clip has waited ``flush_timeout_ms`` (the timer starts with the first clip of
  a new batch).  ``flush_timeout_ms=0`` dispatches every clip at once (no batching).
* **Buckets.** With ``batch_sizes`` (e.g. a TensorRT engine's optimization-profile sizes) a batch
  of n clips is zero-padded up to the smallest listed size >= n; padded rows are discarded.
* **Heads.** After the backbone call each clip's descriptor goes into its own stream's ring, in
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
from .engines import Engines, load_engines
from .ring import ClipInfo
from .stream import (BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS, Prediction, StreamingClassifier,
                     StreamState)


@dataclass
class StreamPrediction(Prediction):
    """A :class:`~gcf_trt.runtime.stream.Prediction` tagged with its stream.

    Attributes:
        stream_id: the id the stream was added with.
        batch_size: how many clips (all streams) the backbone call that produced it held,
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
        backbone_calls, head_calls: engine calls.
        batch_histogram: ``{clips in a backbone call: number of such calls}`` (padding excluded).
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
class _PendingClip:
    slot: "_StreamSlot"
    clip: np.ndarray            # float32 [3, T, H, W] (a copy: the assembler reuses its buffer)
    frame_range: tuple[int, int]
    enqueued: float             # owner clock
    preprocess_s: float
    push_s: float


class _StreamSlot(StreamingClassifier):
    """One stream: StreamingClassifier's frame handling, but completed clips are queued."""

    def __init__(self, owner: "MultiStreamClassifier", stream_id: Hashable, engines: Engines, **kwargs: Any):
        self._owner = owner
        self.stream_id = stream_id
        self.pending = 0  # clips of this stream waiting in the owner's queue
        super().__init__(engines, **kwargs)

    def _step(self, frame_range: tuple[int, int], start: float) -> None:
        push_s = self._pending_total + time.perf_counter() - start
        self._owner._enqueue(_PendingClip(self, self.assembler.clip[0].copy(), frame_range, self._owner._clock(),
                                          self._pending_preprocess, push_s))
        self._pending_preprocess = self._pending_total = 0.0
        return None


def _profile_max_batch(manifest: dict[str, Any]) -> int | None:
    """The backbone engine's largest batch when its build recorded an optimization profile."""
    comp = manifest["components"]["backbone"]
    opts = comp.get("options") or {}
    for key in ("max_batch", "max_batch_size"):
        if isinstance(opts.get(key), int):
            return opts[key]
    build = ((manifest.get("tensorrt") or {}).get("builds") or {}).get("backbone") or {}
    maxima = [v["max"][0] for v in (build.get("profile") or {}).values()
              if isinstance(v, dict) and isinstance(v.get("max"), (list, tuple)) and v["max"]]
    return int(min(maxima)) if maxima else None


class MultiStreamClassifier:
    """GCF-Net over K video streams with one batched backbone call per batch of clips.

    Args:
        engines: an engines directory or loaded :class:`Engines` (shared by every stream).
        max_batch: most clips per backbone call (also the "full batch" trigger).
        flush_timeout_ms: longest a clip waits for its batch to fill (0: no waiting, no batching).
        batch_sizes: allowed backbone batch sizes (buckets); batches are zero-padded up to one.
            Default: any size 1..max_batch (a fixed-batch engine forces its size).
        runtime, options, expect_model_hash: as for :func:`load_engines` (directory only).
        top_k, history_size, reset_ring_on_gap: per stream, as for :class:`StreamingClassifier`.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, engines: str | os.PathLike | Engines, *, max_batch: int = 8, flush_timeout_ms: float = 50.0,
                 batch_sizes: Sequence[int] | None = None, runtime: str | None = None,
                 options: dict[str, Any] | None = None, expect_model_hash: str | None = None, top_k: int = 5,
                 history_size: int = 256, reset_ring_on_gap: bool = False,
                 clock: Callable[[], float] = time.perf_counter):
        if int(max_batch) < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch}")
        if not float(flush_timeout_ms) >= 0:
            raise InputError(f"flush_timeout_ms must be >= 0, got {flush_timeout_ms}")
        if isinstance(engines, Engines):
            if runtime is not None or options is not None:
                raise InputError("runtime/options apply when loading an engines directory")
            if expect_model_hash and engines.model_hash != expect_model_hash:
                raise EngineError(f"engines {engines.path} are for model {engines.model_hash}, not {expect_model_hash}")
            self.engines, self._owns_engines = engines, False
        else:
            self.engines = load_engines(engines, runtime=runtime, options=options, expect_model_hash=expect_model_hash)
            self._owns_engines = True
        self.spec = self.engines.spec
        max_batch = int(max_batch)
        fixed = (self.engines.backbone.input_shapes.get(BACKBONE_INPUT) or (-1,))[0]
        limit = _profile_max_batch(self.engines.manifest)
        if batch_sizes:
            sizes = sorted({int(b) for b in batch_sizes})
            if sizes[0] < 1:
                raise InputError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
            max_batch = sizes[-1]
        elif fixed not in (-1, 0, None):
            sizes, max_batch = [int(fixed)], int(fixed)
        else:
            sizes = None
        if fixed not in (-1, 0, None) and sizes != [int(fixed)]:
            raise EngineError(f"the backbone engine takes batches of exactly {fixed}, not {sizes}")
        if limit is not None and max_batch > limit:
            raise EngineError(f"max batch {max_batch} exceeds the backbone engine's profile maximum {limit}",
                              hint=f"use max_batch <= {limit} or rebuild the engine with a larger profile")
        self.max_batch, self.batch_sizes = max_batch, sizes
        self.flush_timeout = float(flush_timeout_ms) / 1e3
        head_batch = (self.engines.head.input_shapes.get(HEAD_INPUTS[0]) or (-1,))[0]
        self._head_batched = head_batch in (-1, 0, None)
        self._clock = clock
        self._slot_kwargs = dict(top_k=top_k, history_size=history_size, reset_ring_on_gap=reset_ring_on_gap)
        self._slots: dict[Hashable, _StreamSlot] = {}
        self._queue: collections.deque[_PendingClip] = collections.deque()
        self._ids = itertools.count()
        self.stats = MultiStreamStats()
        self.listeners: list[Callable[[StreamPrediction], None]] = []
        self.last_run_states: dict[Hashable, StreamState] = {}
        self._closed = False

    # --- streams ---------------------------------------------------------------------------
    def add_stream(self, stream_id: Hashable | None = None) -> Hashable:
        """Add a stream (its own clip assembler and ring); returns its id (default 0, 1, ...)."""
        self._check_open()
        if stream_id is None:
            stream_id = next(i for i in self._ids if i not in self._slots)
        if stream_id in self._slots:
            raise InputError(f"stream {stream_id!r} already exists")
        self._slots[stream_id] = _StreamSlot(self, stream_id, self.engines, **self._slot_kwargs)
        return stream_id

    def remove_stream(self, stream_id: Hashable) -> list[StreamPrediction]:
        """Remove a stream; its queued clips are run first (their predictions are returned)."""
        slot = self._slot(stream_id)
        out = self._flush_all("forced") if slot.pending else []
        slot.close()
        del self._slots[stream_id]
        return out

    def reset_stream(self, stream_id: Hashable) -> list[StreamPrediction]:
        """Run the stream's queued clips, then give it a fresh assembler, ring and counters."""
        slot = self._slot(stream_id)
        out = self._flush_all("forced") if slot.pending else []
        slot.reset()
        return out

    @property
    def streams(self) -> list[Hashable]:
        return list(self._slots)

    def stream(self, stream_id: Hashable) -> StreamingClassifier:
        """The stream's single-stream object (``state``, ``history``, ``listeners``, ``ring``)."""
        return self._slot(stream_id)

    def state(self, stream_id: Hashable) -> StreamState:
        return self._slot(stream_id).state

    @property
    def pending(self) -> int:
        """Clips waiting for a backbone call."""
        return len(self._queue)

    def _slot(self, stream_id: Hashable) -> _StreamSlot:
        self._check_open()
        try:
            return self._slots[stream_id]
        except KeyError:
            raise InputError(f"unknown stream {stream_id!r}; streams: {list(self._slots)}",
                             hint="add it first with add_stream()") from None

    def _check_open(self) -> None:
        if self._closed:
            raise InputError("this MultiStreamClassifier is closed")

    # --- input -----------------------------------------------------------------------------
    def push(self, stream_id: Hashable, frame: np.ndarray, frame_index: int | None = None) -> list[StreamPrediction]:
        """Feed one frame of one stream.  Returns the predictions that became ready (of any
        stream: a batch is run when it is full or its timeout expired), oldest clip first."""
        self._slot(stream_id).push(frame, frame_index)
        return self.poll()

    def note_gap(self, stream_id: Hashable, frames_missed: int, seconds: float, reason: str = "") -> list[StreamPrediction]:
        """A stream's source had a gap: its queued clips run first, then its partial clip is dropped."""
        slot = self._slot(stream_id)
        out = self._flush_all("forced") if slot.pending else []
        slot.note_gap(frames_missed, seconds, reason)
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

    def _enqueue(self, item: _PendingClip) -> None:
        item.slot.pending += 1
        self._queue.append(item)

    def _flush_all(self, reason: str) -> list[StreamPrediction]:
        out: list[StreamPrediction] = []
        while self._queue:
            out += self._dispatch(min(self.max_batch, len(self._queue)), reason)
        return out

    # --- the batched engine calls ----------------------------------------------------------------
    def _dispatch(self, n: int, reason: str) -> list[StreamPrediction]:
        items = [self._queue[i] for i in range(n)]  # popped only once the backbone succeeded
        start = self._clock()
        rows = n
        if self.batch_sizes:
            rows = next((b for b in self.batch_sizes if b >= n), None)
            if rows is None:  # cannot happen: n <= max_batch == max(batch_sizes)
                raise EngineError(f"no bucket for a batch of {n} (buckets {self.batch_sizes})")
        batch = np.zeros((rows, *self.spec.clip_shape), np.float32)
        for i, item in enumerate(items):
            batch[i] = item.clip
        t0 = time.perf_counter()
        descriptors = np.asarray(self.engines.backbone.infer({BACKBONE_INPUT: batch})[BACKBONE_OUTPUT], np.float32)
        backbone_s = time.perf_counter() - t0
        if descriptors.shape[0] != rows:
            raise EngineError(f"backbone returned {descriptors.shape[0]} descriptors for a batch of {rows}")
        for _ in range(n):
            self._queue.popleft()
        self.stats.backbone_calls += 1
        self.stats.clips += n
        self.stats.batch_histogram[n] = self.stats.batch_histogram.get(n, 0) + 1
        self.stats.padded_rows += rows - n
        self.stats.flushes[reason] += 1

        # Rounds: a stream's k-th clip in this batch goes to round k, so rings advance in order.
        rounds: list[list[int]] = []
        seen: dict[int, int] = {}
        for i, item in enumerate(items):
            r = seen.get(id(item.slot), 0)
            seen[id(item.slot)] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        results: dict[int, StreamPrediction] = {}
        for members in rounds:
            infos = []
            for i in members:
                slot = items[i].slot
                info = ClipInfo(slot._next_clip, *items[i].frame_range)
                slot._next_clip += 1
                slot.ring.push(descriptors[i], info)
                infos.append(info)
            t1 = time.perf_counter()
            if self._head_batched:
                ring = np.concatenate([items[i].slot.ring.descriptors for i in members])
                mask = np.concatenate([items[i].slot.ring.mask for i in members])
                out = self.engines.head.infer({HEAD_INPUTS[0]: ring, HEAD_INPUTS[1]: mask})
                logits_all = np.asarray(out[HEAD_OUTPUTS[0]], np.float32).reshape(len(members), -1)
                gates_all = np.asarray(out[HEAD_OUTPUTS[1]], np.float32).reshape(len(members), -1)
                self.stats.head_calls += 1
            else:
                logits_l, gates_l = [], []
                for i in members:
                    ring = items[i].slot.ring
                    out = self.engines.head.infer({HEAD_INPUTS[0]: ring.descriptors, HEAD_INPUTS[1]: ring.mask})
                    logits_l.append(np.asarray(out[HEAD_OUTPUTS[0]], np.float32).reshape(-1))
                    gates_l.append(np.asarray(out[HEAD_OUTPUTS[1]], np.float32).reshape(-1))
                    self.stats.head_calls += 1
                logits_all, gates_all = np.stack(logits_l), np.stack(gates_l)
            head_s = time.perf_counter() - t1
            done = self._clock()
            for k, (i, info) in enumerate(zip(members, infos)):
                item = items[i]
                slot = item.slot
                latency = {"preprocess": item.preprocess_s * 1e3, "queue": (start - item.enqueued) * 1e3,
                           "backbone": backbone_s * 1e3, "head": head_s * 1e3,
                           "total": (item.push_s + done - item.enqueued) * 1e3}
                base = slot._make_prediction(logits_all[k].copy(), gates_all[k], info, latency)
                prediction = StreamPrediction.from_prediction(base, slot.stream_id, n)
                slot._state.clips += 1
                slot.pending -= 1
                slot.history.append(prediction)
                for listener in slot.listeners:
                    listener(prediction)
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
            raise InputError("run() needs at least one source")
        for stream_id, _ in items:
            if stream_id in self._slots:
                raise InputError(f"stream {stream_id!r} already exists")
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
                slot = self._slots[stream_id]
                slot.note_dropped(opened[stream_id].stats.frames_dropped)
                if isinstance(item, SourceGap):
                    yield from self.note_gap(stream_id, item.frames_missed, item.seconds, item.reason)
                    continue
                slot.push(item.image, item.index)
                yield from self.poll()
            yield from self.flush()
        finally:
            stop.set()
            for src in opened.values():
                src.close()
            for t in threads:
                t.join(timeout=5)
            for stream_id, _ in items:
                if stream_id in self._slots:
                    self.last_run_states[stream_id] = self._slots[stream_id].state
                    self._slots.pop(stream_id).close()
                    self._queue = collections.deque(q for q in self._queue if q.slot.stream_id != stream_id)

    def run_frames(self, frames: Mapping[Hashable, Iterable[np.ndarray]]) -> list[StreamPrediction]:
        """Push frame lists round-robin (one frame per stream in turn), then flush; for tests/apps."""
        for stream_id in frames:
            if stream_id not in self._slots:
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
            for slot in self._slots.values():
                slot.close()
            if self._owns_engines:
                self.engines.close()

    def __enter__(self) -> "MultiStreamClassifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MultiStreamClassifier({self.engines.path}, streams={len(self._slots)}, max_batch={self.max_batch}, "
                f"flush_timeout_ms={self.flush_timeout * 1e3:g}, clips={self.stats.clips}, "
                f"backbone_calls={self.stats.backbone_calls})")
