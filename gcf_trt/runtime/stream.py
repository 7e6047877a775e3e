"""Streaming GCF-Net: one backbone call per new clip, the fusion head over a ring of N clips.

Per frame, :class:`StreamingClassifier.push`:

1. validates the frame (grayscale and BGRA are converted; NaN/inf, wrong dtype or channel
   count are *skipped and counted*, never raised, so one bad frame cannot kill a stream);
2. keeps every ``spec.frame_step``-th good frame (temporal subsampling) and preprocesses it
   once with the shared :class:`~gcf_trt.preprocess.Preprocessor` into a deque of the last
   ``clip_len`` preprocessed frames;
3. when a clip completes (clip k covers sampled frames ``[k*stride, k*stride + clip_len)``,
   exactly :func:`gcf_trt.preprocess.clips_from_frames`), runs the backbone once on it, pushes
   the descriptor into the :class:`~gcf_trt.runtime.ring.DescriptorRing` and runs the head over
   the ring, returning a :class:`Prediction`.

Nothing here imports torch.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import EngineError, FrameError, InputError
from ..preprocess import Preprocessor, as_bgr
from ..spec import ModelSpec
from .engines import Engines, load_engines
from .ring import ClipInfo, DescriptorRing

# Tensor names of the engines contract (docs/DESIGN.md "Tensor contract").  They are also in
# gcf_trt.compile.export, which imports torch, so the runtime keeps its own copy.
BACKBONE_INPUT, BACKBONE_OUTPUT = "clip", "descriptor"
HEAD_INPUTS, HEAD_OUTPUTS = ("descriptors", "mask"), ("logits", "gates")


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
        top_k: ``[(label, probability), ...]``, best first.
        logits: ``float32 [C]`` raw head logits.
        gates: the valid ring slots, oldest first, each with its clip's frame range.
        frame_range: (first, last) source frame index covered by the clips in the ring.
        clip_index: running index of the newest clip (0 for the first clip after a reset).
        latency_ms: ``preprocess`` (frames since the previous clip), ``backbone``, ``head`` and
            ``total`` (all ``push`` time since the previous prediction).
        ring_fill: number of valid clips the head fused.
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

    @property
    def gate_values(self) -> np.ndarray:
        """The valid gates as ``float32 [ring_fill]``, oldest first."""
        return np.asarray([g.gate for g in self.gates], np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (floats rounded to 6 significant digits for logs)."""
        return {
            "clip_index": self.clip_index,
            "frame_range": list(self.frame_range),
            "label": self.label,
            "score": round(float(self.score), 6),
            "top_k": [[name, round(float(p), 6)] for name, p in self.top_k],
            "logits": [round(float(v), 6) for v in self.logits],
            "gates": [{**g.to_dict(), "gate": round(float(g.gate), 6)} for g in self.gates],
            "ring_fill": self.ring_fill,
            "latency_ms": {k: round(float(v), 3) for k, v in self.latency_ms.items()},
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
    """Inspectable per-stream counters (a snapshot; see :attr:`StreamingClassifier.state`).

    Attributes:
        frames_seen: frames pushed (good or bad).
        good_frames: frames that passed validation.
        sampled_frames: good frames kept by ``frame_step`` subsampling.
        clips: clips assembled (= backbone calls = predictions).
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


# ----------------------------------------------------------------------------- cost
def measure_stage_costs(engines: Engines, iterations: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of one backbone call (one clip) and one head call (a full ring).

    This is the measurement behind the "no projection cache" decision in docs/STREAMING.md:
    the streaming step costs one backbone call plus one head call, so the head's share is
    ``head / (backbone + head)``.
    """
    spec = engines.spec
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((1, *spec.clip_shape)).astype(np.float32)
    ring = rng.standard_normal((1, spec.ring_size, spec.dim)).astype(np.float32)
    mask = np.ones((1, spec.ring_size), np.float32)

    def median_ms(call: Callable[[], object]) -> float:
        for _ in range(warmup):
            call()
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(times))

    backbone = median_ms(lambda: engines.backbone.infer({BACKBONE_INPUT: clip}))
    head = median_ms(lambda: engines.head.infer({HEAD_INPUTS[0]: ring, HEAD_INPUTS[1]: mask}))
    return {"backbone_ms": backbone, "head_ms": head, "head_share": head / (backbone + head)}


# ----------------------------------------------------------------------------- classifier
def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - float(np.max(logits))
    e = np.exp(z)
    return e / e.sum()


