"""OpenVINO's own benchmark_app method on the same backbone files, for comparison.

benchmark_app's default: the THROUGHPUT hint, ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` requests kept
in flight by an ``AsyncInferQueue``, clips/s = completed requests / wall time.  This is the
ceiling for *throughput* on this CPU; the product's camera path is one stream at B=1 with the
LATENCY hint (``latency_hint_sync``, timed the same way here).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..engines import CLIP


def app_throughput(path: Path, clip_shape: tuple[int, ...], *, hint: str, seconds: float,
                   asynchronous: bool) -> dict[str, Any]:
    """Clips/s of ``path`` compiled for the CPU with ``hint`` (B=1), run for ``seconds``."""
    import openvino as ov
    from ...runtime.backends.openvino import shared_core
    core = shared_core()
    compiled = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": hint})
    clip = np.random.default_rng(0).standard_normal((1, *clip_shape)).astype(np.float32)
    nireq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if asynchronous else 1
    done = 0
    if asynchronous:
        queue = ov.AsyncInferQueue(compiled, nireq)
        for _ in range(nireq):  # warm-up
            queue.start_async({CLIP: clip})
        queue.wait_all()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            queue.start_async({CLIP: clip})  # blocks while every request is busy
            done += 1
        queue.wait_all()
    else:
        request = compiled.create_infer_request()
        request.infer({CLIP: clip})
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            request.infer({CLIP: clip})
            done += 1
    wall = time.perf_counter() - t0
    return {"hint": hint, "infer_requests": nireq, "num_streams": str(compiled.get_property("NUM_STREAMS")),
            "clips": done, "seconds": wall, "clips_per_s": done / wall}


def section(ctx) -> dict[str, Any]:
    from ..engines import unusable_runtimes
    reason = unusable_runtimes().get("openvino")
    if reason:
        return {"unavailable": reason}
    files = {"fp32": ctx.builds.fp32.file("backbone")}
    if ctx.builds.int8_file:
        files["int8"] = ctx.builds.int8_file
    runs = [(p, mode) for p in files for mode in ("throughput_async", "latency_sync")]
    seconds = 0.3 if ctx.config.quick else max(0.5, min(4.0, ctx.deadline.cap(4.0, 1.0 / len(runs)) or 4.0))
    out: dict[str, Any] = {"method": "benchmark_app defaults: THROUGHPUT hint, OPTIMAL_NUMBER_OF_INFER_REQUESTS "
                                     "via AsyncInferQueue, B=1; and the LATENCY hint with one synchronous request",
                           "files": {k: v.name for k, v in files.items()}}
    for precision, mode in runs:
        if ctx.deadline.expired:
            out[f"{precision}_{mode}"] = {"unavailable": "skipped: the section's time budget was spent"}
            continue
        hint = "THROUGHPUT" if mode == "throughput_async" else "LATENCY"
        out[f"{precision}_{mode}"] = app_throughput(files[precision], ctx.spec.clip_shape, hint=hint,
                                                    seconds=seconds, asynchronous=mode == "throughput_async")
    for precision in files:
        a, b = out.get(f"{precision}_throughput_async", {}), out.get(f"{precision}_latency_sync", {})
        if "clips_per_s" in a and "clips_per_s" in b:
            out[f"{precision}_throughput_over_latency"] = a["clips_per_s"] / b["clips_per_s"]
    return out
