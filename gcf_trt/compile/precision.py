"""Reduced precision for the engines: INT8 calibration / quantization and the agreement gate.

INT8 design (measurements in docs/INT8.md):

* Static quantization to explicit Q/DQ (``QuantizeLinear`` / ``DequantizeLinear``) with ONNX
  Runtime's quantizer, after ``quant_pre_process``; per-channel symmetric INT8 weights.  One
  calibration, one graph per *target*, because the targets read Q/DQ differently:

  - ``cpu`` (ONNX Runtime, OpenVINO): **unsigned asymmetric activations** (u8, ORT's U8S8, the
    x86 int8 kernels' native form: ReLU outputs use all 256 levels instead of 128) and INT32
    biases (fused into QLinearConv).  On x86 CPUs without VNNI the weights are 7-bit
    (``reduce_range``): without it ``vpmaddubsw`` saturates (:mod:`gcf_trt.cpuinfo`).
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
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from ..cpuinfo import int8_capability, int8_saturation_risk
from ..errors import AgreementError, CalibrationError, InputError
from ..preprocess import clips_from_frames
from ..progress import progress_bar
from ..spec import ModelSpec

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
PRECISION_KEY = "gcf_trt.precision"
CALIBRATION_METHODS = ("minmax", "percentile")
QUANT_TARGETS = ("cpu", "tensorrt")
GATE_PREDICTIONS = 256  # held-out predictions the gate decides on by default (resolves 99%)
TENSORRT_MAX_OPSET = 17  # TensorRT 8.6's ONNX parser reads opset <= 17 (the project's export opset)
STEM_EXCLUSION_REASON = (
    "first conv of the stem (3 input channels) kept FP32: as an ORT QLinearConv it ran ~5x slower "
    "than in FP32 on this CPU, and it sees raw pixels where INT8 error is largest")


# ----------------------------------------------------------------------------- calibration data
def _list_videos(calib_dir: Path) -> list[Path]:
    return sorted(p for p in calib_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _read_frames(path: Path, limit: int) -> Iterable[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return
        count = 0
        while count < limit:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            count += 1
            yield frame
    finally:
        cap.release()


def calibration_clips(calib_dir: str | os.PathLike, spec: ModelSpec, max_clips: int = 64, seed: int = 0,
                      *, max_clips_per_video: int | None = None, report: dict | None = None,
                      progress: bool = False) -> np.ndarray:
    """Clips ``float32 [K, 3, T, H, W]`` cut from the videos in ``calib_dir`` (recursively).

    Clips are assembled exactly as the stream assembles them (:func:`clips_from_frames`), from at
    most ``max_clips_per_video`` clips per video (default: an even share of ``max_clips``, at
    least 1), then at most ``max_clips`` are drawn with ``seed`` and returned in source order.

    Args:
        report: if given, filled with what was used (videos, their clip counts, skipped files).

    Raises:
        CalibrationError: the directory is missing, holds no readable video, or every video is
            shorter than one clip.
    """
    if max_clips < 1:
        raise InputError(f"max_clips must be >= 1, got {max_clips}")
    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise CalibrationError(f"calibration directory {calib_dir} does not exist",
                               hint="pass --calib DIR with a few real videos (mp4/avi/mkv/mov) "
                                    "longer than one clip")
    videos = _list_videos(calib_dir)
    if not videos:
        raise CalibrationError(f"no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) in {calib_dir}")
    per_video = max_clips_per_video or max(1, -(-max_clips // len(videos)))
    read = _read_video_clips(calib_dir, videos, spec, per_video, progress)
    if not read.chunks:
        read.raise_empty(calib_dir, spec)
    clips = np.concatenate(read.chunks)
    if len(clips) > max_clips:
        keep = np.sort(np.random.default_rng(seed).choice(len(clips), max_clips, replace=False))
        clips = clips[keep]
    if report is not None:
        report.update({"dir": str(calib_dir), "videos": read.used, "unreadable": read.unreadable,
                       "too_short": read.short, "num_clips": int(len(clips)), "seed": seed,
                       "preprocessing": "gcf_trt.preprocess.clips_from_frames"})
    return np.ascontiguousarray(clips, dtype=np.float32)


class _VideoClips:
    """Clips per readable video, and what was skipped (for reports and errors)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.used: list[dict[str, Any]] = []
        self.unreadable: list[str] = []
        self.short: list[str] = []

    def raise_empty(self, calib_dir: Path, spec: ModelSpec) -> None:
        if self.short:
            raise CalibrationError(
                f"every video in {calib_dir} is shorter than one clip "
                f"({spec.frames_per_clip} frames needed): {', '.join(self.short[:5])}",
                hint=f"add videos with at least {spec.frames_per_clip} frames")
        raise CalibrationError(f"no readable video in {calib_dir} (OpenCV could not decode: "
                               f"{', '.join(self.unreadable[:5])})",
                               hint="put videos OpenCV can decode (mp4/avi/mkv/mov) into the calib dir")


