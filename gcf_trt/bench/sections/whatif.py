"""What-ifs measured in the same run: proposals for other files, not what the product runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..engines import DESCRIPTORS, MASK
from ..timing import interleaved, summarize


def shift_matmul_head(model):
    """The GCF head with its five shifted sums written as one MatMul by a constant 0/1 matrix.

    Same weights and maths as :class:`gcf_trt.compile.model.GCFHead` (``_shift`` is a Slice +
    Concat per offset); only the graph is smaller.  A what-if for the head's per-op overhead.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    head, n = model.head, model.spec.ring_size

    class ShiftMatmulHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = head
            shift = torch.zeros(n, 5 * n)
            for k, s in enumerate(head.offsets):  # out[i] += z_k[i - s]
                for i in range(n):
                    if 0 <= i - s < n:
                        shift[i, k * n + i - s] = 1.0
            self.register_buffer("shift", shift)

        def forward(self, descriptors, mask):
            h = self.h
            mask = mask.to(descriptors.dtype)
            m = mask.unsqueeze(-1)
            x = F.relu(h.proj(descriptors)) * m
            z = h.fuse(x).unflatten(-1, (5, h.hidden)).transpose(1, 2).flatten(1, 2)  # [B, 5N, E]
            f = (x + F.relu(h.fuse_bias + self.shift @ z)) * m
            gates = torch.sigmoid(h.gate(f).squeeze(-1)) * mask
            keep = (gates >= h.select_ratio * gates.amax(dim=1, keepdim=True)).to(f.dtype) * mask
            w = gates * keep
            video = (w.unsqueeze(-1) * f).sum(1) / (w.sum(1, keepdim=True) + 1e-6)
            return h.classifier(video), gates

    return ShiftMatmulHead().eval()


