"""One streaming step against naive sliding-window recomputation of the N clips."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..engines import CLIP, DESCRIPTOR, DESCRIPTORS, MASK
from ..timing import interleaved, summarize


def streaming_vs_naive(backbone, head, spec, *, say, alt_heads: dict[str, Any] | None = None,
                       **timing) -> dict[str, Any]:
    """Time the three ways to classify a window of N clips after a new clip arrives.

    * ``streaming``: backbone on the new clip (B=1), ring push, head over the ring; its head
      call is also timed (``head_in_situ``: the head right after a backbone call, as in a stream);
    * ``naive_sequential``: N backbone calls (B=1, one per clip of the window) + head - what a
      clip-level model without a descriptor ring recomputes every step;
    * ``naive_batched``: the N clips as one B=N backbone call + head (the strongest naive
      baseline: batching amortises per-call overhead);
    * ``streaming[LABEL]``: the streaming step with another head configuration (``alt_heads``).
    """
    from ...runtime.ring import ClipInfo, DescriptorRing
    n = spec.ring_size
    rng = np.random.default_rng(2)
    window = rng.standard_normal((n, *spec.clip_shape)).astype(np.float32)
    clips1 = [np.ascontiguousarray(window[i:i + 1]) for i in range(n)]
    mask = np.ones((1, n), np.float32)
    head_times: dict[str, list[float]] = {}

    def make_step(label: str, head_backend) -> Callable[[], Any]:
        ring = DescriptorRing(n, spec.dim)
        for i in range(n):
            ring.push(backbone.infer({CLIP: clips1[i]})[DESCRIPTOR], ClipInfo(i, i, i))
        state = {"i": 0}
        times = head_times.setdefault(label, [])

        def step():
            i = state["i"] = (state["i"] + 1) % n
            ring.push(backbone.infer({CLIP: clips1[i]})[DESCRIPTOR], ClipInfo(i, i, i))
            t0 = time.perf_counter()
            out = head_backend.infer({DESCRIPTORS: ring.descriptors, MASK: ring.mask})
            times.append(time.perf_counter() - t0)
            return out
        return step

    def naive_sequential():
        desc = np.concatenate([backbone.infer({CLIP: c})[DESCRIPTOR] for c in clips1])
        return head.infer({DESCRIPTORS: desc[None], MASK: mask})

    def naive_batched():
        desc = backbone.infer({CLIP: window})[DESCRIPTOR]
        return head.infer({DESCRIPTORS: desc[None], MASK: mask})

    fns = {"streaming": make_step("streaming", head), "naive_sequential": naive_sequential,
           "naive_batched": naive_batched}
    for label, alt in (alt_heads or {}).items():
        fns[f"streaming[{label}]"] = make_step(f"streaming[{label}]", alt)
    say(f"streaming vs naive recompute (N={n}): {len(fns)} variants interleaved")
    samples = interleaved(fns, progress=say, **timing)
    out: dict[str, Any] = {name: summarize(s) for name, s in samples.items()}
    out["ring_size"] = n
    for name in ("naive_sequential", "naive_batched"):
        out[f"{name}_over_streaming_p50"] = out[name]["p50_ms"] / out["streaming"]["p50_ms"]
        out[f"{name}_over_streaming_mean"] = out[name]["mean_ms"] / out["streaming"]["mean_ms"]
    for label in alt_heads or {}:
        key = f"streaming[{label}]"
        out[f"naive_sequential_over_{key}_p50"] = out["naive_sequential"]["p50_ms"] / out[key]["p50_ms"]
    out["head_in_situ"] = {}
    for label, times in head_times.items():
        h = summarize(times[-len(samples[label]):])  # drop the warm-up calls
        out["head_in_situ"][label] = {**h, "fraction_of_step_p50": h["p50_ms"] / out[label]["p50_ms"]}
    return out


def section(ctx) -> dict[str, Any]:
    """On the engines a user gets, loaded as the runtime loads them (``load_engines``, whose
    head may be the numpy head); the ONNX head on ONNX Runtime for comparison."""
    from ...runtime.backends import open_backend
    from ...runtime.engines import load_engines
    engines = load_engines(ctx.engines_dir)
    head_onnx = ctx.engines_dir / engines.manifest.component("head")["file"]
    alt = {label: open_backend("onnxruntime", head_onnx, options)
           for label, options in (("head.onnx onnxruntime", {}), ("head.onnx onnxruntime threads=1", {"threads": 1}))}
    try:
        out = streaming_vs_naive(engines.backbone, engines.head, ctx.spec, say=ctx.say, alt_heads=alt,
                                 **ctx.timing(0.5))
    finally:
        for b in alt.values():
            b.close()
        engines.close()
    out["backbone"] = f"{engines.backbone.runtime} {engines.backbone.precision} (the CPU build, load_engines)"
    out["head_runtime"] = repr(engines.head)
    return out