def _read_video_clips(calib_dir: Path, videos: Sequence[Path], spec: ModelSpec, per_video: int,
                      progress: bool) -> _VideoClips:
    """At most ``per_video`` clips of each video, assembled exactly as the stream assembles them."""
    frames_needed = ((per_video - 1) * spec.stride + spec.clip_len - 1) * spec.frame_step + 1
    read = _VideoClips()
    with progress_bar(videos, desc="calibration videos", unit="video", enabled=progress) as bar:
        for path in bar:
            frames = list(_read_frames(path, frames_needed))
            if not frames:
                read.unreadable.append(path.name)
                continue
            clips, _ = clips_from_frames(frames, spec)
            if len(clips) == 0:
                read.short.append(f"{path.name} ({len(frames)} frames)")
                continue
            clips = np.ascontiguousarray(clips[:per_video], dtype=np.float32)
            read.chunks.append(clips)
            read.used.append({"file": str(path.relative_to(calib_dir)), "clips": int(len(clips))})
    return read


def calibration_split(calib_dir: str | os.PathLike, spec: ModelSpec, *, max_clips: int = 64,
                      gate_predictions: int = GATE_PREDICTIONS, seed: int = 0,
                      max_clips_per_video: int = 64, report: dict | None = None,
                      progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Calibration clips and, from *other* videos, the held-out clip sequences of the gate.

    The videos are shuffled with ``seed``; whole videos are held out until their clips give at
    least ``gate_predictions`` ring predictions (one per clip, as a stream predicts after each
    clip), the remaining videos give at most ``max_clips`` calibration clips.  No video feeds
    both sides, so the gate measures how INT8 generalises, not how it fits its calibration.

    Returns:
        ``(calibration [K,3,T,H,W], holdout)`` where ``holdout`` is one ``[k_i,3,T,H,W]`` array
        per held-out video, in stream order (pass it to :func:`agreement`).

    Raises:
        CalibrationError: no readable video, or too few videos/clips for the gate plus at least
            one calibration video (the message says how many are there and how many are needed).
    """
    if max_clips < 1 or gate_predictions < 1 or max_clips_per_video < 1:
        raise InputError("max_clips, gate_predictions and max_clips_per_video must be >= 1")
    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise CalibrationError(f"calibration directory {calib_dir} does not exist",
                               hint="pass --calib DIR with real videos (mp4/avi/mkv/mov) longer than one clip")
    videos = _list_videos(calib_dir)
    if not videos:
        raise CalibrationError(f"no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) in {calib_dir}")
    order = [videos[i] for i in np.random.default_rng(seed).permutation(len(videos))]
    read = _read_video_clips(calib_dir, order, spec, max_clips_per_video, progress)
    if not read.chunks:
        read.raise_empty(calib_dir, spec)
    holdout, held_files, pool, pool_files = [], [], [], []
    for clips, used in zip(read.chunks, read.used):
        if sum(len(c) for c in holdout) < gate_predictions:
            holdout.append(clips)
            held_files.append(used)
        else:
            pool.append(clips)
            pool_files.append(used)
    have = sum(len(c) for c in read.chunks)
    held = sum(len(c) for c in holdout)
    if held < gate_predictions or not pool:
        per = have / len(read.chunks)
        more = max(1, int(np.ceil((gate_predictions - held + per) / max(per, 1.0)))) if not pool else \
            max(1, int(np.ceil((gate_predictions - held) / max(per, 1.0))))
        raise CalibrationError(
            f"the agreement gate needs {gate_predictions} held-out predictions from videos not used for "
            f"calibration, plus at least one video to calibrate on; {calib_dir} gives {have} clips in "
            f"{len(read.chunks)} readable video(s) (at most {max_clips_per_video} clips read per video)",
            hint=f"add about {more} more video(s) like these to the calib dir, or lower --gate-predictions "
                 f"(fewer predictions resolve the agreement less precisely)")
    calib = np.concatenate(pool)
    if len(calib) > max_clips:
        keep = np.sort(np.random.default_rng(seed + 1).choice(len(calib), max_clips, replace=False))
        calib = calib[keep]
    if report is not None:
        report.update({"dir": str(calib_dir), "videos": pool_files, "holdout_videos": held_files,
                       "unreadable": read.unreadable, "too_short": read.short, "seed": seed,
                       "num_clips": int(len(calib)) + held, "calibration_clips": int(len(calib)),
                       "holdout_clips": int(held), "holdout_split": "by video (disjoint from calibration)",
                       "preprocessing": "gcf_trt.preprocess.clips_from_frames"})
    return np.ascontiguousarray(calib, dtype=np.float32), holdout


def split_holdout(clips: np.ndarray, holdout: float = 0.25, seed: int = 0,
                  min_holdout: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Split clips into (calibration, held-out); both keep source order and are non-empty.

    Raises:
        CalibrationError: fewer than 2 clips.
    """
    n = len(clips)
    if n < 2:
        raise CalibrationError(f"only {n} calibration clip(s): need at least 2 (some are held out "
                               f"to check agreement with FP32)",
                               hint="add more or longer videos to the calib dir")
    k = min(n - 1, max(min_holdout, int(round(n * holdout))))
    held = np.zeros(n, bool)
    held[np.random.default_rng(seed + 1).choice(n, k, replace=False)] = True
    return clips[~held], clips[held]


class ClipDataReader(CalibrationDataReader):
    """ONNX Runtime calibration data reader over preprocessed clips (``{"clip": [b,3,T,H,W]}``)."""

    def __init__(self, clips: np.ndarray, input_name: str = "clip", batch: int = 1,
                 progress: bool = False):
        self.clips, self.input_name, self.batch = clips, input_name, max(1, int(batch))
        self._pos = 0
        self._bar = progress_bar(total=len(clips), desc="calibrating", unit="clip") if progress else None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.clips):
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return None
        batch = self.clips[self._pos:self._pos + self.batch]
        self._pos += len(batch)
        if self._bar is not None:
            self._bar.update(len(batch))
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self._pos = 0

    def close(self) -> None:
        """Close the progress bar (also when calibration stops on an error)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


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
                  for_tensorrt: bool = False, reduce_range: bool | None = None) -> dict[str, Any]:
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
        reduce_range: 7-bit weights; ``None`` = when this CPU is x86 without VNNI (CPU graph
            only; TensorRT's kernels do not saturate).

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
    if reduce_range is None:
        reduce_range = (not for_tensorrt) and int8_saturation_risk()
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
    tmp_out = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        onnx.save_model(model, str(tmp_out), save_as_external_data=False)
        os.replace(tmp_out, out_path)
    finally:
        tmp_out.unlink(missing_ok=True)
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


# ----------------------------------------------------------------------------- agreement
DescriptorFn = Callable[[np.ndarray], np.ndarray]
HeadFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _descriptor_fn(obj: Any) -> DescriptorFn:
    if hasattr(obj, "infer"):
        return lambda clips: obj.infer({"clip": clips})["descriptor"]
    if callable(obj):
        return obj
    raise InputError(f"expected a backend or a function clips -> descriptors, got {type(obj).__name__}")


def _head_fn(obj: Any) -> HeadFn:
    if hasattr(obj, "infer"):
        return lambda desc, mask: obj.infer({"descriptors": desc, "mask": mask})["logits"]
    if callable(obj):
        return obj
    raise InputError(f"expected a backend or a function (descriptors, mask) -> logits, got {type(obj).__name__}")


def descriptors(fn: Any, clips: np.ndarray, batch: int = 1) -> np.ndarray:
    """Run a backbone (backend or function) over clips in batches of ``batch``."""
    run = _descriptor_fn(fn)
    outs = [np.asarray(run(np.ascontiguousarray(clips[i:i + batch], np.float32)), np.float32)
            for i in range(0, len(clips), batch)]
    return np.concatenate(outs)


def rings(desc: np.ndarray, ring_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rings a stream presents to the head after each clip: ``[K, N, D]`` and masks ``[K, N]``.

    Ring k holds clips ``max(0, k-N+1) .. k``, oldest first, newest in slot N-1, empty slots
    (mask 0) at the start while the ring fills (docs/DESIGN.md, "Ring order").
    """
    k, d = desc.shape
    out = np.zeros((k, ring_size, d), np.float32)
    mask = np.zeros((k, ring_size), np.float32)
    for i in range(k):
        first = max(0, i - ring_size + 1)
        n = i - first + 1
        out[i, ring_size - n:] = desc[first:i + 1]
        mask[i, ring_size - n:] = 1.0
    return out, mask


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well behaved near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def agreement(reference: Any, test: Any, clips: np.ndarray | Sequence[np.ndarray], head: Any, *,
              ring_size: int | None = None, batch: int = 1) -> dict[str, Any]:
    """How far a reduced-precision backbone is from the FP32 reference, judged on predictions.

    Both backbones run over the held-out clips; their descriptors fill the rings a stream would
    present (:func:`rings`) and the same FP32 ``head`` classifies each ring.

    Args:
        reference, test: a backend (``infer({"clip": x})["descriptor"]``) or a function
            ``clips [B,3,T,H,W] -> descriptors [B,D]``.
        clips: one clip sequence ``[K,3,T,H,W]`` (one stream), or a list of them, one per
            held-out video (:func:`calibration_split`); rings never span two videos.
        head: a head backend or a function ``(descriptors [B,N,D], mask [B,N]) -> logits [B,C]``.
        ring_size: N; default from the head backend's ``mask`` input shape.

    Returns:
        ``top1_agreement`` (fraction of ring predictions with the same class) with its 95% Wilson
        interval ``top1_agreement_ci95``, ``num_disagreements``, ``cosine_mean`` /
        ``cosine_min`` (descriptor cosine per clip), ``max_abs_logit_diff``, ``num_clips``,
        ``num_predictions``, ``num_sequences``.
    """
    groups = [clips] if isinstance(clips, np.ndarray) else list(clips)
    groups = [np.asarray(g, np.float32) for g in groups]
    if not groups or any(g.ndim != 5 or len(g) == 0 for g in groups):
        raise InputError("agreement needs clips [K,3,T,H,W] with K >= 1 (or a list of such arrays), got "
                         + ", ".join(str(g.shape) for g in groups[:3]))
    if ring_size is None:
        shape = getattr(head, "input_shapes", {}).get("mask")
        if not shape or shape[-1] is None or shape[-1] < 1:
            raise InputError("ring_size is needed when the head is not a backend with a fixed mask shape")
        ring_size = int(shape[-1])
    run_head = _head_fn(head)

    def logits_of(desc: np.ndarray) -> np.ndarray:
        r, m = rings(desc, ring_size)
        return np.concatenate([run_head(r[i:i + 16], m[i:i + 16]) for i in range(0, len(m), 16)])

    cosines, same, diffs = [], [], []
    for g in groups:
        ref = descriptors(reference, g, batch)
        out = descriptors(test, g, batch)
        num = (ref * out).sum(1)
        den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cosines.append(np.where(den > 0, num / np.maximum(den, 1e-30),
                                np.where(np.abs(ref - out).max(1) == 0, 1.0, 0.0)))
        ref_logits, out_logits = logits_of(ref), logits_of(out)
        same.append(ref_logits.argmax(1) == out_logits.argmax(1))
        diffs.append(float(np.abs(ref_logits - out_logits).max()))
    cosine = np.concatenate(cosines)
    agree = np.concatenate(same)
    lo, hi = wilson_interval(int(agree.sum()), len(agree))
    return {
        "top1_agreement": float(agree.mean()), "top1_agreement_ci95": [round(lo, 4), round(hi, 4)],
        "num_disagreements": int((~agree).sum()),
        "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
        "max_abs_logit_diff": max(diffs),
        "num_clips": int(len(cosine)), "num_predictions": int(len(agree)), "num_sequences": len(groups),
        "ring_size": int(ring_size),
    }


