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

Steps 1-2 and the ring are one :class:`~gcf_trt.runtime.core.StreamCore`; this class is the
one-stream drive loop of that core, the same code :class:`~gcf_trt.runtime.multistream.MultiStreamClassifier`
runs for many.  Nothing here imports torch.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..spec import BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, ModelSpec
from .core import (ClipAssembler, ClipGate, GapRecord, PendingClip, Prediction, StreamCore, StreamState,
                   run_head)
from .engines import Engines, borrow_or_load

__all__ = ["ClipAssembler", "ClipGate", "FrameResult", "GapRecord", "PendingClip", "Prediction", "StreamCore",
           "StreamState", "StreamingClassifier", "measure_stage_costs", "run_head", "consume_source"]


@dataclass
class FrameResult:
    """One item of :meth:`StreamingClassifier.run` with ``frames=True``.

    Attributes:
        frame: the source's :class:`~gcf_trt.runtime.sources.SourceFrame` (``image``, ``index``,
            ``timestamp``), e.g. for drawing the prediction on it.
        prediction: the prediction this frame completed, else None.
    """

    frame: Any
    prediction: Prediction | None


# ----------------------------------------------------------------------------- cost
def measure_stage_costs(engines: Engines, iterations: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of one backbone call (one clip) and one head call (a full ring).

    The streaming step costs one backbone call plus one head call, so the head's share is
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


def consume_source(src: Any, core: StreamCore, on_frame: Callable[[Any], Any], *,
                   max_frames: int | None = None) -> Iterator[tuple[Any, Any]]:
    """The one loop that reads a :class:`~gcf_trt.runtime.sources.Source` into a core.

    Gaps go to ``core.note_gap``, the source's drop counter to ``core.note_dropped`` (added to
    what the core had counted before, so one core may read several sources); each frame goes to
    ``on_frame(frame)``, and ``(frame, its result)`` is yielded.
    """
    from .sources import SourceGap
    dropped_before = core.state.dropped_frames
    count = 0
    for item in src:
        core.note_dropped(dropped_before + src.stats.frames_dropped)
        if isinstance(item, SourceGap):
            core.note_gap(item.frames_missed, item.seconds, item.reason)
            continue
        yield item, on_frame(item)
        count += 1
        if max_frames is not None and count >= max_frames:
            break
    core.note_dropped(dropped_before + src.stats.frames_dropped)


# ----------------------------------------------------------------------------- classifier
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
        head: for a directory: ``"auto"`` (the numpy head where the build shipped it, on CPU
            runtimes), ``"numpy"`` or ``"engine"`` (see :func:`~gcf_trt.runtime.engines.load_engines`).

    The stream's state is :attr:`core` (a :class:`~gcf_trt.runtime.core.StreamCore`);
    ``state``, ``ring``, ``assembler``, ``history`` and ``listeners`` are the core's.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, engines: str | os.PathLike | Engines, runtime: str | None = None, top_k: int = 5,
                 *, options: dict[str, Any] | None = None, expect_model_hash: str | None = None,
                 history_size: int = 256, reset_ring_on_gap: bool = False, head: str = "auto"):
        if int(top_k) < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}", hint="ask for at least one class")
        self.engines, self._owns_engines = borrow_or_load(engines, runtime=runtime, options=options,
                                                          expect_model_hash=expect_model_hash, head=head)
        self.spec: ModelSpec = self.engines.spec
        self.core = StreamCore(self.spec, top_k=top_k, history_size=history_size,
                               reset_ring_on_gap=reset_ring_on_gap)
        head_batch = (self.engines.head.input_shapes.get(HEAD_INPUTS[0]) or (-1,))[0]
        self._head_batched = head_batch in (-1, 0, None)
        self._closed = False

    # --- the core's state ----------------------------------------------------------------
    @property
    def state(self) -> StreamState:
        """A snapshot of the stream's counters."""
        return self.core.state

    @property
    def ring(self):
        return self.core.ring

    @property
    def assembler(self) -> ClipAssembler:
        return self.core.assembler

    @property
    def history(self):
        return self.core.history

    @property
    def listeners(self) -> list[Callable[[Prediction], None]]:
        return self.core.listeners

    @property
    def top_k(self) -> int:
        return self.core.top_k

    @property
    def reset_ring_on_gap(self) -> bool:
        return self.core.reset_ring_on_gap

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    def reset(self) -> None:
        """Forget everything: partial clip, ring, counters and history (a fresh stream)."""
        self.core.reset()

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
            raise InputError("this StreamingClassifier is closed", hint="create a new one")
        if not self.core.push(frame, frame_index):
            return None
        return self._step(self.core.take_clip(copy=False))

    def _step(self, clip: PendingClip) -> Prediction:
        t0 = time.perf_counter()
        out = self.engines.backbone.infer({BACKBONE_INPUT: clip.clip[None]})
        t1 = time.perf_counter()
        self.core.commit(out[BACKBONE_OUTPUT], clip)
        logits, gates, _ = run_head(self.engines.head, [self.core], batched=self._head_batched)
        t2 = time.perf_counter()
        return self.core.finish(logits[0], gates[0], {
            "preprocess": clip.preprocess_s * 1e3, "backbone": (t1 - t0) * 1e3, "head": (t2 - t1) * 1e3,
            "total": (clip.push_s + t2 - t0) * 1e3})

    def check_frame(self, frame: np.ndarray) -> np.ndarray:
        """Validate/convert a frame like :meth:`push` does, raising FrameError if unusable."""
        return self.core.check_frame(frame)

    def note_gap(self, frames_missed: int, seconds: float, reason: str = "") -> None:
        """Record a discontinuity: the partial clip is dropped (no clip spans the gap)."""
        self.core.note_gap(frames_missed, seconds, reason)

    def note_dropped(self, total_dropped: int) -> None:
        """Record how many frames the source has dropped so far (its running total)."""
        self.core.note_dropped(total_dropped)

    # --- sources -------------------------------------------------------------------------
    def run(self, source: Any, *, max_frames: int | None = None, frames: bool = False,
            **source_options: Any) -> Iterator[Prediction] | Iterator[FrameResult]:
        """Stream a source and yield every prediction (or, with ``frames=True``, every frame
        with the prediction it completed, as :class:`FrameResult`, e.g. to draw or write it).

        Args:
            source: a URI / path / camera index for :func:`~gcf_trt.runtime.sources.open_source`,
                an opened :class:`~gcf_trt.runtime.sources.Source`, or any iterable of frames.
            max_frames: stop after this many frames from the source.
            frames: yield a :class:`FrameResult` per frame instead of predictions only.
            **source_options: passed to ``open_source`` (``loop``, ``fps``, ``step``, ...).
        """
        from .sources import Source, open_source
        src = source if isinstance(source, Source) else open_source(source, **source_options)
        try:
            for item, prediction in consume_source(src, self.core, lambda f: self.push(f.image, f.index),
                                                   max_frames=max_frames):
                if frames:
                    yield FrameResult(item, prediction)
                elif prediction is not None:
                    yield prediction
        finally:
            if src is not source:
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
