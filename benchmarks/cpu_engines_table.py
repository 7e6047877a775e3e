"""CPU engines side by side: torch eager FP32 vs ONNX Runtime FP32/INT8 vs OpenVINO FP32/BF16/INT8.

Edge backbone at the default size (ModelSpec defaults: edge3d width 32, 16x112x112), random
weights (speed does not depend on the weights; agreement figures of a random model are *not*
representative of a trained one).  Every engine runs batch 1 on the same clip, interleaved round
robin in one process, so load from other jobs on a shared machine hits all of them alike: read
the ratios, not the absolute milliseconds.

    python benchmarks/cpu_engines_table.py [--rounds 30] [--threads N] [--json out.json]

Writes a Markdown table to stdout (and JSON with --json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def stem_profile(path: Path, stem: str, clip: np.ndarray, threads: int, runs: int = 10) -> dict[str, float]:
    """ORT per-node profile: mean microseconds of the stem's first conv and of the whole graph."""
    import onnxruntime as ort

    from gcf_trt.runtime.backends.onnxrt import session_options
    opts = session_options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, {"clip": clip})
    events = json.loads(Path(sess.end_profiling()).read_text())
    node = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    stem_ev = [e for e in node if e["name"].startswith(stem)]
    op = stem_ev[0]["args"].get("op_name", "?") if stem_ev else "?"
    return {"stem_op": op, "stem_us": sum(e["dur"] for e in stem_ev) / runs,
            "all_nodes_us": sum(e["dur"] for e in node) / runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all cores)")
    ap.add_argument("--calib-clips", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from gcf_trt.bench.fixtures import labelled_videos
    from gcf_trt.compile.export import export_backbone, export_head
    from gcf_trt.compile.model import GCFNet
    from gcf_trt.compile.agreement import agreement
    from gcf_trt.compile.calibration import calibration_clips, split_holdout
    from gcf_trt.compile.precision import quantize_int8
    from gcf_trt.runtime.backends import available_runtimes, open_backend

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GCFNet.from_spec_args().eval()  # ModelSpec defaults
    spec = model.spec
    tmp = Path(tempfile.mkdtemp(prefix="gcf-cpu-table-"))
    print(f"# exporting and calibrating in {tmp}", file=sys.stderr)
    export_backbone(model, tmp / "backbone.onnx")
    export_head(model, tmp / "head.onnx")
    labelled_videos(tmp / "videos", 4, seed=9001)  # the product's procedural videos
    clips = calibration_clips(tmp / "videos", spec, max_clips=args.calib_clips + 4)
    calib, held = split_holdout(clips, holdout=4 / len(clips))
    q_info = quantize_int8(tmp / "backbone.onnx", tmp / "int8.onnx", calib)
    quantize_int8(tmp / "backbone.onnx", tmp / "int8_stem.onnx", calib, exclude_nodes=[])

    engines: dict[str, object] = {}
    with torch.no_grad():
        engines["torch eager fp32"] = lambda x: model.backbone(torch.from_numpy(x)).numpy()
    engines["onnxruntime fp32"] = open_backend("onnxruntime", tmp / "backbone.onnx", {"threads": threads})
    engines["onnxruntime int8 (stem fp32)"] = open_backend("onnxruntime", tmp / "int8.onnx", {"threads": threads})
    engines["onnxruntime int8 (stem int8 too)"] = open_backend("onnxruntime", tmp / "int8_stem.onnx",
                                                               {"threads": threads})
    if available_runtimes()["openvino"] is None:
        from gcf_trt.runtime.backends.openvino import supports_bf16
        ov = {"threads": threads}
        engines["openvino fp32"] = open_backend("openvino", tmp / "backbone.onnx", {**ov, "inference_precision": "f32"})
        if supports_bf16():
            engines["openvino bf16"] = open_backend("openvino", tmp / "backbone.onnx",
                                                    {**ov, "inference_precision": "bf16"})
        engines["openvino int8 (stem fp32)"] = open_backend("openvino", tmp / "int8.onnx", ov)

    def run(engine, x):
        if hasattr(engine, "infer"):
            return engine.infer({"clip": x})["descriptor"]
        with torch.no_grad():
            return engine(x)

    clip = np.ascontiguousarray(held[:1])
    times: dict[str, list[float]] = {name: [] for name in engines}
    for name, engine in engines.items():
        for _ in range(args.warmup):
            run(engine, clip)
    for _ in range(args.rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            run(engine, clip)
            times[name].append((time.perf_counter() - t0) * 1e3)

    stem = q_info["excluded_nodes"][0]
    prof_fp32 = stem_profile(tmp / "backbone.onnx", stem, clip, threads)
    prof_int8 = stem_profile(tmp / "int8_stem.onnx", stem, clip, threads)

    head = open_backend("onnxruntime", tmp / "head.onnx")
    ref = engines["onnxruntime fp32"]
    rows = []
    base = statistics.median(times["onnxruntime fp32"])
    for name, engine in engines.items():
        med = statistics.median(times[name])
        agr = agreement(ref, (lambda x, e=engine: run(e, x)), held, head)
        precision = getattr(engine, "precision", "fp32")
        rows.append({"engine": name, "reports": precision, "median_ms": round(med, 2),
                     "p90_ms": round(float(np.percentile(times[name], 90)), 2),
                     "vs_ort_fp32": round(base / med, 2), "cosine_min": round(agr["cosine_min"], 5),
                     "top1_agreement": agr["top1_agreement"]})

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    print(f"Edge backbone ({spec.backbone}, width {spec.backbone_args.get('width', 32)}, "
          f"{spec.clip_len}x{spec.size}x{spec.size}), batch 1, {threads} threads, {cpu}, "
          f"{args.rounds} interleaved rounds; random weights; INT8 calibrated on {len(calib)} clips of procedural videos, "
          f"kept FP32: {', '.join(q_info['excluded_nodes'])}; agreement on {len(held)} held-out clips.\n")
    print("| engine | runs in | median ms/clip | p90 ms | speed vs ORT FP32 | descriptor cosine min | top-1 agree |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['reports']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
              f"{r['vs_ort_fp32']:.2f}x | {r['cosine_min']:.4f} | {r['top1_agreement']:.0%} |")
    print(f"\nStem conv {stem} in ORT (profiled, mean of 10 runs): FP32 {prof_fp32['stem_op']} "
          f"{prof_fp32['stem_us'] / 1e3:.2f} ms ({prof_fp32['stem_us'] / prof_fp32['all_nodes_us']:.0%} of the graph) vs "
          f"INT8 {prof_int8['stem_op']} {prof_int8['stem_us'] / 1e3:.2f} ms "
          f"({prof_int8['stem_us'] / prof_int8['all_nodes_us']:.0%} of the graph): "
          f"{prof_int8['stem_us'] / max(prof_fp32['stem_us'], 1e-9):.1f}x slower quantized.")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "threads": threads, "rounds": args.rounds,
                                               "cpu": cpu, "stem_profile": {"fp32": prof_fp32, "int8": prof_int8},
                                               "quantization": q_info}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
