"""PyTorch -> ONNX: ``backbone.onnx`` and ``head.onnx``, checked against PyTorch.

Tensor names are a contract shared with every runtime backend:

=============  =========================================  ====================
graph          inputs                                     outputs
=============  =========================================  ====================
backbone.onnx  ``clip`` float32 [B, 3, T, H, W]            ``descriptor`` [B, D]
head.onnx      ``descriptors`` [B, N, D], ``mask`` [B, N]  ``logits`` [B, C], ``gates`` [B, N]
=============  =========================================  ====================

B is dynamic in both graphs; N (the ring size) is fixed by the spec.  We use the dynamo
exporter (torch's default) with ``external_data=False`` because ONNX Runtime's
``quant_pre_process`` cannot read the external ``.onnx.data`` file otherwise.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..fsutil import atomic_file
from ..runtime.head import HEAD_WEIGHTS_FILE, save_head_weights
from ..spec import BACKBONE_INPUT, BACKBONE_INPUTS, BACKBONE_OUTPUTS, HEAD_INPUTS, HEAD_OUTPUTS
from .model import GCFNet

# The dynamo exporter writes opset 18; we convert to 17 with ONNX's version converter so that
# TensorRT 8.6 (JetPack 5 / 6.0), whose parser reads opset <= 17, takes the same files as 10/11.
EXPORT_OPSET = 18
OPSET = 17
# The tensor names are the contract in gcf_trt.spec (torch-free, shared with every runtime).

# Operators TensorRT's ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT 8.6-11),
# restricted to those an exported GCF-Net may plausibly contain.  tests/compile/test_export.py checks
# every exported graph against this list so a new layer cannot silently break TensorRT.
TENSORRT_SUPPORTED_OPS = frozenset({
    "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "DequantizeLinear", "Div", "Equal", "Expand", "Flatten", "Gather",
    "Gemm", "GlobalAveragePool", "Greater", "GreaterOrEqual", "Identity", "Less", "LessOrEqual",
    "MatMul", "Max", "MaxPool", "Min", "Mul", "Not", "Pad", "QuantizeLinear", "ReduceMax",
    "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax",
    "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
})


class _Head(nn.Module):
    def __init__(self, model: GCFNet):
        super().__init__()
        self.head = model.head

    def forward(self, descriptors: torch.Tensor, mask: torch.Tensor):
        return self.head(descriptors, mask)


def _atomic_save(proto: onnx.ModelProto, path: Path) -> None:
    with atomic_file(path) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)


def _strip_opset18_attributes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop ``noop_with_empty_axes=0`` that ONNX's 18->17 converter leaves on ReduceMean/Max.

    Opset 13 versions of those ops do not define the attribute (ReduceSum does) and 0 is its
    default, so removing it is exact.
    """
    for node in proto.graph.node:
        if node.op_type in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
            keep = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            del node.attribute[:]
            node.attribute.extend(keep)
    return proto


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names,
            dynamic_shapes) -> onnx.ModelProto:
    # The exporter warns about every torchvision operator it cannot register when torchvision
    # is absent (it is optional here and our graphs use none of them): keep that for debugging.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    quiet = not logging.getLogger("gcf_trt").isEnabledFor(logging.DEBUG)
    old_level = registration.level
    if quiet:
        registration.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module, args, dynamo=True, opset_version=EXPORT_OPSET,
                                        input_names=list(input_names), output_names=list(output_names),
                                        dynamic_shapes=dynamic_shapes, external_data=False,
                                        verbose=False)
        finally:
            registration.setLevel(old_level)
    proto = program.model_proto
    try:
        proto = _strip_opset18_attributes(onnx.version_converter.convert_version(proto, OPSET))
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        warnings.warn(f"{path.name}: kept opset {EXPORT_OPSET} (conversion to {OPSET} failed: {exc}); "
                      "TensorRT 8.6 will not parse it, TensorRT >= 10 will")
    onnx.checker.check_model(proto, full_check=True)
    _atomic_save(proto, path)
    return proto


def export_backbone(model: GCFNet, path: str | os.PathLike) -> Path:
    """Export the backbone to ``path``; batch dimension dynamic."""
    path = Path(path)
    spec = model.spec
    example = torch.randn(2, *spec.clip_shape)
    batch = torch.export.Dim("batch", min=1, max=256)
    _export(model.backbone.eval(), (example,), path, BACKBONE_INPUTS, BACKBONE_OUTPUTS,
            {BACKBONE_INPUT: {0: batch}})
    return path


def export_head(model: GCFNet, path: str | os.PathLike) -> Path:
    """Export the fusion head to ``path``; batch dynamic, ring size fixed to ``spec.ring_size``."""
    path = Path(path)
    spec = model.spec
    desc = torch.randn(2, spec.ring_size, spec.dim)
    mask = torch.ones(2, spec.ring_size)
    batch = torch.export.Dim("batch", min=1, max=256)
    _export(_Head(model).eval(), (desc, mask), path, HEAD_INPUTS, HEAD_OUTPUTS,
            {HEAD_INPUTS[0]: {0: batch}, HEAD_INPUTS[1]: {0: batch}})
    # The same weights for the CPU runtime's numpy head (gcf_trt/runtime/head.py), beside the graph.
    save_head_weights(path.with_name(HEAD_WEIGHTS_FILE),
                      {k: v.detach().cpu().numpy() for k, v in model.head.state_dict().items()}, spec)
    return path


def graph_op_types(path: str | os.PathLike) -> set[str]:
    """Every operator type in an ONNX graph (subgraphs and functions included)."""
    proto = onnx.load(str(path))
    ops = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
    walk(proto.graph)
    for fn in proto.functions:
        ops.update(node.op_type for node in fn.node)
    return ops


def check_parity(model: GCFNet, backbone_path: str | os.PathLike, head_path: str | os.PathLike,
                 batch: int = 2, seed: int = 0) -> dict[str, float]:
    """Max abs difference between PyTorch and ONNX Runtime (FP32) on random inputs."""
    import onnxruntime as ort

    spec = model.spec
    gen = torch.Generator().manual_seed(seed)
    clip = torch.randn(batch, *spec.clip_shape, generator=gen)
    desc = torch.randn(batch, spec.ring_size, spec.dim, generator=gen)
    mask = torch.ones(batch, spec.ring_size)
    mask[0, : spec.ring_size // 2] = 0  # a ring that is still filling
    with torch.no_grad():
        ref_desc = model.backbone(clip).numpy()
        ref_logits, ref_gates = (t.numpy() for t in model.head(desc, mask))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    bb = ort.InferenceSession(str(backbone_path), opts, providers=["CPUExecutionProvider"])
    hd = ort.InferenceSession(str(head_path), opts, providers=["CPUExecutionProvider"])
    (out_desc,) = bb.run(None, {BACKBONE_INPUT: clip.numpy()})
    out_logits, out_gates = hd.run(None, {HEAD_INPUTS[0]: desc.numpy(), HEAD_INPUTS[1]: mask.numpy()})
    return {
        "descriptor": float(np.abs(out_desc - ref_desc).max()),
        "logits": float(np.abs(out_logits - ref_logits).max()),
        "gates": float(np.abs(out_gates - ref_gates).max()),
    }
