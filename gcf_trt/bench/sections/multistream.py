"""4 streams: one MultiStreamClassifier against 4 separate StreamingClassifiers, same frames."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..fixtures import CameraFrames

STREAMS = 4
FRAME_SIZE = (160, 120)  # small frames: both sides preprocess the same pixels; the engines are the point


def _frames(spec, clips: int) -> dict[int, list[np.ndarray]]:
    count = ((clips - 1) * spec.stride + spec.clip_len) * spec.frame_step
    return {s: list(CameraFrames(count / 30.0, size=FRAME_SIZE, seed=50 + s)) for s in range(STREAMS)}


def _multi(multi, frames: dict[int, list[np.ndarray]]) -> tuple[int, float, dict[str, Any]]:
    """One timed pass of every stream through ``multi`` (already warm), from fresh stream state."""
    for sid in frames:
        if sid in multi.streams:
            multi.reset_stream(sid)
        else:
            multi.add_stream(sid)
    n = 0
    calls0 = multi.stats.backbone_calls
    t0 = time.perf_counter()
    for i in range(max(len(f) for f in frames.values())):
        for sid, fr in frames.items():
            if i < len(fr):
                n += len(multi.push(sid, fr[i]))
        n += len(multi.poll())
    n += len(multi.flush())
    seconds = time.perf_counter() - t0
    stats = multi.stats
    return n, seconds, {"mean_batch": stats.mean_batch, "backbone_calls": stats.backbone_calls - calls0,
                        "dispatch": multi.dispatch}


def _separate(engines, frames: dict[int, list[np.ndarray]]) -> tuple[int, float]:
    from ...runtime.stream import StreamingClassifier
    clfs = {sid: StreamingClassifier(engines) for sid in frames}
    try:
        n = 0
        t0 = time.perf_counter()
        for i in range(max(len(f) for f in frames.values())):
            for sid, fr in frames.items():
                if i < len(fr) and clfs[sid].push(fr[i]) is not None:
                    n += 1
        return n, time.perf_counter() - t0
    finally:
        for clf in clfs.values():
            clf.close()


def multistream_gain(engines_dir: Path, spec, *, clips: int, repeats: int = 3, deadline=None,
                     say=lambda m: None) -> dict[str, Any]:
    """Clips/s of 4 streams through one :class:`MultiStreamClassifier` (its defaults, ``max_batch=4``)
    over clips/s of 4 separate :class:`StreamingClassifier` (sharing loaded engines), pushed
    round-robin from one thread; runs alternate, median of ``repeats`` (fewer past the deadline)."""
    from ...runtime.engines import load_engines
    from ...runtime.multistream import MultiStreamClassifier
    frames = _frames(spec, clips)
    engines = load_engines(engines_dir)
    multi = MultiStreamClassifier(engines_dir, max_batch=STREAMS)
    multi_rates, sep_rates, info = [], [], {}
    try:
        # Warm-up on both sides, untimed: first calls build kernels (and, on OpenVINO, a model
        # compiled for THROUGHPUT); the multi-stream side also makes its batch-or-concurrent choice
        # on these dispatches, as a long-running app does in its first seconds.
        _separate(engines, {0: frames[0][: spec.frames_per_clip * 2]})
        _multi(multi, frames)
        for r in range(max(1, repeats)):
            order = (("multi", "separate") if r % 2 == 0 else ("separate", "multi"))
            for which in order:
                if which == "multi":
                    n, s, info = _multi(multi, frames)
                    multi_rates.append(n / s)
                else:
                    n, s = _separate(engines, frames)
                    sep_rates.append(n / s)
            say(f"  multistream round {r + 1}: {multi_rates[-1]:.1f} vs {sep_rates[-1]:.1f} clips/s")
            if deadline is not None and deadline.expired:
                break
    finally:
        multi.close()
        engines.close()
    multi_rate, sep = statistics.median(multi_rates), statistics.median(sep_rates)
    return {"streams": STREAMS, "clips_per_stream": clips, "frame_size": list(FRAME_SIZE),
            "multistream_clips_per_s": multi_rate, "separate_clips_per_s": sep,
            "multistream_clips_per_s_runs": multi_rates, "separate_clips_per_s_runs": sep_rates,
            "multistream_gain_4": multi_rate / sep, **info,
            "method": "frames pre-generated (decode excluded, preprocessing included), pushed round-robin "
                      "from one thread; MultiStreamClassifier(engines, max_batch=4) with its default flush "
                      "timeout and dispatch choice, warmed by one untimed pass (streams reset between "
                      "passes), vs 4 StreamingClassifier sharing one load_engines()"}


def section(ctx) -> dict[str, Any]:
    return multistream_gain(ctx.engines_dir, ctx.spec, clips=ctx.config.multistream_clips,
                            repeats=1 if ctx.config.quick else 3, deadline=ctx.deadline, say=ctx.say)
