"""Reduced precision for the engines: INT8 Q/DQ quantization, one graph per target.

The calibration data is :mod:`.calibration`, the gate :mod:`.agreement`.

INT8 design (measurements in docs/INT8.md):

* Static quantization to explicit Q/DQ (``QuantizeLinear`` / ``DequantizeLinear``) with ONNX
  Runtime's quantizer, after ``quant_pre_process``; per-channel symmetric INT8 weights.  One
  calibration, one graph per *target*, because the targets read Q/DQ differently:

  - ``cpu`` (ONNX Runtime, OpenVINO): **unsigned asymmetric activations** (u8, ORT's U8S8, the
    x86 int8 kernels' native form: ReLU outputs use all 256 levels instead of 128) and INT32
    biases (fused into QLinearConv).  8-bit weights on every CPU, VNNI or not: on x86 without
    VNNI the dot product is ``vpmaddubsw`` (:mod:`gcf_trt.cpuinfo`), which saturates with
    *signed* activations (measured on an AVX2-only EPYC: TensorRT's s8 graph run there agrees
    4 points less), but with u8 activations the same 8-bit graph agreed there exactly as on a VNNI
    CPU, while 7-bit weights (``reduce_range``) cost 0.1-5.4 points (docs/INT8.md).  The gate
    runs this CPU's own kernels, so a model that did saturate would be refused, not shipped.
  - ``tensorrt``: signed symmetric activations (zero point 0, TensorRT's only INT8 form) and
    **float biases** (``QuantizeBias=False``): TensorRT's ONNX parser accepts DequantizeLinear
    only on INT8/FP8/INT4 inputs, so an INT32 bias DQ is a parse error (NVIDIA/TensorRT#3360).
    :func:`tensorrt_qdq_problems` checks the graph against TensorRT's Q/DQ rules.
* The stem's first conv (3 input channels) stays FP32: in ORT INT8 it becomes a QLinearConv that
  is several times *slower* than the FP32 conv (too few input channels for the int8 kernels to
  pay off; measured, see docs) and it sees the raw pixels, where quantization costs most.
* Calibration on clips cut from real videos with exactly the runtime preprocessing
  (:func:`gcf_trt.preprocess.clips_from_frames`).  Method: MinMax by default (measured best of
  MinMax / Percentile / Entropy on the demo model, docs/INT8.md); Percentile on request.
* No reduced-precision engine is used without passing :func:`agreement` against the FP32
  reference: the GCF head's predictions over the rings a stream would see, on held-out
  **videos** disjoint from calibration (:func:`calibration_split`), at least 256 predictions by
  default so that 99% can be resolved, reported with a 95% Wilson interval.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from ..cpuinfo import int8_capability
from ..errors import CalibrationError, InputError
from ..fsutil import atomic_file
from .calibration import ClipDataReader

PRECISION_KEY = "gcf_trt.precision"
CALIBRATION_METHODS = ("minmax", "percentile")
QUANT_TARGETS = ("cpu", "tensorrt")
TENSORRT_MAX_OPSET = 17  # TensorRT 8.6's ONNX parser reads opset <= 17 (the project's export opset)
STEM_EXCLUSION_REASON = (
    "first conv of the stem (3 input channels) kept FP32: as an ORT QLinearConv it ran ~5x slower "
    "than in FP32 on this CPU, and it sees raw pixels where INT8 error is largest")


# ----------------------------------------------------------------------------- quantization
def stem_conv_names(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes that read the 3-channel input (the stem's first conv)."""
    inits = {t.name: t for t in model.graph.initializer}
    # A quantized weight reaches the conv through DequantizeLinear(initializer).
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = list(inits[node.input[1]].dims)
        if len(dims) >= 2 and dims[1] * group == 3:
            names.append(node.name)
    return names


def qdq_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the compute nodes (Conv/Gemm/MatMul) whose weight is fed by DequantizeLinear."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in dq_out]


def set_precision_metadata(model: onnx.ModelProto, precision: str) -> None:
    for prop in model.metadata_props:
        if prop.key == PRECISION_KEY:
            prop.value = precision
            return
    model.metadata_props.add(key=PRECISION_KEY, value=precision)


