"""Where INT8 top-1 flips happen: the FP32 prediction's margin, the ring fill, the clip selection,
and how much of the labelled action the ring holds.

The product's recipe (``quantize_int8``, 64 calibration clips) on the checkpoint's backbone, the
real INT8 graph on ONNX Runtime or OpenVINO, every ring prediction of the evaluation videos
against FP32 (the same FP32 head).  Behind docs/INT8.md ("Why PTQ and QAT stop near 97-98 %").
With the evaluation set's ``labels.csv`` (action windows), the flips are also split by how many
clips' worth of the action the ring holds (none: FP32 has nothing to recognise and guesses), and
a what-if reports the agreement of a decision that abstains when the ring's largest gate is
under a threshold tau (at tau = ACTION_GATE this is the product's ``Prediction.action``, which
the build's gate reports as ``decision_agreement``; docs/INT8.md, "The decision").

    python benchmarks/int8_flips.py --checkpoint gcf_trt/assets/demo.pt --calib CAL_DIR --videos EVAL_DIR
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from gcf_trt.compile.agreement import NEAR_TIE_MARGIN, RELEVANT_GATE, clustered_interval, rings, top2_margin
from gcf_trt.compile.export import export_backbone
from gcf_trt.compile.model import load_checkpoint
from gcf_trt.compile.precision import quantize_int8
from gcf_trt.data import read_video
from gcf_trt.datasets import clip_overlap, read_labels
from gcf_trt.errors import InputError
from gcf_trt.preprocess import clips_from_frames


def int8_runner(path: Path, runtime: str):
    if runtime == "openvino":
        import openvino as ov
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: compiled([x])[0]
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"clip": x})[0]


def ring_action_clips(overlap: np.ndarray, ring_size: int) -> np.ndarray:
    """Clips' worth of the action in each ring a stream presents: ring k holds clips
    ``max(0, k-N+1) .. k`` (as :func:`gcf_trt.compile.agreement.rings`); ``overlap[k]`` is the
    fraction of clip k's frames inside the labelled action."""
    return rings(np.asarray(overlap, np.float32)[:, None], ring_size)[0][..., 0].sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--calib", required=True, help="calibration videos")
    ap.add_argument("--videos", required=True, help="evaluation videos (not the calibration ones)")
    ap.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime")
    ap.add_argument("--weight-bits", choices=("7", "8"), default="8",
                    help="8: the build's graph; 7: reduce_range (the recipe without VNNI before 2026-12-04)")
    ap.add_argument("--graph", choices=("cpu", "tensorrt"), default="cpu",
                    help="tensorrt: TensorRT's graph (int8 symmetric activations, 8-bit weights, float biases) run here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_checkpoint(args.checkpoint).eval()
    spec = model.spec
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_backbone(model, work / "backbone.onnx")
        calib = np.concatenate([clips_from_frames(read_video(p), spec)[0] for p in sorted(Path(args.calib).glob("*.mp4"))[:16]])
        calib = calib[np.random.default_rng(0).permutation(len(calib))[:64]]
        done = quantize_int8(work / "backbone.onnx", work / "int8.onnx", calib, for_tensorrt=args.graph == "tensorrt",
                             reduce_range=args.weight_bits == "7")
        print(f"INT8 {args.graph} graph: {done['weight_bits']}-bit weights, {done['activations']} activations")
        int8 = int8_runner(work / "int8.onnx", args.runtime)
        try:
            windows = {r.path.name: (r.start, r.end) for r in read_labels(args.videos)}
        except InputError:  # a set without labels.csv: no split by action window
            windows = {}
        rows, cosines, per_video = [], [], []
        with torch.no_grad():
            for path in sorted(Path(args.videos).glob("*.mp4")):
                clips, ranges = clips_from_frames(read_video(path), spec)
                if not len(clips):
                    continue
                window = windows.get(path.name)
                action = (ring_action_clips(clip_overlap(ranges, *window), spec.ring_size) if window
                          else np.full(len(clips), np.nan, np.float32))
                fp32 = model.backbone(torch.from_numpy(clips)).numpy()
                q = np.concatenate([int8(clips[i:i + 1]) for i in range(len(clips))])
                cosines.extend((fp32 * q).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(q, axis=1) + 1e-12))
                out = {}
                for name, desc in (("fp32", fp32), ("int8", q)):
                    r, m = rings(desc, spec.ring_size)
                    logits, gates = model.head(torch.from_numpy(r), torch.from_numpy(m))
                    out[name] = (logits.numpy(), gates.numpy(), m)
                (lf, gf, mask), (lq, gq, _) = out["fp32"], out["int8"]
                margins = top2_margin(lf)  # the gate's own near-tie measure
                per_video.append(lf.argmax(1) == lq.argmax(1))
                for k in range(len(lf)):
                    selected = [tuple((g[k] >= spec.select_ratio * g[k].max()) & (mask[k] > 0)) for g in (gf, gq)]
                    top_gate = [float((g[k] * mask[k]).max()) for g in (gf, gq)]
                    rows.append((lf[k].argmax() == lq[k].argmax(), margins[k], int(mask[k].sum()),
                                 selected[0] == selected[1], action[k], *top_gate,
                                 int(lf[k].argmax()), int(lq[k].argmax())))
    if not rows:
        raise SystemExit(f"no clips in {args.videos}: pass a directory of .mp4 videos longer than one clip "
                         "(gcf-trt make-videos writes one)")
    agree, margin, fill, same_selection, action, gate_fp32, gate_int8, top_fp32, top_int8 = \
        (np.array(c) for c in zip(*rows))
    flips = ~agree.astype(bool)
    print(f"{len(rows)} ring predictions, {args.runtime} INT8 top-1 agreement {agree.mean():.4f} ({int(flips.sum())} flips)")
    clustered = clustered_interval(per_video)
    if clustered:  # the gate's interval with the video as the unit (its rings share clips)
        print(f"95% interval by video {clustered[0]:.4f}-{clustered[1]:.4f}, as {clustered[2]:.0f} independent "
              f"predictions of {len(per_video)} videos; most flips in one video: {max(int((~g).sum()) for g in per_video)}")
    print(f"descriptor cosine INT8 vs FP32: mean {np.mean(cosines):.4f}, min {np.min(cosines):.4f} ({len(cosines)} clips)")
    print(f"clip selection changed: {np.mean(~same_selection.astype(bool)):.3f} of all predictions, "
          f"{int((~same_selection.astype(bool))[flips].sum())} of the flips")
    print("flips by ring fill:", np.bincount(fill[flips], minlength=spec.ring_size + 1)[1:].tolist())
    edges = (0.0, 0.05, 0.1, NEAR_TIE_MARGIN, 0.3, 0.5, 1.01)
    print("FP32 top-2 probability margin | share of predictions | flips | flip rate")
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (margin >= lo) & (margin < hi)
        n = int(inside.sum())
        print(f"  [{lo:.2f}, {min(hi, 1):.2f}) | {n / len(rows):.3f} | {int(flips[inside].sum())} | "
              f"{(flips[inside].mean() if n else 0):.2f}")
    if np.isnan(action).all():
        return
    print("action in the ring | share of predictions | flips | FP32 near-ties")
    for name, inside in (("none", action == 0), ("under 1 clip", (action > 0) & (action < 1)),
                         ("1 clip or more", action >= 1)):
        print(f"  {name} | {inside.mean():.3f} | {int(flips[inside].sum())} | "
              f"{int((margin[inside] < NEAR_TIE_MARGIN).sum())}")
    print("what-if: abstain when the ring's largest gate is under tau (FP32 and INT8 decide alike)")
    for tau in (0.3, RELEVANT_GATE):  # the gate's own "no relevant clip" threshold, and a lower one
        d32, d8 = np.where(gate_fp32 >= tau, top_fp32, -1), np.where(gate_int8 >= tau, top_int8, -1)
        print(f"  tau {tau}: decision agreement {np.mean(d32 == d8):.4f}; FP32 abstains on "
              f"{np.mean(d32[action == 0] < 0):.2f} of the rings without action, "
              f"{np.mean(d32[action >= 1] < 0):.2f} of those with 1 clip of it or more")


if __name__ == "__main__":
    main()
