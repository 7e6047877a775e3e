"""Where INT8 top-1 flips happen: the FP32 prediction's margin, the ring fill, the clip selection.

The product's recipe (``quantize_int8``, 64 calibration clips) on the checkpoint's backbone, the
real INT8 graph on ONNX Runtime or OpenVINO, every ring prediction of the evaluation videos
against FP32 (the same FP32 head).  Behind docs/INT8.md ("Why PTQ and QAT stop near 97-98 %").

    python benchmarks/int8_flips.py --checkpoint gcf_trt/assets/demo.pt --calib CAL_DIR --videos EVAL_DIR
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from gcf_trt.compile.agreement import NEAR_TIE_MARGIN, rings, top2_margin
from gcf_trt.compile.export import export_backbone
from gcf_trt.compile.model import load_checkpoint
from gcf_trt.compile.precision import quantize_int8
from gcf_trt.data import read_video
from gcf_trt.preprocess import clips_from_frames


def int8_runner(path: Path, runtime: str):
    if runtime == "openvino":
        import openvino as ov
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: compiled([x])[0]
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"clip": x})[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--calib", required=True, help="calibration videos")
    ap.add_argument("--videos", required=True, help="evaluation videos (not the calibration ones)")
    ap.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_checkpoint(args.checkpoint).eval()
    spec = model.spec
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_backbone(model, work / "backbone.onnx")
        calib = np.concatenate([clips_from_frames(read_video(p), spec)[0] for p in sorted(Path(args.calib).glob("*.mp4"))[:16]])
        calib = calib[np.random.default_rng(0).permutation(len(calib))[:64]]
        quantize_int8(work / "backbone.onnx", work / "int8.onnx", calib)
        int8 = int8_runner(work / "int8.onnx", args.runtime)
        rows = []
        with torch.no_grad():
            for path in sorted(Path(args.videos).glob("*.mp4")):
                clips = clips_from_frames(read_video(path), spec)[0]
                if not len(clips):
                    continue
                fp32 = model.backbone(torch.from_numpy(clips)).numpy()
                q = np.concatenate([int8(clips[i:i + 1]) for i in range(len(clips))])
                out = {}
                for name, desc in (("fp32", fp32), ("int8", q)):
                    r, m = rings(desc, spec.ring_size)
                    logits, gates = model.head(torch.from_numpy(r), torch.from_numpy(m))
                    out[name] = (logits.numpy(), gates.numpy(), m)
                (lf, gf, mask), (lq, gq, _) = out["fp32"], out["int8"]
                margins = top2_margin(lf)  # the gate's own near-tie measure
                for k in range(len(lf)):
                    selected = [tuple((g[k] >= spec.select_ratio * g[k].max()) & (mask[k] > 0)) for g in (gf, gq)]
                    rows.append((lf[k].argmax() == lq[k].argmax(), margins[k], int(mask[k].sum()),
                                 selected[0] == selected[1]))
    agree, margin, fill, same_selection = (np.array(c) for c in zip(*rows))
    flips = ~agree.astype(bool)
    print(f"{len(rows)} ring predictions, {args.runtime} INT8 top-1 agreement {agree.mean():.4f} ({int(flips.sum())} flips)")
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


if __name__ == "__main__":
    main()
