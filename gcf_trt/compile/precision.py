"""Reduced precision for the CPU engines: INT8 calibration / quantization and the agreement gate.

INT8 design (see docs/CPU_ENGINES.md):

* Static quantization to explicit Q/DQ (``QuantizeLinear`` / ``DequantizeLinear``) with ONNX
  Runtime's quantizer, after ``quant_pre_process``: signed INT8 activations and weights,
  symmetric (``ActivationSymmetric`` / ``WeightSymmetric``), per-channel weights.  The same Q/DQ
  file runs on ONNX Runtime and OpenVINO (no second calibration path) and TensorRT reads the
  same format.
* The stem's first conv (3 input channels) stays FP32: in ORT INT8 it becomes a QLinearConv that
  is several times *slower* than the FP32 conv (too few input channels for the int8 kernels to
  pay off; measured, see docs) and it sees the raw pixels, where quantization costs most.
* Calibration on clips cut from real videos with exactly the runtime preprocessing
  (:func:`gcf_trt.preprocess.clips_from_frames`).  Method: MinMax by default (deterministic and
  cheap on a small CPU); Percentile on request.  ``CalibrationMethod.Entropy`` is *not* offered:
  in ``quantize_static`` it was measured to give the same ranges as MinMax.
* No reduced-precision engine is used without passing :func:`agreement` against the FP32
  reference: predictions of the GCF head over rings of held-out clips, top-1 and descriptor
  cosine.
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

from ..errors import AgreementError, CalibrationError, InputError
from ..preprocess import clips_from_frames
from ..spec import ModelSpec

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
PRECISION_KEY = "gcf_trt.precision"
CALIBRATION_METHODS = ("minmax", "percentile")
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
    frames_needed = ((per_video - 1) * spec.stride + spec.clip_len - 1) * spec.frame_step + 1
    chunks, used, unreadable, short = [], [], [], []
    iterator: Iterable[Path] = videos
    if progress:
        from tqdm import tqdm
        iterator = tqdm(videos, desc="calibration videos", unit="video", leave=False)
    for path in iterator:
        frames = list(_read_frames(path, frames_needed))
        if not frames:
            unreadable.append(path.name)
            continue
        clips, _ = clips_from_frames(frames, spec)
        if len(clips) == 0:
            short.append(f"{path.name} ({len(frames)} frames)")
            continue
        clips = clips[:per_video]
        chunks.append(clips)
        used.append({"file": str(path.relative_to(calib_dir)), "clips": int(len(clips))})
    if not chunks:
        if short:
            raise CalibrationError(
                f"every video in {calib_dir} is shorter than one clip "
                f"({spec.frames_per_clip} frames needed): {', '.join(short[:5])}",
                hint=f"add videos with at least {spec.frames_per_clip} frames")
        raise CalibrationError(f"no readable video in {calib_dir} (OpenCV could not decode: "
                               f"{', '.join(unreadable[:5])})",
                               hint="put videos OpenCV can decode (mp4/avi/mkv/mov) into the calib dir")
    clips = np.concatenate(chunks)
    if len(clips) > max_clips:
        keep = np.sort(np.random.default_rng(seed).choice(len(clips), max_clips, replace=False))
        clips = clips[keep]
    if report is not None:
        report.update({"dir": str(calib_dir), "videos": used, "unreadable": unreadable,
                       "too_short": short, "num_clips": int(len(clips)), "seed": seed,
                       "preprocessing": "gcf_trt.preprocess.clips_from_frames"})
    return np.ascontiguousarray(clips, dtype=np.float32)


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
        self._bar = None
        if progress:
            from tqdm import tqdm
            self._bar = tqdm(total=len(clips), desc="calibrating", unit="clip", leave=False)

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
                  percentile: float = 99.999, batch: int = 1, progress: bool = False) -> dict[str, Any]:
    """Static INT8 Q/DQ quantization of an FP32 ONNX graph, calibrated on ``clips``.

    Args:
        fp32_onnx_path: the FP32 graph (``backbone.onnx``).
        out_path: where to write the Q/DQ graph (marked ``gcf_trt.precision = int8``).
        clips: calibration clips ``[K, 3, T, H, W]`` (see :func:`calibration_clips`).
        exclude_nodes: node names to keep FP32; ``None`` = the stem's first conv (found in the
            graph), ``[]`` = quantize everything.
        method: ``"minmax"`` (default) or ``"percentile"``.

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
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = float(percentile)
        # Not CalibMaxIntermediateOutputs: in ORT 1.32 MinMaxCalibrater.collect_data clears the
        # collected batches at that count *without* reducing them first (their ranges are lost).
        # MinMax needs no memory cap anyway: its augmented graph outputs per-tensor ReduceMin/Max.
        raw = Path(tmpdir) / "int8.onnx"
        quantize_static(str(pre), str(raw), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded or None, calibrate_method=calib_method,
                        extra_options=extra)
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
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
        "activations": "int8 symmetric (per-tensor)", "weights": "int8 symmetric per-channel",
        "method": method, **({"percentile": percentile} if method == "percentile" else {}),
        "entropy_note": "Entropy not used: quantize_static gives MinMax ranges for it (measured)",
        "num_calibration_clips": int(len(clips)),
        "excluded_nodes": list(excluded), "exclusion_reason": reason,
        "quantized_nodes": len(quantized_nodes(model)),
        "quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0),
        "seconds": round(time.perf_counter() - start, 2),
    }


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