class StreamingClassifier:
    """Streaming GCF-Net action recognition over one video stream.

    Args:
        engines: an engines directory (``gcf-trt build``) or already loaded :class:`Engines`
            (then the caller keeps ownership and ``close()`` does not close them).
        runtime: force a runtime (``"onnxruntime"``, ``"openvino"``, ...) for a directory.
        top_k: how many classes :attr:`Prediction.top_k` lists.
        options: backend options (e.g. ``{"threads": 1}``), for a directory.
        expect_model_hash: refuse engines built from another model.
        history_size: predictions kept in :attr:`history` (gates per step, for action
            segmentation / temporal localisation built on top).
        reset_ring_on_gap: on a source gap, also empty the ring (default: keep the older clips;
            the partial clip is always discarded so no clip spans a discontinuity).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, engines: str | os.PathLike | Engines, runtime: str | None = None, top_k: int = 5,
                 *, options: dict[str, Any] | None = None, expect_model_hash: str | None = None,
                 history_size: int = 256, reset_ring_on_gap: bool = False):
        if isinstance(engines, Engines):
            if runtime is not None or options is not None:
                raise InputError("runtime/options apply when loading an engines directory, "
                                 "not to already loaded Engines")
            if expect_model_hash and engines.model_hash != expect_model_hash:
                raise EngineError(f"engines {engines.path} are for model {engines.model_hash}, "
                                  f"not {expect_model_hash}", hint="rebuild the engines from this checkpoint")
            self.engines, self._owns_engines = engines, False
        else:
            self.engines = load_engines(engines, runtime=runtime, options=options,
                                        expect_model_hash=expect_model_hash)
            self._owns_engines = True
        if int(top_k) < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        self.spec: ModelSpec = self.engines.spec
        self._check_contract()
        self.top_k = min(int(top_k), self.spec.num_classes)
        self.reset_ring_on_gap = reset_ring_on_gap
        self.assembler = ClipAssembler(self.spec)
        self.ring = DescriptorRing(self.spec.ring_size, self.spec.dim)
        self.history: collections.deque[Prediction] = collections.deque(maxlen=max(1, int(history_size)))
        self.listeners: list[Callable[[Prediction], None]] = []
        self._closed = False
        self.reset()

    def _check_contract(self) -> None:
        b, h = self.engines.backbone, self.engines.head
        if b.input_shapes and BACKBONE_INPUT not in b.input_shapes:
            raise EngineError(f"backbone engine inputs {sorted(b.input_shapes)} lack {BACKBONE_INPUT!r}")
        missing = [n for n in HEAD_INPUTS if h.input_shapes and n not in h.input_shapes]
        if missing:
            raise EngineError(f"head engine inputs {sorted(h.input_shapes)} lack {missing}")

    # --- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: partial clip, ring, counters and history (a fresh stream)."""
        self.assembler.reset()
        self.ring.reset()
        self.history.clear()
        self._state = StreamState()
        self._next_index = 0
        self._next_clip = 0
        self._pending_preprocess = 0.0  # seconds of preprocessing since the last prediction
        self._pending_total = 0.0       # seconds of push() since the last prediction

    @property
    def state(self) -> StreamState:
        """A snapshot of the stream's counters."""
        snap = dataclasses.replace(self._state, gaps=list(self._state.gaps))
        snap.ring_fill = self.ring.fill
        return snap

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    # --- input ---------------------------------------------------------------------------
    def push(self, frame: np.ndarray, frame_index: int | None = None) -> Prediction | None:
        """Feed one frame; returns a :class:`Prediction` when it completes a clip, else None.

        Args:
            frame: ``HxWx3`` BGR uint8 (grayscale/BGRA are converted).  Unusable frames are
                skipped and counted in ``state.bad_frames`` (use :meth:`check_frame` to get
                the error instead).
            frame_index: the frame's index in the source (e.g. when a threaded source dropped
                frames); default: the previous index + 1.
        """
        if self._closed:
            raise InputError("this StreamingClassifier is closed")
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
            return None
        self._state.good_frames += 1
        t0 = time.perf_counter()
        sampled, frame_range = self.assembler.push(bgr, index)
        self._pending_preprocess += time.perf_counter() - t0
        if sampled:
            self._state.sampled_frames += 1
        if frame_range is None:
            self._pending_total += time.perf_counter() - start
            return None
        return self._step(frame_range, start)

    def check_frame(self, frame: np.ndarray) -> np.ndarray:
        """Validate/convert a frame like :meth:`push` does, raising FrameError if unusable."""
        return as_bgr(frame)

    def note_gap(self, frames_missed: int, seconds: float, reason: str = "") -> None:
        """Record a discontinuity: the partial clip is dropped (no clip spans the gap)."""
        self._state.gaps.append(GapRecord(self._next_index, int(frames_missed), float(seconds), reason))
        self._next_index += max(0, int(frames_missed))
        self.assembler.reset()
        if self.reset_ring_on_gap:
            self.ring.reset()

    def note_dropped(self, total_dropped: int) -> None:
        """Record how many frames the source has dropped so far (its running total)."""
        self._state.dropped_frames = int(total_dropped)

    def _step(self, frame_range: tuple[int, int], start: float) -> Prediction:
        t0 = time.perf_counter()
        out = self.engines.backbone.infer({BACKBONE_INPUT: self.assembler.clip})
        descriptor = out[BACKBONE_OUTPUT]
        t1 = time.perf_counter()
        clip = ClipInfo(self._next_clip, *frame_range)
        self._next_clip += 1
        self.ring.push(descriptor, clip)
        out = self.engines.head.infer({HEAD_INPUTS[0]: self.ring.descriptors, HEAD_INPUTS[1]: self.ring.mask})
        t2 = time.perf_counter()
        logits = np.asarray(out[HEAD_OUTPUTS[0]], np.float32).reshape(-1)
        gates_all = np.asarray(out[HEAD_OUTPUTS[1]], np.float32).reshape(-1)
        prediction = self._make_prediction(logits, gates_all, clip, {
            "preprocess": self._pending_preprocess * 1e3,
            "backbone": (t1 - t0) * 1e3,
            "head": (t2 - t1) * 1e3,
            "total": (self._pending_total + time.perf_counter() - start) * 1e3,
        })
        self._pending_preprocess = self._pending_total = 0.0
        self._state.clips += 1
        self.history.append(prediction)
        for listener in self.listeners:
            listener(prediction)
        return prediction

    def _make_prediction(self, logits: np.ndarray, gates_all: np.ndarray, clip: ClipInfo,
                         latency: dict[str, float]) -> Prediction:
        probs = _softmax(logits)
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        labels = self.spec.labels
        first = self.ring.first_valid_slot
        valid = gates_all[first:]
        threshold = self.spec.select_ratio * float(valid.max()) if valid.size else 0.0
        gates = [ClipGate(info.clip_index, info.frame_range, float(g), bool(g >= threshold))
                 for info, g in zip(self.ring.clips(), valid)]
        return Prediction(
            label=labels[int(order[0])], score=float(probs[order[0]]),
            top_k=[(labels[int(i)], float(probs[i])) for i in order],
            logits=logits, gates=gates, frame_range=(gates[0].frame_range[0], clip.last_frame),
            clip_index=clip.clip_index, latency_ms=latency, ring_fill=self.ring.fill)

    # --- sources -------------------------------------------------------------------------
    def run(self, source: Any, *, max_frames: int | None = None, **source_options: Any) -> Iterator[Prediction]:
        """Stream a source and yield every prediction.

        Args:
            source: a URI / path / camera index for :func:`~gcf_trt.runtime.sources.open_source`,
                an opened :class:`~gcf_trt.runtime.sources.Source`, or any iterable of frames.
            max_frames: stop after this many frames from the source.
            **source_options: passed to ``open_source`` (``loop``, ``fps``, ``step``, ...).
        """
        from .sources import Source, SourceGap, open_source
        src = source if isinstance(source, Source) else open_source(source, **source_options)
        owns = src is not source
        dropped_before = self._state.dropped_frames  # a classifier may run several sources
        try:
            count = 0
            for item in src:
                self.note_dropped(dropped_before + src.stats.frames_dropped)
                if isinstance(item, SourceGap):
                    self.note_gap(item.frames_missed, item.seconds, item.reason)
                    continue
                prediction = self.push(item.image, item.index)
                count += 1
                if prediction is not None:
                    yield prediction
                if max_frames is not None and count >= max_frames:
                    break
            self.note_dropped(dropped_before + src.stats.frames_dropped)
        finally:
            if owns:
                src.close()

    def run_frames(self, frames: Iterable[np.ndarray]) -> list[Prediction]:
        """Push every frame of an iterable; return the predictions (convenience for tests/apps)."""
        return [p for p in (self.push(f) for f in frames) if p is not None]

    # --- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the engines if this classifier loaded them.  Idempotent."""
        if not self._closed:
            self._closed = True
            if self._owns_engines:
                self.engines.close()

    def __enter__(self) -> "StreamingClassifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.state
        return (f"StreamingClassifier({self.engines.path}, frames={s.frames_seen}, clips={s.clips}, "
                f"ring={s.ring_fill}/{self.spec.ring_size})")
