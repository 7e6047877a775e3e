"""The demo: bundled model -> CPU engines chosen by measurement -> a generated video streamed ->
predictions, action segments, ``annotated.mp4`` and ``timeline.png``.

It is the README's first command, so it must work on a fresh ``pip install -e '.[torch,openvino]'``:
drawing uses OpenCV only, and the precision it ships is whatever the build's timed trial picked
among the candidates that passed the agreement gate (INT8 among them), said in the summary.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

DEMO_CHECKPOINT = "demo.pt"
# The build holds out whole calibration videos until their clips give the gate's 256 ring
# predictions, and calibrates on up to 64 clips of the rest.  How many videos that takes depends
# on the model's clips (8-frame clips: ~12 per generated video, 16-frame ones: ~6), so the
# default count is computed from the checkpoint's spec (:func:`calibration_video_count`).
DEFAULT_CALIB_VIDEOS = None


def calibration_video_count(spec, seed: int) -> int:
    """Generated calibration videos that always give the gate its held-out predictions and the
    INT8 calibration its clips, whichever videos the build's seeded split holds out.

    The split holds videos out until they reach the gate's count, so it holds out at most one
    video's clips beyond it; the rest must still give the calibration clips.  The videos are
    planned (not rendered) with the seed :func:`run_demo` generates them with.
    """
    from .compile.calibration import GATE_PREDICTIONS
    from .compile.options import CalibrationOptions
    from .data import GenConfig, plan_video
    from .errors import InputError
    from .preprocess import clip_starts

    def clips(frames: int) -> int:
        return len(clip_starts(-(-frames // spec.frame_step), spec))

    need = GATE_PREDICTIONS + CalibrationOptions().clips + clips(GenConfig().max_frames)
    count, total = 0, 0
    while total < need:
        if count >= 10_000:
            raise InputError(f"generated videos are too short for the model's clips "
                             f"({spec.clip_len} frames every {spec.frame_step})")
        # A video's length does not depend on its class (make_videos gives each one).
        total += clips(plan_video(seed, count, label=0).num_frames)
        count += 1
    return count


def bundled_checkpoint() -> Path:
    """The demo checkpoint shipped in the wheel (``gcf_trt/assets/demo.pt``)."""
    from importlib.resources import files
    return Path(str(files("gcf_trt.assets").joinpath(DEMO_CHECKPOINT)))


@dataclass
class DemoResult:
    """What the demo did: the engines it built, the truth, the final prediction and the files."""

    engines_dir: Path
    precision: str
    runtime: str
    why: str
    label: str
    truth: str
    score: float
    segment: tuple[int, int] | None
    truth_range: tuple[int, int]
    tiou: float
    files: list[Path] = field(default_factory=list)
    build_summary: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_demo(out: str | Path, *, checkpoint: str | Path | None = None, precision: str = "auto",
             seed: int = 7, label: str | None = None, calib_videos: int | None = DEFAULT_CALIB_VIDEOS,
             say: Callable[[str], None] = print, progress: Callable[[str], None] | None = print) -> DemoResult:
    """Run the whole demo into ``out``.

    Args:
        precision: ``"auto"`` (default: the build's timed trial picks the fastest candidate that
            passes the agreement gate), ``"int8"`` or ``"fp32"``.  A forced ``"int8"`` that fails
            the gate is an error, never a silent fallback.
        calib_videos: generated calibration videos (auto / int8); part of them are held out for
            the agreement gate.  None (default): enough for the gate and the calibration
            (:func:`calibration_video_count`).
        say: prints the predictions and the result; progress: build progress lines (None: quiet).
    """
    from .compile.build import build_engines
    from .data import CLASSES, make_videos, plan_video, read_video, render_video, write_video
    from .errors import InputError
    from .fsutil import atomic_file
    from .runtime.draw import annotate_frames, decision_text, draw_gate_timeline
    from .runtime.stream import StreamingClassifier
    from .segments import SegmentTracker, temporal_iou

    t_start = time.time()
    out = Path(out)
    ckpt = Path(checkpoint) if checkpoint else bundled_checkpoint()
    if not ckpt.is_file():
        raise InputError(f"demo checkpoint {ckpt} is missing",
                         hint="reinstall gcf-trt (the wheel ships gcf_trt/assets/demo.pt) or pass --checkpoint")
    if precision not in ("auto", "int8", "fp32"):
        raise InputError(f"--precision must be auto, int8 or fp32, got {precision!r}")
    if calib_videos is not None and calib_videos < 2:
        raise InputError(f"--calib-videos must be >= 2, got {calib_videos}")
    label_index = None
    if label is not None:
        if label not in CLASSES:
            raise InputError(f"unknown class {label!r} for --label", hint=f"choose one of {', '.join(CLASSES)}")
        label_index = CLASSES.index(label)
    out.mkdir(parents=True, exist_ok=True)

    # 1. engines: the build measures and chooses (the gate decides what may be chosen)
    engines_dir = out / "engines"
    calib = None
    if precision in ("int8", "auto"):
        calib = out / "calib"
        if calib_videos is None:
            from .compile.model import load_checkpoint
            calib_videos = calibration_video_count(load_checkpoint(ckpt).spec, 10_000 + seed)
        if progress:
            progress(f"generating {calib_videos} calibration videos in {calib}")
        make_videos(calib, calib_videos, seed=10_000 + seed)
    if progress:
        progress(f"building {precision} CPU engines from {ckpt}")
    result = build_engines(ckpt, engines_dir, target="cpu", precision=precision, calib=calib,
                           progress=(lambda m: progress(f"    {m}")) if progress else None)
    why = result.manifest.get("selection", {}).get("why", "")
    for line in result.summary:
        say(f"    {line}")

    # 2. a test video (torch-free generator) and 3. stream it
    plan = plan_video(seed, 0, label=label_index)
    video_path = write_video(out / "input.mp4", render_video(plan))
    say(f"test video {video_path}: {plan.num_frames} frames, action '{plan.label_name}' "
        f"at frames {plan.start}-{plan.end}")
    decoded = read_video(video_path)
    predictions, per_frame = [], []
    with StreamingClassifier(engines_dir) as clf:
        backbone = clf.engines.manifest["components"]["backbone"]
        tracker = SegmentTracker(delay=clf.spec.long_range)
        for frame in decoded:
            pred = clf.push(frame)
            if pred is not None:
                predictions.append(pred)
                for seg in tracker.update(pred.gates):
                    say(f"    segment: frames {seg.start}-{seg.end} (score {seg.score:.2f})")
                g = pred.gates[-1]
                say(f"clip {pred.clip_index:2d} frames {g.frame_range[0]:3d}-{g.frame_range[1]:3d}  "
                    f"-> {decision_text(pred):28s}   gate(newest) {g.gate:.2f}   "
                    f"{pred.latency_ms['total']:.1f} ms")
            per_frame.append(predictions[-1] if predictions else None)
        for seg in tracker.flush():
            say(f"    segment: frames {seg.start}-{seg.end} (score {seg.score:.2f})")
        segments = tracker.segments
    if not predictions:
        raise InputError("the test video is shorter than one clip")
    final = predictions[-1]
    best = max(segments, key=lambda s: s.score) if segments else None
    tiou = temporal_iou((best.start, best.end), (plan.start, plan.end)) if best else 0.0

    # 4. annotated video and timeline, each written atomically
    truth = (plan.start, plan.end, plan.label_name)
    annotated = write_video(out / "annotated.mp4", annotate_frames(decoded, per_frame, segments, truth=truth))
    timeline = draw_gate_timeline(predictions, segments, len(decoded), truth=truth,
                                  shaded=[(b0, b1) for b0, b1, _ in plan.bursts])
    import cv2
    timeline_path = out / "timeline.png"
    with atomic_file(timeline_path) as tmp:
        if not cv2.imwrite(str(tmp), timeline):
            raise InputError(f"OpenCV could not write {timeline_path}")
    return DemoResult(engines_dir=engines_dir, precision=str(backbone.get("precision")),
                      runtime=str(backbone.get("runtime")), why=why or "the only candidate", label=final.label,
                      truth=plan.label_name, score=float(final.score),
                      segment=(best.start, best.end) if best else None, truth_range=(plan.start, plan.end),
                      tiou=float(tiou), files=[annotated, timeline_path], build_summary=list(result.summary),
                      seconds=time.time() - t_start)


def summary_lines(result: DemoResult) -> list[str]:
    """The demo's closing lines: what was built and why, the prediction, the segment, the files."""
    ok = "correct" if result.label == result.truth else "WRONG"
    lines = [f"engines: {result.runtime} {result.precision} - {result.why}",
             f"prediction: {result.label} ({result.score:.2f}) - truth: {result.truth} -> {ok}"]
    if result.segment:
        lines.append(f"action segment: frames {result.segment[0]}-{result.segment[1]} vs truth "
                     f"{result.truth_range[0]}-{result.truth_range[1]} (tIoU {result.tiou:.2f})")
    else:
        lines.append("no action segment found")
    lines.append(f"wrote {', '.join(str(f) for f in result.files)}, engines in {result.engines_dir} "
                 f"({result.seconds:.0f} s)")
    return lines

