#!/usr/bin/env python
"""The per-frame transform before and after issue 14, interleaved in one process.

    python benchmarks/preprocess.py [--rounds 300] [--sizes 640x480,1280x720,1920x1080]
                                    [--agreement N] [--json out.json]

Frames are decoded from a video made with the bench's synthetic recipe (textured, panning,
moving shapes, camera noise; mp4v), at each size.  Every candidate runs once per round, round
robin, so load from other jobs hits all of them alike: read the ratios, not the milliseconds.

Candidates (ModelSpec defaults: resize_short 128, crop 112):

* ``old``: the transform before issue 14 (whole frame resized with one INTER_AREA, centre crop,
  numpy BGR->RGB / HWC->CHW / astype / *= / +=);
* ``new``: ``gcf_trt.preprocess.Preprocessor`` as it is now;
* ``new.resize_crop`` / ``new.to_tensor``: its two steps;
* ``cast_only``: what would remain per frame if the normalisation moved into the backbone
  graph (a raw 0-255 float input): HWC->CHW + astype.  ``new.to_tensor - cast_only`` bounds
  what folding the normalisation into the graph could save.

Also the OpenCV thread count (1 vs the default) on ``new``, in blocks, interleaved.

``--agreement N``: the bundled demo checkpoint's predictions on N generated labelled videos with
the old vs the new transform (top-1 agreement, accuracy of each), needs torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gcf_trt.preprocess import Preprocessor, as_bgr, clip_starts
from gcf_trt.spec import ModelSpec


class OldPreprocessor:
    """The transform before issue 14, verbatim (for the comparison only)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        std = np.asarray(spec.std, np.float32)
        mean = np.asarray(spec.mean, np.float32)
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._offset = (-mean / std).reshape(3, 1, 1)

    def resize_crop(self, frame: np.ndarray) -> np.ndarray:
        bgr = as_bgr(frame)
        h, w = bgr.shape[:2]
        short, size = self.spec.resize_short, self.spec.size
        scale = short / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(bgr, (new_w, new_h), interpolation=interp)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return resized[top:top + size, left:left + size]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        crop = self.resize_crop(frame)
        chw = crop[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        chw *= self._scale
        chw += self._offset
        return chw


def write_video(path: Path, frames: int, size: tuple[int, int], seed: int = 0) -> Path:
    """The bench's synthetic video recipe: textured panning background, moving discs, noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    base = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    for i in range(frames):
        frame = np.roll(base, i, axis=1)
        for k in range(3):
            x = int((w - 80) * (0.5 + 0.5 * np.sin(0.05 * i + 2 * k)))
            y = int((h - 80) * (0.5 + 0.5 * np.cos(0.07 * i + k)))
            cv2.circle(frame, (x + 40, y + 40), 30 + 5 * k, (60 * k, 200, 255 - 60 * k), -1)
        noise = rng.integers(-6, 7, (h, w, 1), dtype=np.int16)
        writer.write(np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def decoded_frame(size: tuple[int, int], work: Path) -> np.ndarray:
    path = write_video(work / f"v{size[0]}x{size[1]}.mp4", 8, size)
    cap = cv2.VideoCapture(str(path))
    for _ in range(5):
        ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot decode {path}")
    return frame


def interleaved(cands: dict, rounds: int, warmup: int = 10) -> dict[str, float]:
    times = {k: [] for k in cands}
    for r in range(warmup + rounds):
        for k, fn in cands.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def threads_ab(fn, rounds: int, block: int = 10) -> dict[str, float]:
    default = cv2.getNumThreads()
    times = {1: [], default: []}
    try:
        for _ in range(max(1, rounds // block)):
            for n in times:
                cv2.setNumThreads(n)
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn()
                    times[n].append(time.perf_counter() - t0)
    finally:
        cv2.setNumThreads(default)
    p50 = {n: float(np.median(v)) * 1e3 for n, v in times.items()}
    return {"threads_1_p50_ms": p50[1], f"threads_{default}_p50_ms": p50[default],
            "one_over_default": p50[1] / p50[default]}


def agreement(count: int, work: Path) -> dict[str, float]:
    import torch
    from gcf_trt.compile.model import load_checkpoint
    from gcf_trt.data import make_videos, read_video
    from gcf_trt.datasets import read_labels
    ckpt = Path(__file__).resolve().parents[1] / "gcf_trt" / "assets" / "demo.pt"
    model = load_checkpoint(ckpt).eval()
    spec = model.spec
    make_videos(work / "videos", count, seed=123)
    preps = {"old": OldPreprocessor(spec), "new": Preprocessor(spec)}
    top1 = {k: [] for k in preps}
    labels = []
    for rec in read_labels(work / "videos"):
        frames = read_video(rec.path)
        labels.append(rec.label_index)
        for k, prep in preps.items():
            sampled = [prep(f) for f in frames[::spec.frame_step]]
            starts = clip_starts(len(sampled), spec)[-spec.ring_size:]
            clips = np.stack([np.stack(sampled[s:s + spec.clip_len], 1) for s in starts])
            with torch.no_grad():
                logits, _ = model(torch.from_numpy(clips)[None])
            top1[k].append(int(logits[0].argmax()))
    return {"videos": count,
            "top1_agreement_old_new": float(np.mean(np.equal(top1["old"], top1["new"]))),
            "accuracy_old": float(np.mean(np.equal(top1["old"], labels))),
            "accuracy_new": float(np.mean(np.equal(top1["new"], labels)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--sizes", default="640x480,1280x720,1920x1080")
    ap.add_argument("--agreement", type=int, default=0, metavar="N")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    spec = ModelSpec()
    old, new = OldPreprocessor(spec), Preprocessor(spec)
    result = {"spec": {"resize_short": spec.resize_short, "size": spec.size},
              "opencv": cv2.__version__, "provisional": "shared, loaded machine: ratios only"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for text in args.sizes.split(","):
            w, h = (int(v) for v in text.lower().split("x"))
            frame = decoded_frame((w, h), work)
            crop = new.resize_crop(frame)
            cands = {"old": lambda: old(frame), "new": lambda: new(frame),
                     "new.resize_crop": lambda: new.resize_crop(frame),
                     "new.to_tensor": lambda: new.to_tensor(crop),
                     "cast_only": lambda: crop.transpose(2, 0, 1).astype(np.float32)}
            p50 = interleaved(cands, args.rounds)
            diff = np.abs(old.resize_crop(frame).astype(np.float32) - crop.astype(np.float32))
            result[text] = {"p50_ms": p50, "new_over_old": p50["new"] / p50["old"],
                            "old_over_new": p50["old"] / p50["new"],
                            "to_tensor_share_of_new": p50["new.to_tensor"] / p50["new"],
                            "fold_into_graph_saves_at_most_ms": p50["new.to_tensor"] - p50["cast_only"],
                            "crop_abs_diff_old_new_0_255": {"mean": float(diff.mean()), "max": float(diff.max())},
                            "opencv_threads": threads_ab(lambda: new(frame), args.rounds)}
            r = result[text]
            print(f"{text}: old {p50['old']:.3f} ms, new {p50['new']:.3f} ms (resize_crop "
                  f"{p50['new.resize_crop']:.3f}, to_tensor {p50['new.to_tensor']:.3f}, cast_only "
                  f"{p50['cast_only']:.3f}); old/new {r['old_over_new']:.1f}x; crop diff mean "
                  f"{diff.mean():.2f} max {diff.max():.0f}; cv2 threads 1/default "
                  f"{r['opencv_threads']['one_over_default']:.2f}")
        if args.agreement:
            result["demo_model_agreement"] = agreement(args.agreement, work)
            print("demo model:", result["demo_model_agreement"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
