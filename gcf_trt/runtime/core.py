"""The stream core: one stream's explicit state, shared by single- and multi-stream code.

After MoViNet's streaming design (one model, the state passed explicitly): a
:class:`StreamCore` holds everything that belongs to *one* stream - frame validation, the
:class:`ClipAssembler`, the :class:`~gcf_trt.runtime.ring.DescriptorRing`, the counters, the
prediction history and listeners - and owns no engine.  Engines are run by whoever drives the
cores, through three public steps::

    if core.push(frame):                    # validate, subsample, preprocess, assemble
        clip = core.take_clip()             # the completed clip (PendingClip)
        descriptor = backbone(clip.clip)    # one row of a batch, or a call of its own
        core.commit(descriptor, clip)       # into the ring
        logits, gates, _ = run_head(head, [core, ...])   # one head call for one or many cores
        prediction = core.finish(logits[0], gates[0], latency)

:class:`~gcf_trt.runtime.stream.StreamingClassifier` is that loop for one core;
:class:`~gcf_trt.runtime.multistream.MultiStreamClassifier` queues ``take_clip()`` results of
many cores, batches them and calls :func:`run_head` on the cores that committed a clip.

Nothing here imports torch.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ..errors import EngineError, FrameError, InputError
from ..preprocess import Preprocessor, as_bgr
from ..spec import ACTION_GATE, HEAD_INPUTS, HEAD_OUTPUTS, ModelSpec
from .ring import ClipInfo, DescriptorRing


# ----------------------------------------------------------------------------- results
@dataclass
class ClipGate:
    """One valid ring slot as the head saw it at one step."""

    clip_index: int
    frame_range: tuple[int, int]
    gate: float
    selected: bool  # kept by clip selection (gate >= select_ratio * max gate)

    def to_dict(self) -> dict[str, Any]:
        return {"clip_index": self.clip_index, "frame_range": list(self.frame_range),
                "gate": self.gate, "selected": self.selected}


@dataclass
class Prediction:
    """The head's output after one new clip.

    Attributes:
        label, score: the top class and its softmax probability.
        action: the decision: ``label`` when a clip of the ring shows an action (a gate >=
            :data:`~gcf_trt.spec.ACTION_GATE`) and ``label`` is not the model's no-action class,
            else None ("no action": without that class, ``label`` is then the head's guess at a
            ring with nothing relevant in it).
        top_k: ``[(label, probability), ...]``, best first.
        logits: ``float32 [C]`` raw head logits.
        gates: the valid ring slots, oldest first, each with its clip's frame range.
        frame_range: (first, last) source frame index covered by the clips in the ring.
        clip_index: running index of the newest clip (0 for the first clip after a reset).
        latency_ms: ``preprocess`` (frames since the previous clip), ``backbone``, ``head`` and
            ``total`` (all ``push`` time since the previous prediction).
        ring_fill: number of valid clips the head fused.
        stream_time_s, wall_time: the stream time and the wall-clock time (Unix seconds) of the
            newest clip's last frame, set by whoever knows the source (``gcf_trt.runtime.pipeline``,
            from :class:`~gcf_trt.runtime.sources.SourceFrame`); None when frames came bare.
        source: the source's URI, credentials masked (set with the times).
        no_action_label: the model's no-action class (:attr:`ModelSpec.no_action_label`), or None.
    """

    label: str
    score: float
    top_k: list[tuple[str, float]]
    logits: np.ndarray
    gates: list[ClipGate]
    frame_range: tuple[int, int]
    clip_index: int
    latency_ms: dict[str, float]
    ring_fill: int
    stream_time_s: float | None = None
    wall_time: float | None = None
    source: str | None = None
    no_action_label: str | None = None

    @property
    def action_in_view(self) -> bool:
        """Whether a clip of the ring shows an action (its gate >= :data:`~gcf_trt.spec.ACTION_GATE`)."""
        return any(g.gate >= ACTION_GATE for g in self.gates)

    @property
    def predicts_no_action_class(self) -> bool:
        """Whether the top class is the model's own no-action class (never, without one)."""
        return self.no_action_label is not None and self.label == self.no_action_label

    @property
    def action(self) -> str | None:
        """``label`` when an action is in view, else None (see the class docstring)."""
        return self.label if self.action_in_view and not self.predicts_no_action_class else None

    @property
    def gate_values(self) -> np.ndarray:
        """The valid gates as ``float32 [ring_fill]``, oldest first."""
        return np.asarray([g.gate for g in self.gates], np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (floats rounded to 6 significant digits for logs)."""
        return {
            "clip_index": self.clip_index,
            "frame_range": list(self.frame_range),
            "action": self.action,
            "label": self.label,
            "score": round(float(self.score), 6),
            "top_k": [[name, round(float(p), 6)] for name, p in self.top_k],
            "logits": [round(float(v), 6) for v in self.logits],
            "gates": [{**g.to_dict(), "gate": round(float(g.gate), 6)} for g in self.gates],
            "ring_fill": self.ring_fill,
            "latency_ms": {k: round(float(v), 3) for k, v in self.latency_ms.items()},
            "stream_time_s": None if self.stream_time_s is None else round(float(self.stream_time_s), 3),
            "wall_time": None if self.wall_time is None else round(float(self.wall_time), 3),
            "source": self.source,
        }


@dataclass
class GapRecord:
    """A discontinuity in the input (a live source dropped and came back)."""

    at_frame: int  # index the next frame will get
    frames_missed: int
    seconds: float
    reason: str = ""


@dataclass
class StreamState:
    """Inspectable per-stream counters (a snapshot; see :attr:`StreamCore.state`).

    Attributes:
        frames_seen: frames pushed (good or bad).
        good_frames: frames that passed validation.
        sampled_frames: good frames kept by ``frame_step`` subsampling.
        clips: clips run through backbone and head (= predictions).
        ring_fill: valid slots in the ring (<= ring size).
        bad_frames: frames skipped because they were unusable; ``last_bad_frame`` says why.
        dropped_frames: frames the source's queue dropped before they reached us.
        gaps: discontinuities reported by the source (reconnects), with missed frames/seconds.
    """

    frames_seen: int = 0
    good_frames: int = 0
    sampled_frames: int = 0
    clips: int = 0
    ring_fill: int = 0
    bad_frames: int = 0
    last_bad_frame: str | None = None
    dropped_frames: int = 0
    gaps: list[GapRecord] = field(default_factory=list)

    @property
    def gap_frames(self) -> int:
        return sum(g.frames_missed for g in self.gaps)

    @property
    def gap_seconds(self) -> float:
        return sum(g.seconds for g in self.gaps)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["gap_frames"], data["gap_seconds"] = self.gap_frames, round(self.gap_seconds, 3)
        return data


# ----------------------------------------------------------------------------- clip assembly
class ClipAssembler:
    """Turns good frames into clips with exactly the semantics of ``clips_from_frames``.

    Keeps the last ``clip_len`` *preprocessed* sampled frames (each frame is preprocessed
    once) and writes a completed clip into one preallocated ``float32 [1, 3, T, H, W]`` buffer.
    """

    def __init__(self, spec: ModelSpec, preprocessor: Preprocessor | None = None):
        self.spec = spec
        self.preprocess = preprocessor or Preprocessor(spec)
        self.clip = np.zeros((1, *spec.clip_shape), np.float32)
        self._frames: collections.deque[tuple[np.ndarray, int]] = collections.deque(maxlen=spec.clip_len)
        self.good = 0      # good frames since reset (drives frame_step subsampling)
        self.sampled = 0   # sampled frames since reset (drives clip_len/stride)

    def reset(self) -> None:
        self._frames.clear()
        self.good = self.sampled = 0

    def push(self, bgr: np.ndarray, frame_index: int) -> tuple[bool, tuple[int, int] | None]:
        """Add one good BGR frame.  Returns ``(sampled, frame_range or None)``; when a range is
        returned, :attr:`clip` holds the completed clip."""
        spec = self.spec
        is_sampled = self.good % spec.frame_step == 0
        self.good += 1
        if not is_sampled:
            return False, None
        j = self.sampled
        self.sampled += 1
        # With stride > clip_len some sampled frames fall between clips: never preprocess them.
        if spec.stride > spec.clip_len and j % spec.stride >= spec.clip_len:
            return True, None
        self._frames.append((self.preprocess(bgr), frame_index))
        if j < spec.clip_len - 1 or (j - spec.clip_len + 1) % spec.stride:
            return True, None
        for t, (tensor, _) in enumerate(self._frames):
            self.clip[0, :, t] = tensor
        return True, (self._frames[0][1], self._frames[-1][1])


# ----------------------------------------------------------------------------- the core
@dataclass
class PendingClip:
    """A completed clip waiting for the backbone (what :meth:`StreamCore.take_clip` returns).

    Attributes:
        clip: ``float32 [3, T, H, W]``.
        frame_range: first and last source frame index of the clip.
        preprocess_s: preprocessing time of the frames since the previous clip.
        push_s: all ``push`` time since the previous clip (validation + preprocessing).
        ready_at: ``time.perf_counter()`` when the clip completed.
    """

    clip: np.ndarray
    frame_range: tuple[int, int]
    preprocess_s: float
    push_s: float
    ready_at: float


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - float(np.max(logits))
    e = np.exp(z)
    return e / e.sum()


class StreamCore:
    """One stream's state: frame validation, clip assembly, ring, counters, history, listeners.

    Holds no engine (see the module docstring for the drive loop).

    Args:
        spec: the model's spec.
        top_k: how many classes :attr:`Prediction.top_k` lists.
        history_size: predictions kept in :attr:`history`.
        reset_ring_on_gap: on a gap also empty the ring (the partial clip is always dropped).
        stream_id: the stream's id (for the caller; the core does not use it).
        prediction_type: the :class:`Prediction` (sub)class :meth:`finish` builds.
    """

    def __init__(self, spec: ModelSpec, *, top_k: int = 5, history_size: int = 256,
                 reset_ring_on_gap: bool = False, stream_id: Hashable = None,
                 prediction_type: type[Prediction] = Prediction):
        if int(top_k) < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}", hint="ask for at least one class")
        self.spec = spec
        self.top_k = min(int(top_k), spec.num_classes)
        self.reset_ring_on_gap = reset_ring_on_gap
        self.stream_id = stream_id
        self.prediction_type = prediction_type
        self.assembler = ClipAssembler(spec)
        self.ring = DescriptorRing(spec.ring_size, spec.dim)
        self.history: collections.deque[Prediction] = collections.deque(maxlen=max(1, int(history_size)))
        self.listeners: list[Callable[[Prediction], None]] = []
        self.reset()

    # --- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: partial clip, ring, counters and history (a fresh stream)."""
        self.assembler.reset()
        self.ring.reset()
        self.history.clear()
        self._state = StreamState()
        self._next_index = 0
        self._next_clip = 0
        self._ready: tuple[int, int] | None = None   # frame range of a completed, untaken clip
        self._committed: collections.deque[tuple[ClipInfo, int]] = collections.deque()
        self.in_flight = 0              # clips taken but not finished (queued for a backbone)
        self._pending_preprocess = 0.0  # seconds of preprocessing since the last clip
        self._pending_total = 0.0       # seconds of push() since the last clip

    @property
    def state(self) -> StreamState:
        """A snapshot of the stream's counters."""
        snap = dataclasses.replace(self._state, gaps=list(self._state.gaps))
        snap.ring_fill = self.ring.fill
        return snap

    @property
    def clip_ready(self) -> bool:
        """True after a :meth:`push` that completed a clip, until :meth:`take_clip`."""
        return self._ready is not None

    # --- input ---------------------------------------------------------------------------
    def push(self, frame: np.ndarray, frame_index: int | None = None) -> bool:
        """Feed one frame; True when it completed a clip (then call :meth:`take_clip`).

        Unusable frames (NaN/inf, wrong dtype or channel count) are skipped and counted in
        ``state.bad_frames``, never raised, so one bad frame cannot kill a stream.
        """
        if self._ready is not None:
            raise InputError("the previous clip was not taken: call take_clip() after a push that returns True")
        start = time.perf_counter()
        index = self._next_index if frame_index is None else int(frame_index)
        self._next_index = index + 1
        self._state.frames_seen += 1
        try:
            bgr = as_bgr(frame)
        except FrameError as exc:
            self._state.bad_frames += 1
            self._state.last_bad_frame = f"frame {index}: {exc.message}"
            self._pending_total += time.perf_counter() - start
            return False
        self._state.good_frames += 1
        t0 = time.perf_counter()
        sampled, frame_range = self.assembler.push(bgr, index)
        t1 = time.perf_counter()
        self._pending_preprocess += t1 - t0
        self._pending_total += t1 - start
        if sampled:
            self._state.sampled_frames += 1
        self._ready = frame_range
        return frame_range is not None

    def take_clip(self, copy: bool = True) -> PendingClip:
        """The clip the last :meth:`push` completed.  ``copy=False`` returns a view of the
        assembler's buffer, valid only until the next push (enough for an immediate call)."""
        if self._ready is None:
            raise InputError("no completed clip to take", hint="take_clip() follows a push() that returned True")
        clip = self.assembler.clip[0]
        taken = PendingClip(clip.copy() if copy else clip, self._ready, self._pending_preprocess,
                            self._pending_total, time.perf_counter())
        self._ready = None
        self._pending_preprocess = self._pending_total = 0.0
        self.in_flight += 1
        return taken

    def commit(self, descriptor: np.ndarray, clip: PendingClip) -> ClipInfo:
        """Push the backbone's descriptor of ``clip`` into the ring (newest slot)."""
        info = ClipInfo(self._next_clip, *clip.frame_range)
        self.ring.push(descriptor, info)
        self._next_clip += 1
        self._committed.append((info, self.ring.first_valid_slot))
        return info

    def finish(self, logits: np.ndarray, gates: np.ndarray, latency_ms: dict[str, float],
               **extra: Any) -> Prediction:
        """Turn the head's output on this core's ring into the :class:`Prediction` of the
        clip committed last; count it, keep it in :attr:`history`, call the listeners.

        ``extra``: more fields of :attr:`prediction_type` (e.g. ``stream_id``, ``batch_size``).
        """
        if not self._committed:
            raise InputError("finish() without a committed clip", hint="commit() the clip's descriptor first")
        info, first = self._committed.popleft()
        logits = np.asarray(logits, np.float32).reshape(-1).copy()
        valid = np.asarray(gates, np.float32).reshape(-1)[first:]
        probs = _softmax(logits)
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        labels = self.spec.labels
        threshold = self.spec.select_ratio * float(valid.max()) if valid.size else 0.0
        gate_list = [ClipGate(c.clip_index, c.frame_range, float(g), bool(g >= threshold))
                     for c, g in zip(self.ring.clips(), valid)]
        prediction = self.prediction_type(
            label=labels[int(order[0])], score=float(probs[order[0]]),
            top_k=[(labels[int(i)], float(probs[i])) for i in order],
            logits=logits, gates=gate_list, frame_range=(gate_list[0].frame_range[0], info.last_frame),
            clip_index=info.clip_index, latency_ms=latency_ms, ring_fill=len(gate_list),
            no_action_label=self.spec.no_action_label, **extra)
        self._state.clips += 1
        self.in_flight = max(0, self.in_flight - 1)
        self.history.append(prediction)
        for listener in self.listeners:
            listener(prediction)
        return prediction

    def check_frame(self, frame: np.ndarray) -> np.ndarray:
        """Validate/convert a frame like :meth:`push` does, raising FrameError if unusable."""
        return as_bgr(frame)

    def note_gap(self, frames_missed: int, seconds: float, reason: str = "") -> None:
        """Record a discontinuity: the partial clip is dropped (no clip spans the gap)."""
        self._state.gaps.append(GapRecord(self._next_index, int(frames_missed), float(seconds), reason))
        self._next_index += max(0, int(frames_missed))
        self.assembler.reset()
        self._ready = None
        if self.reset_ring_on_gap:
            self.ring.reset()

    def note_dropped(self, total_dropped: int) -> None:
        """Record how many frames the source has dropped so far (its running total)."""
        self._state.dropped_frames = int(total_dropped)

    def __repr__(self) -> str:
        s = self._state
        return (f"StreamCore(id={self.stream_id!r}, frames={s.frames_seen}, clips={s.clips}, "
                f"ring={self.ring.fill}/{self.spec.ring_size})")


# ----------------------------------------------------------------------------- the head step
def run_head(head: Any, cores: Sequence[StreamCore], *, batched: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """One head step over the rings of ``cores`` (each has just committed a clip).

    The rings are stacked ``[K, N, D]`` / ``[K, N]`` for one call; ``batched=False`` (a head
    engine with a fixed batch of 1) calls once per core.  ``head`` is anything with the
    backend's ``infer(feeds)`` (an engine, or :class:`~gcf_trt.runtime.head.NumpyHead`).

    Returns ``(logits [K, C], gates [K, N], calls)``.
    """
    if not cores:
        raise InputError("run_head needs at least one stream core")
    k = len(cores)
    if k == 1:
        feeds_list = [(cores[0].ring.descriptors, cores[0].ring.mask)]
    elif batched:
        feeds_list = [(np.concatenate([c.ring.descriptors for c in cores]),
                       np.concatenate([c.ring.mask for c in cores]))]
    else:
        feeds_list = [(c.ring.descriptors, c.ring.mask) for c in cores]
    logits, gates = [], []
    for descriptors, mask in feeds_list:
        out = head.infer({HEAD_INPUTS[0]: descriptors, HEAD_INPUTS[1]: mask})
        rows = descriptors.shape[0]
        logits.append(np.asarray(out[HEAD_OUTPUTS[0]], np.float32).reshape(rows, -1))
        gates.append(np.asarray(out[HEAD_OUTPUTS[1]], np.float32).reshape(rows, -1))
    logits_all, gates_all = np.concatenate(logits), np.concatenate(gates)
    if logits_all.shape[0] != k:
        raise EngineError(f"the head returned {logits_all.shape[0]} results for {k} rings")
    return logits_all, gates_all, len(feeds_list)
