"""``gcf-trt demo``: bundled model -> CPU engines -> stream a generated video -> predictions,
an annotated video, and a timeline of the gates and the detected segments vs the truth."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_CHECKPOINT = "demo.pt"


def bundled_checkpoint() -> Path:
    from importlib.resources import files
    return Path(str(files("gcf_trt.assets").joinpath(DEMO_CHECKPOINT)))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build engines from the bundled model and stream a generated video")
    p.add_argument("--out", required=True, help="output directory (engines, videos, timeline.png)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the bundled demo model)")
    p.add_argument("--precision", default="int8", choices=["int8", "fp32", "auto"],
                   help="CPU engine precision (int8 is calibrated on generated videos)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated test video")
    p.add_argument("--label", default=None, help="class of the test video (default: drawn from the seed)")
    p.add_argument("--calib-videos", type=int, default=8, help="generated calibration videos (int8/auto)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..data import CLASSES, make_videos, plan_video, render_video, write_video
    from ..errors import GcfError, InputError
    from ..segments import SegmentTracker, temporal_iou

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else bundled_checkpoint()
    if not ckpt.is_file():
        raise InputError(f"demo checkpoint {ckpt} is missing",
                         hint="reinstall gcf-trt (the wheel ships gcf_trt/assets/demo.pt) or pass --checkpoint")

    # 1. engines
    from ..compile.build import build_engines
    engines_dir = out / "engines"
    calib = None
    if args.precision in ("int8", "auto"):
        calib = out / "calib"
        print(f"... generating {args.calib_videos} calibration videos in {calib}")
        make_videos(calib, args.calib_videos, seed=10_000 + args.seed)
    print(f"... building {args.precision} CPU engines from {ckpt}")
    try:
        result = build_engines(ckpt, engines_dir, target="cpu", precision=args.precision, calib=calib,
                               progress=lambda m: print(f"    {m}"))
    except GcfError as exc:
        if args.precision == "fp32":
            raise
        print(f"!!! {args.precision} build failed ({exc.kind}: {exc.message}); falling back to fp32")
        result = build_engines(ckpt, engines_dir, target="cpu", precision="fp32",
                               progress=lambda m: print(f"    {m}"))
    for line in result.summary:
        print(f"    {line}")

    # 2. test video (torch-free generator)
    label = None
    if args.label is not None:
        if args.label not in CLASSES:
            raise InputError(f"unknown class {args.label!r}", hint=f"choose one of {', '.join(CLASSES)}")
        label = CLASSES.index(args.label)
    plan = plan_video(args.seed, 0, label=label)
    frames = render_video(plan)
    video_path = write_video(out / "input.mp4", frames)
    print(f"... test video {video_path}: {plan.num_frames} frames, action '{plan.label_name}' "
          f"at frames {plan.start}-{plan.end}")

    # 3. stream it
    from ..data import read_video
    from ..runtime.stream import StreamingClassifier
    decoded = read_video(video_path)
    predictions = []
    per_frame = []
    with StreamingClassifier(engines_dir) as clf:
        tracker = SegmentTracker(delay=clf.spec.long_range)
        for i, frame in enumerate(decoded):
            pred = clf.push(frame)
            if pred is not None:
                predictions.append(pred)
                for seg in tracker.update(pred.gates):
                    print(f"    segment: frames {seg.start}-{seg.end} (score {seg.score:.2f})")
                g = pred.gates[-1]
                print(f"clip {pred.clip_index:2d} frames {g.frame_range[0]:3d}-{g.frame_range[1]:3d}  "
                      f"-> {pred.label:11s} {pred.score:.2f}   gate(newest) {g.gate:.2f}   "
                      f"{pred.latency_ms['total']:.1f} ms")
            per_frame.append(predictions[-1] if predictions else None)
        for seg in tracker.flush():
            print(f"    segment: frames {seg.start}-{seg.end} (score {seg.score:.2f})")
        segments = tracker.segments
        precision = clf.engines.manifest["components"]["backbone"]["precision"]
    if not predictions:
        raise InputError("the test video is shorter than one clip")
    final = predictions[-1]
    best = max(segments, key=lambda s: s.score) if segments else None
    tiou = temporal_iou((best.start, best.end), (plan.start, plan.end)) if best else 0.0

    # 4. annotated video + timeline
    _annotate(out / "annotated.mp4", decoded, per_frame, plan, segments)
    _timeline(out / "timeline.png", final, plan, segments, predictions)
    ok = "correct" if final.label == plan.label_name else "WRONG"
    print(f"\nprediction: {final.label} ({final.score:.2f}) - truth: {plan.label_name} -> {ok}  "
          f"[{precision} engines]")
    if best:
        print(f"action segment: frames {best.start}-{best.end} vs truth {plan.start}-{plan.end} (tIoU {tiou:.2f})")
    else:
        print("no action segment found")
    print(f"wrote {out / 'annotated.mp4'}, {out / 'timeline.png'}, engines in {engines_dir} "
          f"({time.time() - t_start:.0f} s)")
    return 0


def _annotate(path, frames, per_frame, plan, segments) -> None:
    import cv2
    import numpy as np
    from ..data import write_video
    scale = 4
    out = []
    for i, (frame, pred) in enumerate(zip(frames, per_frame)):
        big = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        h, w = big.shape[:2]
        panel = np.zeros((70, w, 3), np.uint8)
        truth = plan.start <= i <= plan.end
        in_seg = any(s.start <= i <= s.end for s in segments)
        text = f"frame {i}" + (f"  {pred.label} {pred.score:.2f}" if pred else "  (filling first clip)")
        cv2.putText(panel, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(panel, f"truth: {plan.label_name} {'[action]' if truth else ''}", (8, 52),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (120, 255, 120) if truth else (180, 180, 180), 1, cv2.LINE_AA)
        if in_seg:
            cv2.putText(panel, "detected action", (w - 200, 52), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (80, 200, 255), 2, cv2.LINE_AA)
        # timeline strip: truth (green) and detected segments (orange), cursor
        strip = np.zeros((14, w, 3), np.uint8)
        n = len(frames)
        x0, x1 = int(plan.start / n * w), int((plan.end + 1) / n * w)
        strip[:7, x0:x1] = (80, 200, 80)
        for s in segments:
            strip[7:, int(s.start / n * w):int((s.end + 1) / n * w)] = (40, 160, 255)
        strip[:, int(i / n * w)] = (255, 255, 255)
        out.append(np.concatenate([big, panel, strip], 0))
    write_video(path, out)


def _timeline(path, final, plan, segments, predictions) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.axvspan(plan.start, plan.end + 1, color="tab:green", alpha=0.2, label=f"truth: {plan.label_name}")
    for s in segments:
        ax.axvspan(s.start, s.end + 1, ymin=0, ymax=0.08, color="tab:orange")
    if segments:
        ax.plot([], [], color="tab:orange", lw=6, label="detected segments")
    xs, ys = [], []
    for g in final.gates:
        xs += [g.frame_range[0], g.frame_range[1] + 1]
        ys += [g.gate, g.gate]
    ax.plot(xs, ys, color="tab:blue", lw=2, label="gate per clip (final ring)")
    for b0, b1, cls in plan.bursts:
        ax.axvspan(b0, b1 + 1, color="tab:red", alpha=0.1)
    if plan.bursts:
        ax.plot([], [], color="tab:red", alpha=0.3, lw=6, label="distractor bursts")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("gate")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"GCF gates: predicted {final.label} ({final.score:.2f}), truth {plan.label_name}")
    labels = sorted({p.label for p in predictions})
    ax2.step([p.gates[-1].frame_range[1] for p in predictions], [labels.index(p.label) for p in predictions],
             where="post")
    ax2.set_yticks(range(len(labels)), labels, fontsize=7)
    ax2.set_xlabel("frame")
    ax2.set_ylabel("prediction", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