def passes(result: dict[str, Any], min_agreement: float, min_cosine: float | None = None) -> bool:
    """Whether an :func:`agreement` result meets the thresholds."""
    if result["top1_agreement"] < min_agreement:
        return False
    return min_cosine is None or result["cosine_min"] >= min_cosine


def check_agreement(result: dict[str, Any], min_agreement: float, min_cosine: float | None = None,
                    what: str = "the reduced-precision engine") -> None:
    """Raise :class:`AgreementError` when ``result`` is below the thresholds."""
    if result["top1_agreement"] < min_agreement:
        raise AgreementError(
            f"{what} agrees with FP32 on {result['top1_agreement']:.1%} of {result['num_predictions']} "
            f"held-out predictions{_interval_text(result)}, below --min-agreement {min_agreement:.1%} "
            f"(descriptor cosine mean {result['cosine_mean']:.4f}, min {result['cosine_min']:.4f})")
    if min_cosine is not None and result["cosine_min"] < min_cosine:
        raise AgreementError(
            f"{what}: minimum descriptor cosine with FP32 is {result['cosine_min']:.4f}, below "
            f"--min-cosine {min_cosine:.4f} (top-1 agreement {result['top1_agreement']:.1%})")


def _interval_text(result: dict[str, Any]) -> str:
    ci = result.get("top1_agreement_ci95")
    return f" (95% interval {ci[0]:.1%}-{ci[1]:.1%})" if ci else ""
