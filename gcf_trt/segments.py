"""Temporal action localization from GCF gates (numpy only: the runtime imports this).

Each clip has a gate in [0, 1] (the head's "this clip is relevant") and a frame range.  A
*segment* is a run of consecutive clips found by hysteresis thresholding:

1. a run is a maximal stretch of consecutive clips with ``gate >= low``; it becomes a
   candidate only if at least one of its clips has ``gate >= high``;
2. candidates separated by at most ``merge_gap`` clips are merged (the gap clips join);
3. segments with fewer than ``min_clips`` clips are dropped.

A segment spans the frames ``[first clip's first frame, last clip's last frame]`` and scores
the mean gate of its clips.  :func:`segments_from_gates` is the offline form;
:class:`SegmentTracker` the incremental one (a stream pushes one clip at a time, or hands it
its ring's gates); both give exactly the same segments for the same gates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .spec import ACTION_GATE

DEFAULT_HIGH = ACTION_GATE
DEFAULT_LOW = 0.35
DEFAULT_MERGE_GAP = 1
DEFAULT_MIN_CLIPS = 2


@dataclass(frozen=True)
class Segment:
    """A detected action segment: frames ``start..end`` (inclusive), clip indices, score."""

    start: int
    end: int
    score: float
    first_clip: int
    last_clip: int

    @property
    def num_clips(self) -> int:
        return self.last_clip - self.first_clip + 1

    def to_dict(self) -> dict[str, Any]:
        return {"start": int(self.start), "end": int(self.end), "score": round(float(self.score), 6),
                "first_clip": int(self.first_clip), "last_clip": int(self.last_clip)}


def temporal_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive integer frame ranges ``(start, end)``."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return inter / union


class SegmentTracker:
    """Incremental segment extraction.

    Use :meth:`push` with each clip's final gate in order, or :meth:`update` with the gates of
    a streaming ring (objects or dicts with ``clip_index``, ``frame_range``, ``gate``, oldest
    first, as :class:`gcf_trt.runtime.stream.Prediction` ``.gates``): a clip's gate is taken
    once ``delay`` newer clips exist (its bidirectional fusion has then seen its future
    neighbours; use the head's ``long_range`` for gates equal to offline ones).  Both return
    the segments completed by that call; :meth:`flush` ends the stream.

    Args:
        high, low: hysteresis thresholds (``low <= high``).
        merge_gap: candidates at most this many clips apart are merged.
        min_clips: shorter segments are dropped.
        delay: clips to wait before a ring gate is final (for :meth:`update`).
    """

    def __init__(self, high: float = DEFAULT_HIGH, low: float | None = DEFAULT_LOW,
                 merge_gap: int = DEFAULT_MERGE_GAP, min_clips: int = DEFAULT_MIN_CLIPS, delay: int = 0):
        low = high if low is None else low
        if not 0.0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
        if merge_gap < 0 or min_clips < 1 or delay < 0:
            raise ValueError("merge_gap and delay must be >= 0 and min_clips >= 1")
        self.high, self.low = float(high), float(low)
        self.merge_gap, self.min_clips, self.delay = int(merge_gap), int(min_clips), int(delay)
        self.reset()

    def reset(self) -> None:
        self._index = 0                       # index of the next pushed clip
        self._clips: dict[int, tuple[tuple[int, int], float]] = {}  # clips of run/pending/gap
        self._run: list[int] | None = None    # current run of clips >= low
        self._run_high = False
        self._pending: tuple[int, int] | None = None  # last candidate (first, last), may still merge
        self._last_final = -1                 # ring mode: last clip index taken
        self._latest: list[tuple[int, tuple[int, int], float]] = []
        self.segments: list[Segment] = []     # every segment completed so far
        self._out: list[Segment] = []         # completed by the current call

    # -- offline / one clip at a time -------------------------------------------------
    def push(self, gate: float, frame_range: Sequence[int]) -> list[Segment]:
        """Add the next clip's final gate; returns segments that this clip completed."""
        i = self._index
        self._index += 1
        g = float(gate)
        self._clips[i] = ((int(frame_range[0]), int(frame_range[1])), g)
        if g >= self.low:
            if self._run is None:
                self._run, self._run_high = [i, i], False
            self._run[1] = i
            self._run_high |= g >= self.high
        else:
            self._close_run()
        # The pending candidate can only merge with a run starting at <= last + merge_gap + 1.
        if self._pending is not None:
            reach = self._pending[1] + self.merge_gap + 1
            next_start = self._run[0] if self._run is not None else i + 1
            if next_start > reach:
                self._emit_pending()
        self._forget()
        return self._take()

    def flush(self) -> list[Segment]:
        """End of the stream: finalize pending ring clips and close every open segment."""
        done: list[Segment] = []
        for idx, rng, g in self._latest:
            if idx > self._last_final:
                done += self.push(g, rng)
                self._last_final = idx
        self._latest = []
        self._close_run()
        self._emit_pending()
        return done + self._take()

    @property
    def open_segment(self) -> Segment | None:
        """The segment in progress (not final: it may still grow or merge), or None."""
        span = None
        if self._run is not None and self._run_high:
            span = self._run[:]
            if self._pending is not None and span[0] - self._pending[1] - 1 <= self.merge_gap:
                span[0] = self._pending[0]
        elif self._pending is not None:
            span = list(self._pending)
        return self._segment(*span) if span else None

    # -- streaming ring ------------------------------------------------------------------
    def update(self, clip_gates: Iterable[Any]) -> list[Segment]:
        """Take the gates of a ring (oldest first); returns the segments completed now."""
        items = []
        for c in clip_gates:
            get = c.get if isinstance(c, dict) else (lambda k, c=c: getattr(c, k))
            fr = get("frame_range")
            items.append((int(get("clip_index")), (int(fr[0]), int(fr[1])), float(get("gate"))))
        if not items:
            return []
        done: list[Segment] = []
        newest = max(idx for idx, _, _ in items)
        if newest < self._last_final:  # the stream was reset: close everything, start over
            done += self.flush()
            segments = self.segments
            self.reset()
            self.segments = segments
        for idx, rng, g in sorted(items):
            if idx <= self._last_final or idx > newest - self.delay:
                continue
            if self._last_final >= 0 and idx != self._last_final + 1:
                self._close_run()        # clips went missing: do not bridge them
                self._emit_pending()
            done += self.push(g, rng)
            self._last_final = idx
        self._latest = sorted(items)
        return done + self._take()

    # -- internals -----------------------------------------------------------------------
    def _take(self) -> list[Segment]:
        out, self._out = self._out, []
        return out

    def _close_run(self) -> None:
        if self._run is None:
            return
        run, high = self._run, self._run_high
        self._run, self._run_high = None, False
        if not high:
            return
        if self._pending is not None and run[0] - self._pending[1] - 1 <= self.merge_gap:
            self._pending = (self._pending[0], run[1])
        else:
            self._emit_pending()
            self._pending = (run[0], run[1])

    def _emit_pending(self) -> None:
        if self._pending is None:
            return
        seg = self._final(*self._pending)
        self._pending = None
        if seg is not None:
            self.segments.append(seg)
            self._out.append(seg)

    def _final(self, first: int, last: int) -> Segment | None:
        if last - first + 1 < self.min_clips:
            return None
        return self._segment(first, last)

    def _segment(self, first: int, last: int) -> Segment:
        gates = [self._clips[i][1] for i in range(first, last + 1)]
        return Segment(self._clips[first][0][0], self._clips[last][0][1], float(np.mean(gates)), first, last)

    def _forget(self) -> None:
        keep = [self._index - 1]
        if self._run is not None:
            keep.append(self._run[0])
        if self._pending is not None:
            keep.append(self._pending[0])
        lo = min(keep)
        for i in [i for i in self._clips if i < lo]:
            del self._clips[i]


def segments_from_gates(gates: Sequence[float] | np.ndarray, frame_ranges: Sequence[Sequence[int]], *,
                        high: float = DEFAULT_HIGH, low: float | None = DEFAULT_LOW,
                        merge_gap: int = DEFAULT_MERGE_GAP, min_clips: int = DEFAULT_MIN_CLIPS) -> list[Segment]:
    """Segments of one clip sequence (see the module docstring), ordered by start.

    Args:
        gates: per-clip gates in clip order.
        frame_ranges: per-clip ``(first, last)`` source frames (inclusive), same length.
    """
    gates = np.asarray(gates, np.float64).reshape(-1)
    if len(gates) != len(frame_ranges):
        raise ValueError(f"{len(gates)} gates but {len(frame_ranges)} frame ranges")
    tracker = SegmentTracker(high, low, merge_gap, min_clips)
    out: list[Segment] = []
    for g, fr in zip(gates, frame_ranges):
        out += tracker.push(g, fr)
    out += tracker.flush()
    return out
