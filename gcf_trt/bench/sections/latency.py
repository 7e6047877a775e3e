"""Backbone latency on every backend, and the fusion head against one backbone call."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..engines import DESCRIPTORS, MASK, Candidate
from ..timing import error_text, interleaved, summarize


def backbone_latency(cands: list[Candidate], fns: dict[str, Callable[[], Any]], *, say,
                     **timing) -> dict[str, Any]:
    """Latency per clip (B=1) of every opened candidate, interleaved; unavailable ones with the reason."""
    say(f"backbone latency: {len(fns)} backends interleaved")
    samples = interleaved(fns, progress=say, **timing)
    out = {}
    for c in cands:
        entry = c.describe()
        if samples.get(c.name):
            entry.update(summarize(samples[c.name]))
            entry["samples_ms"] = [round(s * 1e3, 4) for s in samples[c.name]]
        out[c.name] = entry
    torch_p50 = out.get("torch_eager_fp32", {}).get("p50_ms")
    for entry in out.values():
        if torch_p50 and entry.get("p50_ms"):
            entry["speedup_vs_torch"] = torch_p50 / entry["p50_ms"]
    return out


def section_backbone(ctx) -> dict[str, Any]:
    return backbone_latency(ctx.candidates, ctx.fns, say=ctx.say, **ctx.timing())


# ----------------------------------------------------------------------------- head
def export_heads(model, work: Path, ring_sizes: Sequence[int]) -> dict[int, Path]:
    """``head.onnx`` of the same weights for each ring size N (the head's weights do not depend on N)."""
    from ...compile.export import export_head
    from ...compile.model import GCFNet
    from ...spec import ModelSpec
    out = {}
    for n in ring_sizes:
        other = GCFNet(ModelSpec.from_dict({**model.spec.to_dict(), "ring_size": int(n)}))
        other.load_state_dict(model.state_dict())
        path = work / f"head_n{n}.onnx"
        export_head(other.eval(), path)
        out[int(n)] = path
    return out


def head_latency(heads: dict[str, tuple[dict[str, Any], Any]], dim: int, backbone_name: str,
                 backbone_fn: Callable[[], Any], *, say, **timing) -> dict[str, Any]:
    """Head latency per configuration, interleaved with one backbone call (for the ratio).

    Args:
        heads: ``{name: (meta, backend)}``; ``meta`` has ``ring_size`` and ``as_built``.
    """
    rng = np.random.default_rng(1)
    fns: dict[str, Callable[[], Any]] = {f"backbone:{backbone_name}": backbone_fn}
    for name, (meta, backend) in heads.items():
        n = meta["ring_size"]
        feeds = {DESCRIPTORS: rng.standard_normal((1, n, dim)).astype(np.float32), MASK: np.ones((1, n), np.float32)}
        backend.infer(feeds)
        fns[name] = (lambda b=backend, f=feeds: b.infer(f))
    say(f"head latency: {len(heads)} heads + 1 backbone interleaved")
    samples = interleaved(fns, progress=say, **timing)
    bb = summarize(samples[f"backbone:{backbone_name}"])
    out = {}
    for name, (meta, _) in heads.items():
        s = summarize(samples[name])
        out[name] = {**meta, **s, "fraction_of_backbone_p50": s["p50_ms"] / bb["p50_ms"],
                     "fraction_of_backbone_mean": s["mean_ms"] / bb["mean_ms"]}
    return {"backbone": {"name": backbone_name, **bb}, "heads": out}


def section_head(ctx) -> dict[str, Any]:
    """The head as the runtime runs it (``load_engines``' head: the numpy head where the build
    ships one, else the head engine), and ``head.onnx`` on ONNX Runtime (default threads and one
    thread) for comparison; for the model's ring size N and, in a full run, N = 16 and 32 (the
    same weights exported again)."""
    from ...runtime.backends import open_backend
    from ...runtime.engines import load_engines
    from ...runtime.head import NumpyHead
    spec, engines_dir = ctx.spec, ctx.engines_dir
    engines = load_engines(engines_dir)
    built = engines.head
    onnx_files = {spec.ring_size: engines_dir / engines.manifest.component("head")["file"]}
    skipped = []
    for n in (n for n in ctx.config.head_ring_sizes if n != spec.ring_size):
        # an export takes seconds; keep at least half the budget for the timing itself
        if ctx.deadline.remaining() < 0.5 * (ctx.deadline.seconds or 0):
            skipped.append(n)
            continue
        ctx.say(f"exporting the head for N = {n}")
        onnx_files.update(export_heads(ctx.model, ctx.work, [n]))
    comp = engines.manifest.component("head")

    def as_built(n: int):
        if n == spec.ring_size:
            return built  # exactly what the runtime runs
        if isinstance(built, NumpyHead):
            return NumpyHead(built.path)  # N-agnostic: the same weights serve every ring size
        return open_backend(comp["runtime"], onnx_files[n], comp.get("options") or {})
    variants = [("as built", built.runtime, {}, as_built)]
    for label, options in (("head.onnx onnxruntime", {}), ("head.onnx onnxruntime threads=1", {"threads": 1})):
        variants.append((label, "onnxruntime", options,
                         lambda n, options=options: open_backend("onnxruntime", onnx_files[n], options)))
    heads, errors = {}, {}
    for label, runtime, options, opener in variants:
        for n in sorted(onnx_files):
            name = f"head:{label}:N{n}"
            meta = {"variant": label, "runtime": runtime, "ring_size": n, "options": options,
                    "as_built": label == "as built"}
            try:
                backend = opener(n)
                heads[name] = ({**meta, "backend": repr(backend)}, backend)
            except Exception as exc:  # noqa: BLE001
                errors[name] = error_text(exc)
    main = _main_backbone(ctx)
    try:
        out = head_latency(heads, spec.dim, main, ctx.fns[main], say=ctx.say, **ctx.timing(0.5))
    finally:
        for _, backend in heads.values():
            if backend is not built:
                backend.close()
        engines.close()
    out["unavailable"] = errors
    if skipped:
        out["skipped_ring_sizes"] = {"ring_sizes": skipped, "reason": "the section's time budget (exports)"}
    out["as_built"] = repr(built)
    return out


def _main_backbone(ctx) -> str:
    """The backbone the head is compared with: the CPU build's, else ONNX Runtime FP32."""
    for name in ("cpu_build", "fp32_build", "onnxruntime_fp32"):
        if name in ctx.fns:
            return name
    raise RuntimeError("no backbone could be opened")