def whatif_head_graph(model, built_head: Path, work: Path, backbone_name: str, backbone_fn, *,
                      say, **timing) -> dict[str, Any]:
    """Built head vs a smaller head graph (:func:`shift_matmul_head`), both ONNX Runtime 1 thread."""
    import onnx
    import torch
    from ...compile.export import HEAD_INPUTS, HEAD_OUTPUTS, _export
    from ...runtime.backends import open_backend
    path = work / "head_shift_matmul.onnx"
    batch = torch.export.Dim("batch", min=1, max=256)
    spec = model.spec
    example = (torch.randn(2, spec.ring_size, spec.dim), torch.ones(2, spec.ring_size))
    _export(shift_matmul_head(model), example, path, HEAD_INPUTS, HEAD_OUTPUTS,
            {DESCRIPTORS: {0: batch}, MASK: {0: batch}})
    rng = np.random.default_rng(3)
    feeds = {DESCRIPTORS: rng.standard_normal((4, spec.ring_size, spec.dim)).astype(np.float32),
             MASK: np.ones((4, spec.ring_size), np.float32)}
    feeds[MASK][0, : spec.ring_size // 2] = 0
    built = open_backend("onnxruntime", built_head, {"threads": 1})
    alt = open_backend("onnxruntime", path, {"threads": 1})
    a, b = built.infer(feeds), alt.infer(feeds)
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    one = {k: np.ascontiguousarray(v[:1]) for k, v in feeds.items()}
    say("what-if: head graph size")
    samples = interleaved({"backbone": backbone_fn, "built": lambda: built.infer(one),
                           "shift_matmul": lambda: alt.infer(one)}, **timing)
    stats = {k: summarize(v) for k, v in samples.items()}
    return {"nodes": {"built": len(onnx.load(str(built_head)).graph.node), "shift_matmul": len(onnx.load(str(path)).graph.node)},
            "max_abs_output_diff": diff, "backbone": backbone_name, "runtime": "onnxruntime threads=1",
            "p50_ms": {k: v["p50_ms"] for k, v in stats.items()},
            "fraction_of_backbone_p50": {k: stats[k]["p50_ms"] / stats["backbone"]["p50_ms"]
                                         for k in ("built", "shift_matmul")},
            "shift_matmul_over_built_p50": stats["shift_matmul"]["p50_ms"] / stats["built"]["p50_ms"]}


def fused_step_graph(backbone_file: Path, head_file: Path, dst: Path, ring_size: int, dim: int) -> Path:
    """One ONNX graph for a whole streaming step: ``clip [B,3,T,H,W]``, the ring's older
    ``ring_prev [B,N-1,D]`` and ``mask [B,N]`` -> ``descriptor``, ``logits``, ``gates``.

    The backbone and head.onnx as built, joined by ``Concat(ring_prev, descriptor)``: the head
    runs inside the engine's call instead of a call (or numpy) of its own.  A what-if."""
    import onnx
    from onnx import TensorProto, compose, helper
    from ...spec import BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS
    plain_bb, plain_hd = onnx.load(str(backbone_file)), onnx.load(str(head_file))
    bb, hd = compose.add_prefix(plain_bb, "bb/"), compose.add_prefix(plain_hd, "hd/")  # copies
    # the step's own inputs and outputs keep the contract's names (runtimes name ports by them)
    names = {f"bb/{BACKBONE_INPUT}": BACKBONE_INPUT, f"bb/{BACKBONE_OUTPUT}": BACKBONE_OUTPUT,
             f"hd/{HEAD_INPUTS[1]}": HEAD_INPUTS[1], **{f"hd/{o}": o for o in HEAD_OUTPUTS}}
    nodes = [*bb.graph.node,
             helper.make_node("Unsqueeze", [BACKBONE_OUTPUT, "step/axis1"], ["step/newest"]),
             helper.make_node("Concat", ["ring_prev", "step/newest"], [f"hd/{HEAD_INPUTS[0]}"], axis=1),
             *hd.graph.node]
    for node in nodes:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    graph = helper.make_graph(
        nodes, "gcf_stream_step",
        [plain_bb.graph.input[0], helper.make_tensor_value_info("ring_prev", TensorProto.FLOAT, ["B", ring_size - 1, dim]),
         plain_hd.graph.input[1]],
        [*plain_bb.graph.output, *plain_hd.graph.output],  # the names and shapes as built
        initializer=[*bb.graph.initializer, *hd.graph.initializer,
                     helper.make_tensor("step/axis1", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=bb.opset_import)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def whatif_fused_step(engines_dir: Path, work: Path, *, say, **timing) -> dict[str, Any]:
    """The CPU build's backbone call then its head (as the runtime runs them) against one call
    of :func:`fused_step_graph` on the backbone's runtime and options, interleaved."""
    from ...runtime.backends import open_backend
    from ...runtime.engines import load_engines
    from ...spec import BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_OUTPUTS
    with load_engines(engines_dir) as engines:
        spec, manifest = engines.spec, engines.manifest
        bb, hd = manifest.component("backbone"), manifest.component("head")
        path = fused_step_graph(engines_dir / bb["file"], engines_dir / hd["file"], work / "stream_step.onnx",
                                spec.ring_size, spec.dim)
        fused = open_backend(bb["runtime"], path, bb.get("options") or {})
        rng = np.random.default_rng(5)
        clip = rng.standard_normal((1, *spec.clip_shape)).astype(np.float32)
        ring = rng.standard_normal((1, spec.ring_size - 1, spec.dim)).astype(np.float32)
        mask = np.ones((1, spec.ring_size), np.float32)

        def separate():
            d = engines.backbone.infer({BACKBONE_INPUT: clip})[BACKBONE_OUTPUT]
            return engines.head.infer({DESCRIPTORS: np.concatenate([ring, d[:, None]], 1), MASK: mask})

        def step():
            return fused.infer({BACKBONE_INPUT: clip, "ring_prev": ring, MASK: mask})

        diff = float(np.abs(separate()[HEAD_OUTPUTS[0]] - step()[HEAD_OUTPUTS[0]]).max())
        say("what-if: head fused into the backbone's graph")
        samples = interleaved({"backbone": lambda: engines.backbone.infer({BACKBONE_INPUT: clip}),
                               "backbone_then_head": separate, "fused_step": step}, **timing)
        p50 = {k: summarize(v)["p50_ms"] for k, v in samples.items()}
        head_runtime = repr(engines.head)
    return {"backbone": f"{bb['runtime']} {bb.get('precision')}", "head_as_built": head_runtime, "p50_ms": p50,
            "head_cost_fraction_of_backbone": {
                "separate": (p50["backbone_then_head"] - p50["backbone"]) / p50["backbone"],
                "fused": (p50["fused_step"] - p50["backbone"]) / p50["backbone"]},
            "max_abs_logit_diff": diff}


def whatif_resize(spec, video: Path, *, say, **timing) -> dict[str, Any]:
    """The whole Preprocessor call vs a plain one-step INTER_AREA resize and exact 2x INTER_AREA then the rest."""
    import cv2
    from ...data import read_video
    from ...preprocess import Preprocessor
    frame = read_video(video)[0]
    prep = Preprocessor(spec)
    h, w = frame.shape[:2]
    scale = spec.resize_short / min(h, w)
    size = (max(spec.size, round(w * scale)), max(spec.size, round(h * scale)))
    half = (w // 2, h // 2)
    one = lambda: cv2.resize(frame, size, interpolation=cv2.INTER_AREA)  # noqa: E731
    two = lambda: cv2.resize(cv2.resize(frame, half, interpolation=cv2.INTER_AREA), size,  # noqa: E731
                             interpolation=cv2.INTER_AREA)
    d = np.abs(one().astype(np.float32) - two().astype(np.float32))
    say("what-if: preprocessing resize")
    samples = interleaved({"preprocess_frame": lambda: prep(frame), "resize_one_step": one,
                           "resize_two_step": two}, **timing)
    stats = {k: summarize(v)["p50_ms"] for k, v in samples.items()}
    return {"frame": [w, h], "resized_to": list(size), "p50_ms": stats,
            "two_step_over_one_step_p50": stats["resize_two_step"] / stats["resize_one_step"],
            "pixel_abs_diff_0_255": {"mean": float(d.mean()), "max": float(d.max())}}


def section(ctx) -> dict[str, Any]:
    from ...runtime.engines import load_engines
    from .latency import _main_backbone
    out: dict[str, Any] = {}
    with load_engines(ctx.engines_dir) as engines:
        head_file = ctx.engines_dir / engines.manifest.component("head")["file"]
    main = _main_backbone(ctx)
    out["head_graph"] = whatif_head_graph(ctx.model, head_file, ctx.work, main, ctx.fns[main], say=ctx.say,
                                          **ctx.timing(0.25, share=0.5))
    if not ctx.deadline.expired:
        out["fused_step"] = whatif_fused_step(ctx.engines_dir, ctx.work, say=ctx.say, **ctx.timing(0.25, share=0.5))
    if not ctx.deadline.expired:
        out["resize"] = whatif_resize(ctx.spec, ctx.video(), say=ctx.say, **ctx.timing(0.25, share=0.9))
    return out
