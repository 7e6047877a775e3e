"""INT8 (and BF16) against FP32 on a *trained* model: agreement of the stream's decisions and classes.

The model is ``--checkpoint`` when given (then the speed figures and these come from the same
model and its builds are reused), else the bundled trained ``gcf_trt/assets/demo.pt``.  Clips
are cut from the product's procedural videos of a seed used neither for training nor for
calibration, until at least ``Config.agreement_predictions`` predictions (issue 13: >= 256).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..engines import Built, Builds, build, calibration_options, int8_build
from ..fixtures import calibration_videos, labelled_videos
from ..timing import error_text

CALIB_SEED, EVAL_SEED = 7001, 7002  # not the training seeds (gcf_trt.train uses 0..)


def eval_clips(spec, work: Path, want: int, *, max_videos: int = 400) -> tuple[list[np.ndarray], int]:
    """Clip sequences, one per freshly generated video (seed ``EVAL_SEED``), until ``want`` clips.

    Not cut short by the section's budget: a figure on fewer predictions than asked for cannot
    resolve 99 % (issue 13), so the budget is sized for it instead."""
    batch = 4 if want <= 64 else 8
    from ...data import read_video
    from ...preprocess import clips_from_frames
    clips, videos = [], 0
    while sum(len(c) for c in clips) < want and videos < max_videos:
        part = work / f"eval_{videos // batch}"
        for path in labelled_videos(part, batch, seed=EVAL_SEED + videos // batch):
            c, _ = clips_from_frames(read_video(path), spec)
            if len(c):
                clips.append(c)
        videos += batch
    return clips, videos


def int8_agreement(fp32: Built, int8_file: Path, clips: list[np.ndarray], spec, *,
                   bf16: tuple[bool, str]) -> dict[str, Any]:
    """Per runtime: INT8 backbone vs the ONNX Runtime FP32 backbone, the same FP32 head
    (:func:`gcf_trt.compile.agreement.agreement`: rings never span two videos; its result
    carries the 95 % Wilson interval ``top1_agreement_ci95``)."""
    from ...compile.agreement import agreement
    from ...runtime.backends import open_backend
    fp32_backbone = fp32.file("backbone")
    ref = open_backend("onnxruntime", fp32_backbone, {})
    head = open_backend("onnxruntime", fp32.file("head"), {})
    tests = [("onnxruntime", "onnxruntime", int8_file, {}),
             ("openvino", "openvino", int8_file, {"inference_precision": "f32"})]
    if bf16[0]:
        tests.append(("openvino_bf16 (FP32 file, BF16 compute)", "openvino", fp32_backbone,
                      {"inference_precision": "bf16"}))
    out: dict[str, Any] = {}
    for label, runtime, path, options in tests:
        try:
            out[label] = agreement(ref, open_backend(runtime, path, options), clips, head, ring_size=spec.ring_size,
                                   no_action_index=spec.no_action_index)
        except Exception as exc:  # noqa: BLE001
            out[label] = {"unavailable": error_text(exc)}
    if not bf16[0]:
        out["openvino_bf16 (FP32 file, BF16 compute)"] = {"unavailable": bf16[1]}
    return out


def section(ctx) -> dict[str, Any]:
    from ..machine import native_bf16
    config, say = ctx.config, ctx.say
    model_ckpt = config.agreement_checkpoint
    work = ctx.work / "agreement"
    if model_ckpt is None or Path(model_ckpt).resolve() == Path(ctx.checkpoint).resolve():
        builds: Builds = ctx.builds
        note = (f"the benchmarked model ({ctx.checkpoint.name}): speed and agreement from the same model"
                if model_ckpt else "NOT a trained model: the benchmark's random-weights model (quick mode proves "
                                   "the code path; the figure means nothing)")
        spec = ctx.spec
    else:
        note = f"trained checkpoint {Path(model_ckpt).name} (speed is timed on another model: pass --checkpoint)"
        calib = work / "calib"
        fp32 = build("agreement_fp32", Path(model_ckpt), work / "fp32", say, target="cpu", precision="fp32",
                     runtime="onnxruntime", **config.build_options)
        if not isinstance(fp32, Built):
            raise RuntimeError(f"the agreement model's FP32 build failed: {fp32.reason}")
        calibration_videos(calib, fp32.spec, calibration_options(config.build_options), seed=CALIB_SEED)
        builds = prepare_int8_only(Path(model_ckpt), work, calib, fp32, say, config.build_options)
        spec = fp32.spec
    if not builds.int8_file:
        return {"model": note, "unavailable": builds.int8_source}
    say(f"INT8 agreement on {note}")
    clips, videos = eval_clips(spec, work, config.agreement_predictions)
    per = int8_agreement(builds.fp32, builds.int8_file, clips, spec, bf16=native_bf16())
    int8 = builds.int8 if builds.int8 is not None else builds.cpu
    return {"model": note, "checkpoint": str(model_ckpt or ctx.checkpoint), "int8_file": builds.int8_file.name,
            "int8_source": builds.int8_source, "num_eval_videos": videos, "num_clips": int(sum(len(c) for c in clips)),
            "videos": f"gcf_trt.data.make_videos, seeds {CALIB_SEED} (calibration) / {EVAL_SEED}+ (evaluation)",
            "per_runtime": per, "build": int8.record() if int8 is not None else None}


def prepare_int8_only(checkpoint: Path, work: Path, calib: Path, fp32: Built, say, options) -> Builds:
    """The INT8 file of a model the speed sections do not use (:func:`~gcf_trt.bench.engines.int8_build`)."""
    int8, file, source = int8_build("agreement_int8", checkpoint, work / "int8", calib, say, options)
    builds = Builds(fp32, int8, int8=int8)
    builds.int8_file, builds.int8_source = file, source
    return builds