def agreement(reference: Any, test: Any, clips: np.ndarray, head: Any, *, ring_size: int | None = None,
              batch: int = 1) -> dict[str, Any]:
    """How far a reduced-precision backbone is from the FP32 reference, judged on predictions.

    Both backbones run over ``clips`` (held-out clips, in order); their descriptors fill the
    rings a stream would present (:func:`rings`) and the same FP32 ``head`` classifies each ring.

    Args:
        reference, test: a backend (``infer({"clip": x})["descriptor"]``) or a function
            ``clips [B,3,T,H,W] -> descriptors [B,D]``.
        head: a head backend or a function ``(descriptors [B,N,D], mask [B,N]) -> logits [B,C]``.
        ring_size: N; default from the head backend's ``mask`` input shape.

    Returns:
        ``top1_agreement`` (fraction of rings whose predicted class is the same),
        ``cosine_mean`` / ``cosine_min`` (descriptor cosine similarity per clip),
        ``max_abs_logit_diff``, ``num_clips``, ``num_predictions``.
    """
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 5 or len(clips) == 0:
        raise InputError(f"agreement needs clips [K,3,T,H,W] with K >= 1, got shape {clips.shape}")
    if ring_size is None:
        shape = getattr(head, "input_shapes", {}).get("mask")
        if not shape or shape[-1] is None or shape[-1] < 1:
            raise InputError("ring_size is needed when the head is not a backend with a fixed mask shape")
        ring_size = int(shape[-1])
    ref = descriptors(reference, clips, batch)
    out = descriptors(test, clips, batch)
    num = (ref * out).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(den > 0, num / np.maximum(den, 1e-30), np.where(np.abs(ref - out).max(1) == 0, 1.0, 0.0))
    run_head = _head_fn(head)
    ref_rings, mask = rings(ref, ring_size)
    out_rings, _ = rings(out, ring_size)
    ref_logits = np.concatenate([run_head(ref_rings[i:i + 16], mask[i:i + 16]) for i in range(0, len(mask), 16)])
    out_logits = np.concatenate([run_head(out_rings[i:i + 16], mask[i:i + 16]) for i in range(0, len(mask), 16)])
    same = ref_logits.argmax(1) == out_logits.argmax(1)
    return {
        "top1_agreement": float(same.mean()),
        "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
        "max_abs_logit_diff": float(np.abs(ref_logits - out_logits).max()),
        "num_clips": int(len(clips)), "num_predictions": int(len(same)), "ring_size": int(ring_size),
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
            f"held-out predictions, below --min-agreement {min_agreement:.1%} "
            f"(descriptor cosine mean {result['cosine_mean']:.4f}, min {result['cosine_min']:.4f})")
    if min_cosine is not None and result["cosine_min"] < min_cosine:
        raise AgreementError(
            f"{what}: minimum descriptor cosine with FP32 is {result['cosine_min']:.4f}, below "
            f"--min-cosine {min_cosine:.4f} (top-1 agreement {result['top1_agreement']:.1%})")
