"""ONNX Runtime session options on this machine, interleaved (one graph, many sessions)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..engines import CLIP
from ..timing import interleaved, summarize


def ort_options_sweep(path: Path, spec, *, say, **timing) -> dict[str, Any]:
    """Threads 1/all x spinning, graph optimisation level and execution mode, side by side."""
    import onnxruntime as ort
    from ...runtime.backends.onnxrt import session_options
    clip = np.random.default_rng(0).standard_normal((1, *spec.clip_shape)).astype(np.float32)
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    cores = os.cpu_count() or 1
    configs = {}
    for threads in (1, cores):
        for spinning in (False, True):
            configs[f"threads={threads} spin={int(spinning)} opt=all"] = (threads, spinning, "all", True)
    for level in ("extended", "basic"):
        configs[f"threads={cores} spin=0 opt={level}"] = (cores, False, level, True)
    configs[f"threads={cores} spin=0 opt=all parallel"] = (cores, False, "all", False)
    fns, meta = {}, {}
    for name, (threads, spinning, level, sequential) in configs.items():
        opts = session_options(threads, spinning, sequential)
        opts.graph_optimization_level = levels[level]
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        fns[name] = (lambda s=sess: s.run(None, {CLIP: clip}))
        meta[name] = {"threads": threads, "spinning": spinning, "graph_optimization_level": level,
                      "execution_mode": "sequential" if sequential else "parallel"}
    say(f"ONNX Runtime session options on {path.name}: {len(fns)} configs interleaved")
    samples = interleaved(fns, **timing)
    default = f"threads={cores} spin=0 opt=all"
    out = {name: {**meta[name], **summarize(s)} for name, s in samples.items()}
    for entry in out.values():
        entry["vs_project_default_p50"] = entry["p50_ms"] / out[default]["p50_ms"]
    return {"file": path.name, "configs": out, "project_default": default,
            "best": min(out, key=lambda k: out[k]["p50_ms"])}


def section(ctx) -> dict[str, Any]:
    out = {"fp32": ort_options_sweep(ctx.builds.fp32.file("backbone"), ctx.spec, say=ctx.say,
                                     **ctx.timing(0.25, share=0.5))}
    if ctx.builds.int8_file and not ctx.deadline.expired:
        out["int8"] = ort_options_sweep(ctx.builds.int8_file, ctx.spec, say=ctx.say, **ctx.timing(0.25, share=0.9))
    return out
