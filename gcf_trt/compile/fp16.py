"""FP32 ONNX -> strongly typed FP16 ONNX, with float32 inputs and outputs.

TensorRT 11 removed ``BuilderFlag.FP16``: every network is strongly typed, so the precision of
each tensor has to be written into the ONNX graph before TensorRT parses it (TensorRT 10->11
migration guide, "Migrating from Weak Typing to Strong Typing").  NVIDIA's recommended tool is
ModelOpt AutoCast (``modelopt.onnx.autocast.convert_to_mixed_precision(onnx_path=...,
low_precision_type="fp16", keep_io_types=True)``, same page); :func:`convert_to_fp16` uses it
when ``nvidia-modelopt`` is installed and otherwise applies the equivalent conversion below,
which needs only ``onnx``:

1. shape inference gives every tensor's element type;
2. nodes whose op is in ``keep_fp32_ops`` (numerically sensitive: sums, divisions, sigmoid,
   softmax, exp/log/pow) stay float32, every other node computes in float16;
3. float32 initializers, ``Constant`` values and ``Cast(to=FLOAT)`` inside float16 nodes
   become float16;
4. a ``Cast`` is inserted wherever a tensor reaches a node in the other precision (one cast per
   tensor and target type, shared by all consumers);
5. graph inputs and outputs stay float32 (``Cast`` after each input, before each output), so
   the runtime contract of docs/DESIGN.md does not change.

The result is checked with ``onnx.checker`` (full check).  ONNX Runtime's
``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True, op_block_list=...)``
was tried as a replacement on the exported graphs (onnxruntime 1.32, opset 17):
its output fails ``onnx.checker`` (the input Casts are appended after their consumers, so the
graph is not topologically sorted, which TensorRT's parser requires) and it clamps weights to
+-1e4 by default, not to FP16's range, so it is not the same graph; this converter stays.  ``tests/compile/test_fp16.py`` runs it on
ONNX Runtime (CPU) and compares it with the FP32 graph: that is how it was verified here, with
no GPU.  Whether TensorRT 11 picks FP16 kernels for it was *not* verified here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..fsutil import atomic_file

# Ops kept in float32: reductions and divisions accumulate or amplify rounding error, and
# sigmoid/softmax/exp saturate early in half precision.
DEFAULT_FP32_OPS = frozenset({
    "Div", "ReduceSum", "ReduceMean", "ReduceProd", "ReduceL2", "ReduceLogSumExp", "Softmax",
    "LogSoftmax", "Sigmoid", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization",
})
# Ops that produce no float tensor from float inputs, or whose type is fixed by attributes:
# they never need their inputs cast.
_TYPE_NEUTRAL_OPS = frozenset({"Shape", "Size"})

_F32, _F16 = TensorProto.FLOAT, TensorProto.FLOAT16
METADATA_KEY = "gcf_trt.precision"


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    types: dict[str, int] = {}
    graph = inferred.graph
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def _to_fp16_tensor(t: TensorProto) -> TensorProto:
    arr = numpy_helper.to_array(t).astype(np.float32)
    info = np.finfo(np.float16)
    # Clamp rather than overflow to inf; tiny values flush like TensorRT/AutoCast do.
    arr = np.clip(arr, -float(info.max), float(info.max)).astype(np.float16)
    return numpy_helper.from_array(arr, t.name)


def _fp16_with_modelopt(src: Path, dst: Path, keep_fp32_ops: Iterable[str]) -> dict[str, Any] | None:
    """Use ModelOpt AutoCast when installed; None when it is not (then we convert ourselves)."""
    try:
        from modelopt.onnx import autocast  # type: ignore[import-not-found]
    except ImportError:
        return None
    # API as in ModelOpt's AutoCast guide ("Python API Usage"); op_types_to_exclude keeps our
    # sensitive ops in FP32 (AutoCast may keep more nodes by its own data_max/init_max rules).
    converted = autocast.convert_to_mixed_precision(onnx_path=str(src), low_precision_type="fp16",
                                                    op_types_to_exclude=sorted(keep_fp32_ops), keep_io_types=True)
    _save(converted, dst)
    return {"converter": "modelopt.autocast", "requested_fp32_ops": sorted(keep_fp32_ops),
            **fp32_compute(converted)}


def fp32_compute(model: onnx.ModelProto) -> dict[str, Any]:
    """What a converted graph really keeps in float32: the op types (and count) of the nodes,
    other than Casts, that compute on float32 tensors.  Recorded in the manifest instead of
    what was asked for, since a converter (AutoCast) may keep more."""
    types = _elem_types(model)
    kept = [n for n in model.graph.node if n.op_type not in ("Cast", *_TYPE_NEUTRAL_OPS)
            and any(types.get(i) == _F32 for i in n.input if i)]
    return {"kept_fp32_ops": sorted({n.op_type for n in kept}), "fp32_nodes": len(kept)}


def _save(model: onnx.ModelProto, dst: Path) -> None:
    with atomic_file(dst) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)


def convert_model_to_fp16(model: onnx.ModelProto,
                          keep_fp32_ops: Iterable[str] = DEFAULT_FP32_OPS) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return a float16 copy of ``model`` (float32 I/O kept) and a summary of what changed."""
    keep = frozenset(keep_fp32_ops)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if any(a.type == onnx.AttributeProto.GRAPH for n in graph.node for a in n.attribute):
        raise ValueError("graphs with subgraphs (If/Loop/Scan) are not supported by this converter")
    types = _elem_types(model)
    is_float = {name for name, t in types.items() if t in (_F32, _F16)}

    def low(node: onnx.NodeProto) -> bool:
        return node.op_type not in keep

    # Producer precision of every float tensor after conversion.
    tensor_type: dict[str, int] = {}
    for v in graph.input:
        if v.name in is_float:
            tensor_type[v.name] = types[v.name]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    # 3a. initializers: float16 when every consumer computes in float16.
    converted_inits = 0
    for i, init in enumerate(graph.initializer):
        if init.data_type != _F32:
            if init.data_type == _F16:
                tensor_type[init.name] = _F16
            continue
        users = consumers.get(init.name, [])
        if users and all(low(n) and n.op_type not in _TYPE_NEUTRAL_OPS for n in users):
            graph.initializer[i].CopyFrom(_to_fp16_tensor(init))
            tensor_type[init.name] = _F16
            converted_inits += 1
        else:
            tensor_type[init.name] = _F32

    # 3b/4. walk nodes in (topological) order, inserting casts as needed.
    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    n_low = 0

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__gcf_cast_{'fp16' if to == _F16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}__node"))
            casts[key] = out
            tensor_type[out] = to
        return casts[key]

    for node in graph.node:
        want = _F16 if low(node) else _F32
        n_low += want == _F16
        if node.op_type not in _TYPE_NEUTRAL_OPS:
            for k, name in enumerate(node.input):
                have = tensor_type.get(name)
                if name and have is not None and have != want:
                    node.input[k] = cast(name, want)
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i in (_F32, _F16):
                to.i = want
        elif node.op_type == "Constant" and want == _F16:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == _F32:
                    a.t.CopyFrom(_to_fp16_tensor(a.t))
        elif node.op_type == "ConstantOfShape" and want == _F16:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == _F32:
                    a.t.CopyFrom(_to_fp16_tensor(a.t))
        new_nodes.append(node)
        for name in node.output:
            if name in is_float:
                # Float outputs follow the node's compute precision; Shape/Size never make floats.
                tensor_type[name] = want

    # 5. float32 graph outputs: rename the producer's tensor and cast back under the old name.
    for out in graph.output:
        if tensor_type.get(out.name) == _F16:
            internal = f"{out.name}__gcf_fp16"
            for node in new_nodes:
                for k, name in enumerate(node.output):
                    if name == out.name:
                        node.output[k] = internal
                for k, name in enumerate(node.input):
                    if name == out.name:
                        node.input[k] = internal
            new_nodes.append(helper.make_node("Cast", [internal], [out.name], to=_F32,
                                              name=f"{out.name}__gcf_cast_out"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    meta[METADATA_KEY] = "fp16"
    del model.metadata_props[:]
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=key, value=value)
    summary = {"converter": "gcf_trt.compile.fp16", "fp16_nodes": n_low, "casts": len(casts),
               "fp16_initializers": converted_inits, "requested_fp32_ops": sorted(keep), **fp32_compute(model)}
    return model, summary


def convert_to_fp16(src: str | os.PathLike, dst: str | os.PathLike, *,
                    keep_fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
                    use_modelopt: bool = True) -> dict[str, Any]:
    """Write a strongly typed FP16 version of the ONNX file ``src`` to ``dst`` (atomically).

    Inputs and outputs stay float32.  With ``use_modelopt`` and ``nvidia-modelopt`` installed,
    ModelOpt AutoCast does the conversion; otherwise :func:`convert_model_to_fp16` does.
    Returns a summary for the manifest.
    """
    src, dst = Path(src), Path(dst)
    if use_modelopt:
        done = _fp16_with_modelopt(src, dst, keep_fp32_ops)
        if done is not None:
            return done
    model, summary = convert_model_to_fp16(onnx.load(str(src)), keep_fp32_ops)
    _save(model, dst)
    return summary