def quantize_int8(fp32_onnx_path: str | os.PathLike, out_path: str | os.PathLike, clips: np.ndarray,
                  exclude_nodes: Sequence[str] | None = None, *, method: str = "minmax",
                  percentile: float = 99.999, batch: int = 1, progress: bool = False,
                  for_tensorrt: bool = False, reduce_range: bool = False) -> dict[str, Any]:
    """Static INT8 Q/DQ quantization of an FP32 ONNX graph, calibrated on ``clips``.

    Args:
        fp32_onnx_path: the FP32 graph (``backbone.onnx``).
        out_path: where to write the Q/DQ graph (marked ``gcf_trt.precision = int8``).
        clips: calibration clips ``[K, 3, T, H, W]`` (see :func:`calibration_split`).
        exclude_nodes: node names to keep FP32; ``None`` = the stem's first conv (found in the
            graph), ``[]`` = quantize everything.
        method: ``"minmax"`` (default) or ``"percentile"``.
        for_tensorrt: write TensorRT's graph (signed symmetric activations, float biases)
            instead of the CPU runtimes' (unsigned asymmetric activations, INT32 biases).
        reduce_range: 7-bit weights (CPU graph only; TensorRT's kernels do not saturate).  Off
            by default, also without VNNI: measured worse there (see the module docstring).

    Returns:
        What was done, for the manifest's ``calibration`` section.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}",
                         hint="Entropy is not offered: quantize_static computes MinMax ranges for it")
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 5 or len(clips) == 0:
        raise CalibrationError(f"calibration clips must be a non-empty [K,3,T,H,W] array, got shape {clips.shape}")
    target = "tensorrt" if for_tensorrt else "cpu"
    if for_tensorrt and reduce_range:
        raise InputError("reduce_range applies to the CPU graph only (TensorRT's int8 kernels do not saturate)")
    fp32_onnx_path, out_path = Path(fp32_onnx_path), Path(out_path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gcf-quant-") as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(fp32_onnx_path), str(pre), skip_symbolic_shape=False)
        pre_model = onnx.load(str(pre))
        stem = stem_conv_names(pre_model)
        if exclude_nodes is None:
            excluded, reason = stem, STEM_EXCLUSION_REASON if stem else "no 3-channel conv found"
        else:
            excluded, reason = list(exclude_nodes), "chosen by the caller"
        known = {n.name for n in pre_model.graph.node}
        missing = [n for n in excluded if n not in known]
        if missing:
            raise InputError(f"nodes to exclude not in the graph: {', '.join(missing)}")
        reader = ClipDataReader(clips, "clip", batch=batch, progress=progress)
        calib_method = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
        # CPU: u8 asymmetric activations use all 256 levels on ReLU outputs (measured: 95.5% ->
        # 97.1% top-1 agreement on ORT, and no AVX2 saturation loss on OpenVINO; docs/INT8.md).
        # TensorRT: zero point 0 is its only INT8 form, and a DequantizeLinear of an INT32 bias
        # does not parse (NVIDIA/TensorRT#3360), so biases stay float.
        extra: dict[str, Any] = {"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True,
                                 "QuantizeBias": not for_tensorrt}
        if method == "percentile":
            extra["CalibPercentile"] = float(percentile)
        # Not CalibMaxIntermediateOutputs: in ORT 1.32 MinMaxCalibrater.collect_data clears the
        # collected batches at that count *without* reducing them first (their ranges are lost).
        # MinMax needs no memory cap anyway: its augmented graph outputs per-tensor ReduceMin/Max.
        raw = Path(tmpdir) / "int8.onnx"
        try:
            quantize_static(str(pre), str(raw), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded or None,
                            calibrate_method=calib_method, reduce_range=bool(reduce_range),
                            extra_options=extra)
        finally:
            reader.close()
        model = onnx.load(str(raw))
    set_precision_metadata(model, "int8")
    onnx.checker.check_model(model)
    with atomic_file(out_path) as tmp_out:
        onnx.save_model(model, str(tmp_out), save_as_external_data=False)
    ops = qdq_op_counts(model)
    return {
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "target": target,
        "activations": "int8 symmetric (per-tensor)" if for_tensorrt else "uint8 asymmetric (per-tensor)",
        "weights": f"int8 symmetric per-channel, {7 if reduce_range else 8}-bit",
        "weight_bits": 7 if reduce_range else 8,
        "biases": "float (TensorRT)" if for_tensorrt else "int32",
        "cpu_int8": int8_capability(),
        "method": method, **({"percentile": percentile} if method == "percentile" else {}),
        "entropy_note": "Entropy not used: quantize_static gives MinMax ranges for it (measured)",
        "num_calibration_clips": int(len(clips)),
        "excluded_nodes": list(excluded), "exclusion_reason": reason,
        "quantized_nodes": len(quantized_nodes(model)),
        "quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0),
        "seconds": round(time.perf_counter() - start, 2),
    }


_TRT_DQ_INPUT_TYPES = {onnx.TensorProto.INT8, getattr(onnx.TensorProto, "FLOAT8E4M3FN", -1),
                       getattr(onnx.TensorProto, "INT4", -2)}


def tensorrt_qdq_problems(model: onnx.ModelProto) -> list[str]:
    """Every way the Q/DQ nodes of ``model`` break TensorRT's explicit-quantization rules.

    Checked (onnx-tensorrt's QuantizeLinear/DequantizeLinear importers and docs/operators.md):
    DequantizeLinear inputs are INT8 (or FP8/INT4), never INT32 (a quantized bias) or UINT8;
    zero points are present, INT8 and all 0; scales are positive and finite; a per-channel
    weight scale uses axis 0 (Conv's output channels); activations are per-tensor; only the
    default ONNX domain; opset <= 17 (TensorRT 8.6).  An empty list means TensorRT can parse it.
    """
    from onnx import numpy_helper

    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset > TENSORRT_MAX_OPSET:
        problems.append(f"opset {opset} (TensorRT 8.6 parses <= {TENSORRT_MAX_OPSET})")
    inits = {t.name: t for t in model.graph.initializer}
    # dtype of each tensor that a QuantizeLinear produces: its zero point's type (uint8 if absent).
    produced: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.name}: op {node.domain}.{node.op_type} is not in the ONNX domain")
        if node.op_type == "QuantizeLinear":
            zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            produced[node.output[0]] = zp.data_type if zp is not None else onnx.TensorProto.UINT8
    weight_consumers = {n.input[1]: n for n in model.graph.node
                        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(n.input) > 1}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = node.name or node.output[0]
        scale = inits.get(node.input[1])
        if scale is None:
            problems.append(f"{where}: scale {node.input[1]} is not a constant initializer")
        else:
            values = numpy_helper.to_array(scale)
            if not np.all(np.isfinite(values)) or not np.all(values > 0):
                problems.append(f"{where}: scale {node.input[1]} has non-positive or non-finite values")
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = inits.get(zp_name) if zp_name else None
        if not zp_name:
            problems.append(f"{where}: no zero point (the default is UINT8, which TensorRT rejects)")
        elif zp is None:
            problems.append(f"{where}: zero point {zp_name} is not a constant initializer")
        else:
            if zp.data_type not in _TRT_DQ_INPUT_TYPES:
                problems.append(f"{where}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)} "
                                f"(TensorRT takes INT8/FP8/INT4)")
            if np.any(numpy_helper.to_array(zp) != 0):
                problems.append(f"{where}: non-zero zero point (TensorRT quantization is symmetric)")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        per_channel = scale is not None and len(scale.dims) > 0 and int(np.prod(scale.dims)) > 1
        if node.op_type == "DequantizeLinear":
            src = node.input[0]
            dtype = inits[src].data_type if src in inits else produced.get(src)
            if dtype is None:
                problems.append(f"{where}: input {src} is neither an initializer nor a QuantizeLinear output")
            elif dtype not in _TRT_DQ_INPUT_TYPES:
                problems.append(f"{where}: DequantizeLinear of {onnx.TensorProto.DataType.Name(dtype)} "
                                f"input {src} (TensorRT takes INT8/FP8/INT4; an INT32 bias must stay float)")
            consumer = weight_consumers.get(node.output[0])
            if per_channel and consumer is not None:
                want = 1 if consumer.op_type == "ConvTranspose" else 0
                if consumer.op_type in ("Conv", "ConvTranspose") and axis != want:
                    problems.append(f"{where}: per-channel weight scale on axis {axis} (TensorRT wants {want})")
            elif per_channel and src not in inits:
                problems.append(f"{where}: per-channel scale on an activation (TensorRT takes per-tensor)")
    return problems


