"""The measurement core: latency statistics, interleaved round-robin timing, section budgets.

Every comparison of the bench calls its candidates round-robin (:func:`interleaved`), one call
each per round with the starting candidate rotated every round, so background load on a shared
machine hits all of them alike: ratios are more trustworthy than absolute milliseconds.

Every section runs under a :class:`Deadline` (its time budget): timing loops stop when it
passes, and steps that cannot be cut short are skipped once it has passed, so no section can
take much longer than its budget, whatever the CPU.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GcfError

PERCENTILES = (50, 90, 95, 99)


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Latency statistics in milliseconds (and throughput per second of one caller)."""
    a = np.asarray(seconds, np.float64) * 1e3
    if a.size == 0:
        return {"count": 0}
    out = {"count": int(a.size), "mean_ms": float(a.mean()), "std_ms": float(a.std()),
           "min_ms": float(a.min()), "max_ms": float(a.max())}
    for p in PERCENTILES:
        out[f"p{p}_ms"] = float(np.percentile(a, p))
    out["throughput_per_s"] = float(1e3 / a.mean())
    return out


class Deadline:
    """A section's time budget, started when created.

    ``Deadline(None)`` never expires (used by direct calls of a section function).
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - self.elapsed()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def cap(self, duration: float | None, share: float = 1.0) -> float | None:
        """``duration`` limited to ``share`` of the time left (None stays None when unlimited)."""
        left = self.remaining()
        if left == float("inf"):
            return duration
        room = max(0.0, left * share)
        return room if duration is None else min(duration, room)


def interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int = 3, iters: int | None = None,
                duration: float | None = None, min_iters: int = 5, warmup_seconds: float = 0.0,
                progress: Callable[[str], None] | None = None,
                deadline: Deadline | None = None) -> dict[str, list[float]]:
    """Call every function round-robin and time each call (``time.perf_counter``).

    Warm-up: ``warmup`` rounds and at least ``warmup_seconds`` (first calls build kernels and
    thread pools).  Each round calls every function once; the starting function rotates every
    round so no candidate always follows the same neighbour.  Stops after ``iters`` rounds, or once
    ``duration`` seconds have passed and at least ``min_iters`` rounds ran; in any case once
    ``deadline`` has passed (after at least one measured round), so a slow CPU gets fewer rounds
    rather than a longer run.

    Returns:
        ``{name: [seconds per call, ...]}``.
    """
    if not fns:
        return {}
    if iters is None and duration is None:
        raise ValueError("give iters or duration")
    names = list(fns)
    t_warm = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - t_warm < warmup_seconds:
        for name in names:
            fns[name]()
        done += 1
        if deadline is not None and deadline.expired:
            break
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = last_report = time.perf_counter()
    rounds = 0
    while True:
        k = rounds % len(names)
        for name in names[k:] + names[:k]:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
        now = time.perf_counter()
        if progress and now - last_report > 10:
            progress(f"  {rounds} rounds, {now - start:.0f} s")
            last_report = now
        if iters is not None and rounds >= iters:
            break
        if duration is not None and now - start >= duration and rounds >= min_iters:
            break
        if deadline is not None and deadline.expired:
            break
    return samples


def error_text(exc: BaseException) -> str:
    """One line for an exception recorded as a result (``unavailable: ...``)."""
    if isinstance(exc, GcfError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
