"""Mixed precision for INT8: rank the backbone's convs by sensitivity, keep the top k in FP32,
and measure what that buys in agreement and costs in speed.

Sensitivity is measured on the calibration clips only (never the evaluation videos): for each
quantized conv, the graph is quantized with that conv kept FP32 as well as the stem, and the
mean relative descriptor error against FP32 on the calibration clips is compared with the
all-INT8 graph's.  The convs whose exclusion lowers the error most are kept FP32 first.  Each k
is then measured with the product's own agreement function (every ring a stream presents, the
same FP32 head) on each evaluation set, on ONNX Runtime and OpenVINO, with the INT8 backbone's
median time per clip beside it.  Behind docs/INT8.md ("Mixed precision").

    python benchmarks/int8_mixed.py --checkpoint CKPT --calib CAL_DIR --videos EVAL_DIR [EVAL_DIR2 ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from gcf_trt.compile.agreement import agreement
from gcf_trt.compile.export import export_backbone
from gcf_trt.compile.model import load_checkpoint
from gcf_trt.compile.precision import quantize_int8, stem_conv_names
from gcf_trt.data import read_video
from gcf_trt.preprocess import clips_from_frames
from int8_flips import int8_runner as runner  # benchmarks/ is on sys.path when run as a script


def per_clip(fn, clips: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(clips[i:i + 1]) for i in range(len(clips))])


def relative_error(q: np.ndarray, f: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(q - f, axis=1) / (np.linalg.norm(f, axis=1) + 1e-12)))


def median_ms(fn, clip: np.ndarray, n: int = 40) -> float:
    fn(clip)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(clip)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--calib", required=True, help="calibration videos (sensitivity is ranked on these)")
    ap.add_argument("--videos", nargs="+", required=True, help="evaluation video directories")
    ap.add_argument("--ks", default="0,1,2,3,4,6", help="numbers of convs kept FP32 besides the stem")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_checkpoint(args.checkpoint).eval()
    spec = model.spec

    def head(desc, mask):
        with torch.no_grad():
            logits, gates = model.head(torch.from_numpy(desc), torch.from_numpy(mask))
        return logits.numpy(), gates.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32_path = work / "backbone.onnx"
        export_backbone(model, fp32_path)
        graph = onnx.load(str(fp32_path))
        stem = stem_conv_names(graph)
        convs = [n.name for n in graph.graph.node if n.op_type == "Conv" and n.name not in stem]
        calib = np.concatenate([clips_from_frames(read_video(p), spec)[0] for p in sorted(Path(args.calib).glob("*.mp4"))[:16]])
        calib = calib[np.random.default_rng(0).permutation(len(calib))[:64]]
        fp32 = runner(fp32_path, "onnxruntime")
        f_cal = per_clip(fp32, calib)

        def quantized(keep: list[str], name: str) -> Path:
            out = work / f"{name}.onnx"
            quantize_int8(fp32_path, out, calib, exclude_nodes=stem + keep)
            return out
        base = relative_error(per_clip(runner(quantized([], "all"), "onnxruntime"), calib), f_cal)
        print(f"{len(convs)} quantized convs besides the stem {stem}; all-INT8 descriptor error on calibration clips {base:.4f}")
        gains = {}
        for c in convs:
            err = relative_error(per_clip(runner(quantized([c], "one"), "onnxruntime"), calib), f_cal)
            gains[c] = base - err
            print(f"  keep {c} FP32: error {err:.4f} (gain {base - err:+.4f})", flush=True)
        ranked = sorted(convs, key=lambda c: -gains[c])
        print("ranked:", ranked)
        eval_sets = []
        for d in args.videos:
            groups = [clips_from_frames(read_video(p), spec)[0] for p in sorted(Path(d).glob("*.mp4"))]
            eval_sets.append((Path(d).name, [g for g in groups if len(g)]))
        clip = eval_sets[0][1][0][:1]
        print("k | kept FP32 | " + " | ".join(f"{name} {rt}" for name, _ in eval_sets for rt in ("ORT", "OV"))
              + " | ORT ms (FP32) | OV ms (FP32)")
        times_fp32 = {rt: median_ms(runner(fp32_path, rt), clip) for rt in ("onnxruntime", "openvino")}
        for k in (int(x) for x in args.ks.split(",")):
            path = quantized(ranked[:k], f"k{k}")
            row = []
            for _, groups in eval_sets:
                for rt in ("onnxruntime", "openvino"):
                    r = agreement(fp32, runner(path, rt), groups, head, ring_size=spec.ring_size)
                    row.append(f"{100 * r['top1_agreement']:.1f} ({r['num_disagreements']}; dec {100 * r['decision_agreement']:.1f})")
            ms = [f"{median_ms(runner(path, rt), clip):.2f} ({times_fp32[rt]:.2f})" for rt in ("onnxruntime", "openvino")]
            print(f"{k} | {', '.join(ranked[:k]) or '-'} | " + " | ".join(row) + " | " + " | ".join(ms), flush=True)


if __name__ == "__main__":
    main()
