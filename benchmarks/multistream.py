#!/usr/bin/env python3
"""Multi-stream throughput and latency: 1, 2, 4, 8 streams, backbone batching on and off.

For each stream count K, K synthetic streams (a square drifting over noise, different per
stream; decoding excluded, preprocessing included) are pushed round-robin, as fast as possible,
into one :class:`~gcf_trt.runtime.multistream.MultiStreamClassifier`:

* batching on:  ``max_batch = min(K, --max-batch)``, ``flush_timeout_ms = --timeout-ms``
  (clips completing together across streams share one backbone call);
* batching off: ``flush_timeout_ms = 0`` (every clip is its own backbone call).

Reported per configuration: throughput (clips/s over the whole push loop), latency percentiles
of ``latency_ms["total"]`` (push time of the clip's frames + wait for the batch + backbone +
head) and of ``queue+backbone+head`` (clip complete -> prediction), mean backbone batch.
``multistream_batching_gain_4`` = throughput with batching / without, at 4 streams.

    python benchmarks/multistream.py --quick            # tiny model, seconds
    python benchmarks/multistream.py --engines engines/ # your engines

Without ``--engines`` a model is built into a temporary directory (needs the torch extra):
``--quick`` the bench's quick model (gcf_trt.bench.fixtures.QUICK_SPEC), otherwise the default edge3d spec (16x112x112 clips).
Writes benchmarks/results/multistream.json (or ``--out``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gcf_trt.bench.fixtures import CameraFrames, random_engines  # noqa: E402
from gcf_trt.manifest import write_json_atomic  # noqa: E402
from gcf_trt.runtime.engines import load_engines  # noqa: E402
from gcf_trt.runtime.multistream import MultiStreamClassifier  # noqa: E402

FRAME_SIZE = (96, 72)


def synthetic_frames(stream: int, count: int, size=FRAME_SIZE) -> list[np.ndarray]:
    """The bench's camera-like frames, different per stream."""
    return list(CameraFrames(count / 30.0, size=size, seed=stream))


def run_once(engines, frames: dict[int, list[np.ndarray]], batching: bool, max_batch: int, timeout_ms: float) -> dict:
    k = len(frames)
    multi = MultiStreamClassifier(engines, max_batch=min(k, max_batch) if batching else 1,
                                  flush_timeout_ms=timeout_ms if batching else 0.0)
    for sid in frames:
        multi.add_stream(sid)
    predictions = []
    t0 = time.perf_counter()
    length = max(len(f) for f in frames.values())
    for i in range(length):
        for sid, fr in frames.items():
            if i < len(fr):
                predictions += multi.push(sid, fr[i])
        predictions += multi.poll()
    predictions += multi.flush()
    seconds = time.perf_counter() - t0
    stats = multi.stats
    multi.close()
    total = [p.latency_ms["total"] for p in predictions]
    ready = [p.latency_ms["queue"] + p.latency_ms["backbone"] + p.latency_ms["head"] for p in predictions]
    return {"clips": len(predictions), "seconds": seconds, "clips_per_s": len(predictions) / seconds,
            "latency_total_ms": total, "latency_ready_ms": ready, "mean_batch": stats.mean_batch,
            "backbone_calls": stats.backbone_calls, "head_calls": stats.head_calls}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=None, help="engines directory (default: build one, needs torch)")
    parser.add_argument("--quick", action="store_true", help="tiny model, few clips: runs in seconds")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--clips", type=int, default=None, help="clips per stream (default 12 quick, 4 full)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration; the median is kept")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--timeout-ms", type=float, default=50.0, help="flush timeout with batching on")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the backend (default 1)")
    parser.add_argument("--runtime", default=None, help="force a runtime (onnxruntime, openvino)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multistream.json"))
    args = parser.parse_args(argv)
    clips_per_stream = args.clips or (12 if args.quick else 4)
    repeats = args.repeats or (3 if args.quick else 2)

    tmp = None
    engines_dir = args.engines
    if engines_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gcf-bench-")
        print("building engines (torch) ...", flush=True)
        engines_dir = random_engines(Path(tmp.name), quick=args.quick)
    engines = load_engines(engines_dir, runtime=args.runtime, options={"threads": args.threads})
    spec = engines.spec
    frames_per_stream = ((clips_per_stream - 1) * spec.stride + spec.clip_len) * spec.frame_step
    results = []
    try:
        warm = {0: synthetic_frames(0, spec.frames_per_clip * 2)}
        run_once(engines, warm, True, args.max_batch, args.timeout_ms)
        for k in args.streams:
            frames = {s: synthetic_frames(s, frames_per_stream) for s in range(k)}
            for batching in (True, False):
                runs = [run_once(engines, frames, batching, args.max_batch, args.timeout_ms) for _ in range(repeats)]
                best = sorted(runs, key=lambda r: r["clips_per_s"])[len(runs) // 2]  # the median run
                row = {"streams": k, "batching": batching,
                       "max_batch": min(k, args.max_batch) if batching else 1,
                       "flush_timeout_ms": args.timeout_ms if batching else 0.0,
                       "clips": best["clips"], "seconds": round(best["seconds"], 4),
                       "clips_per_s": round(best["clips_per_s"], 2),
                       "clips_per_s_runs": [round(r["clips_per_s"], 2) for r in runs],
                       "latency_ms": {"p50": round(pct(best["latency_total_ms"], 50), 3),
                                      "p99": round(pct(best["latency_total_ms"], 99), 3)},
                       "ready_latency_ms": {"p50": round(pct(best["latency_ready_ms"], 50), 3),
                                            "p99": round(pct(best["latency_ready_ms"], 99), 3)},
                       "mean_batch": round(best["mean_batch"], 3), "backbone_calls": best["backbone_calls"],
                       "head_calls": best["head_calls"]}
                results.append(row)
                print(f"streams={k} batching={'on ' if batching else 'off'} {row['clips_per_s']:8.1f} clips/s  "
                      f"p99 {row['latency_ms']['p99']:8.2f} ms  mean batch {row['mean_batch']:.2f}", flush=True)
    finally:
        engines.close()
        if tmp is not None:
            tmp.cleanup()

    def throughput(k: int, on: bool) -> float | None:
        return next((r["clips_per_s"] for r in results if r["streams"] == k and r["batching"] == on), None)

    gains = {k: round(throughput(k, True) / throughput(k, False), 3)
             for k in args.streams if throughput(k, True) and throughput(k, False)}
    report = {
        "benchmark": "multistream", "quick": args.quick,
        "engines": str(args.engines) if args.engines else ("built: the bench's quick model" if args.quick else "built: default edge3d"),
        "runtime": engines.backbone.runtime, "threads": args.threads,
        "spec": {k: getattr(spec, k) for k in ("backbone", "backbone_args", "clip_len", "stride", "size", "ring_size", "dim")},
        "clips_per_stream": clips_per_stream, "repeats": repeats, "timeout_ms": args.timeout_ms,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "note": "shared machine: other jobs may run at the same time"},
        "results": results,
        "batching_gain": {str(k): v for k, v in gains.items()},
        "multistream_batching_gain_4": gains.get(4),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    print(f"multistream_batching_gain_4 = {gains.get(4)}  (wrote {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
