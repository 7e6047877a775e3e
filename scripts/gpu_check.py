"""The TensorRT check for a machine with an NVIDIA GPU: one command, one JSON file.

    bash scripts/gpu_check.sh [--out gpu_check.json] [--from CPU_ENGINES_DIR] [--work DIR]

What it does, with the library's own API (nothing here is specific to one GPU or TensorRT):

1. CPU engines of the bundled demo model (``gcf-trt build --target cpu --precision int8``,
   calibrated on generated videos), which also writes the TensorRT Q/DQ backbone.  Needs torch;
   on a Jetson without torch pass ``--from DIR``: such a directory built on any machine.
2. TensorRT FP16 and INT8 plans built *from that directory* (``--target trt --from DIR``, the
   Jetson workflow), each verified by the build against ONNX Runtime FP32 (max diff, and top-1
   agreement on held-out clips of videos not calibrated on).
3. A generated video streamed through the CPU FP32 reference, the CPU engine the build chose, and
   both TensorRT builds: per-prediction top-1 agreement and max |logit diff| against FP32.
4. Backbone latency at batch 1 (median/p90 of interleaved runs) of the CPU engine and of TensorRT
   FP16 / INT8, with and without CUDA graph replay.

Every step records its result or its error; the JSON is written (atomically) in any case and the
exit code is 0 only when every step passed.  Runs unchanged with TensorRT 8.6/10 (Jetson) and
10/11 (datacenter): the version branches are in gcf_trt, not here.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _step(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    print(f"== {name}", flush=True)
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the next steps still run
        from gcf_trt.errors import GcfError
        results[name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 2),
                         "error": f"{type(exc).__name__}: {getattr(exc, 'message', exc)}",
                         "hint": getattr(exc, "hint", None),
                         "traceback": None if isinstance(exc, GcfError) else traceback.format_exc()}
        print(f"   FAILED: {results[name]['error']}", flush=True)
        return None
    results[name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2), **value}
    print(f"   ok ({results[name]['seconds']} s)", flush=True)
    return value


def _environment() -> dict[str, Any]:
    import gcf_trt
    from gcf_trt.runtime.backends import tensorrt as trt_backend
    env: dict[str, Any] = {"gcf_trt": gcf_trt.__version__, "python": platform.python_version(),
                           "machine": platform.machine(), "platform": platform.platform(),
                           "cuda_python": trt_backend.cuda_python_version()}
    trt = trt_backend.import_tensorrt()
    cudart = trt_backend.import_cudart()
    env["tensorrt"] = trt.__version__
    env["gpu"] = trt_backend.runtime_identity(trt, cudart)
    env["driver_cuda"] = trt_backend.driver_cuda_version(cudart)
    jetson = Path("/etc/nv_tegra_release")
    env["jetson"] = jetson.read_text().strip() if jetson.is_file() else None
    return env


def _cpu_build(work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import CalibrationOptions, GateOptions
    from gcf_trt.data import make_videos
    from gcf_trt.demo import bundled_checkpoint
    calib = work / "calib"
    make_videos(calib, 24, seed=10_000)
    # The gate is recorded, not enforced (min_agreement 0): this check measures the engines.
    res = build_engines(bundled_checkpoint(), work / "cpu", target="cpu", precision="int8", calib=calib,
                        calibration=CalibrationOptions(gate_predictions=48), gate=GateOptions(min_agreement=0.0),
                        progress=say)
    return {"dir": str(res.out), "summary": res.summary, "calib": str(calib)}


def _trt_build(cpu_dir: Path, calib: Path | None, out: Path, precision: str,
               say: Callable[[str], None]) -> dict[str, Any]:
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import CalibrationOptions, GateOptions, TensorRTOptions
    res = build_engines(None, out, target="trt", from_dir=cpu_dir, precision=precision, calib=calib,
                        calibration=CalibrationOptions(gate_predictions=48), gate=GateOptions(min_agreement=0.0),
                        tensorrt=TensorRTOptions(max_batch=8), progress=say)
    return {"dir": str(res.out), "summary": res.summary, "verification": res.manifest.get("agreement"),
            "tensorrt": {k: res.manifest["tensorrt"][k] for k in ("version", "gpu", "sm")}}


def _fp32_reference(cpu_dir: Path):
    from gcf_trt.manifest import read_manifest
    from gcf_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    from gcf_trt.runtime.engines import Engines
    manifest = read_manifest(cpu_dir)
    return Engines(cpu_dir, manifest.spec, manifest, OnnxRuntimeBackend(cpu_dir / "backbone.onnx"),
                   OnnxRuntimeBackend(cpu_dir / "head.onnx"))


def _stream(cpu_dir: Path, trt_dirs: dict[str, Path]) -> dict[str, Any]:
    from gcf_trt.data import plan_video, render_video
    from gcf_trt.runtime.stream import StreamingClassifier
    frames = list(render_video(plan_video(7, 0)))
    with StreamingClassifier(_fp32_reference(cpu_dir)) as ref_clf:
        ref = ref_clf.run_frames(frames)
    out: dict[str, Any] = {"frames": len(frames), "predictions": len(ref)}
    for name, engines in {"cpu_chosen": cpu_dir, **trt_dirs}.items():
        with StreamingClassifier(engines) as clf:
            got = clf.run_frames(frames)
            backbone = f"{clf.engines.backbone.runtime} {clf.engines.backbone.precision}"
        same = [a.label == b.label for a, b in zip(ref, got)]
        out[name] = {"engine": backbone, "predictions": len(got),
                     "top1_agreement": float(np.mean(same)) if same else None,
                     "max_abs_logit_diff": max(float(np.abs(a.logits - b.logits).max()) for a, b in zip(ref, got))
                     if got else None}
    return out


def _timing(cpu_dir: Path, trt_dirs: dict[str, Path], rounds: int = 200) -> dict[str, Any]:
    from gcf_trt.runtime.backends.tensorrt import TensorRTBackend
    from gcf_trt.runtime.engines import load_engines
    engines = {"cpu_chosen": load_engines(cpu_dir)}
    backends: dict[str, Any] = {"cpu_chosen": engines["cpu_chosen"].backbone}
    for name, d in trt_dirs.items():
        engines[name] = load_engines(d)
        backends[name] = engines[name].backbone
        comp = engines[name].manifest.component("backbone")
        backends[f"{name}_cuda_graph"] = TensorRTBackend(d / comp["file"], **{**comp["options"], "cuda_graph": True})
    spec = engines["cpu_chosen"].spec
    clip = np.random.default_rng(0).standard_normal((1, *spec.clip_shape)).astype(np.float32)
    times: dict[str, list[float]] = {k: [] for k in backends}
    try:
        for b in backends.values():
            for _ in range(10):
                b.infer({"clip": clip})
        for _ in range(rounds):  # interleaved: a burst of load hits every engine alike
            for k, b in backends.items():
                t0 = time.perf_counter()
                b.infer({"clip": clip})
                times[k].append((time.perf_counter() - t0) * 1e3)
    finally:
        for k, b in backends.items():
            if k.endswith("_cuda_graph"):
                b.close()
        for e in engines.values():
            e.close()
    ms = {k: {"median": round(float(np.median(v)), 4), "p90": round(float(np.percentile(v, 90)), 4)}
          for k, v in times.items()}
    cpu = ms["cpu_chosen"]["median"]
    return {"batch": 1, "rounds": rounds, "backbone_ms": ms,
            "speedup_vs_cpu_engine": {k: round(cpu / v["median"], 2) for k, v in ms.items() if k != "cpu_chosen"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="the JSON report (default: gpu_check.json)")
    p.add_argument("--from", dest="from_dir", default=None,
                   help="CPU engines directory of the demo model built elsewhere (no torch needed here)")
    p.add_argument("--calib", default=None, help="with --from: videos for the held-out agreement check")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gcf-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(f"   ... {msg}", flush=True)

    results: dict[str, Any] = {"format": "gcf-trt-gpu-check", "version": 1, "work": str(work),
                               "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    steps: dict[str, Any] = {}
    results["steps"] = steps
    env = _step(steps, "environment", _environment)
    cpu_dir: Path | None = None
    calib = Path(args.calib) if args.calib else None
    if env is not None:
        if args.from_dir:
            cpu_dir = Path(args.from_dir)
        else:
            built = _step(steps, "cpu_build", lambda: _cpu_build(work, say))
            if built:
                cpu_dir, calib = Path(built["dir"]), Path(built["calib"])
    trt_dirs: dict[str, Path] = {}
    if cpu_dir is not None:
        for precision in ("fp16", "int8"):
            done = _step(steps, f"trt_{precision}",
                         lambda precision=precision: _trt_build(cpu_dir, calib, work / f"trt_{precision}", precision, say))
            if done:
                trt_dirs[f"trt_{precision}"] = Path(done["dir"])
    if cpu_dir is not None and trt_dirs:
        _step(steps, "stream", lambda: _stream(cpu_dir, trt_dirs))
        _step(steps, "timing", lambda: _timing(cpu_dir, trt_dirs))
    results["ok"] = bool(steps) and all(s.get("ok") for s in steps.values()) and len(trt_dirs) == 2

    from gcf_trt.fsutil import atomic_file
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {out}: {'all steps passed' if results['ok'] else 'FAILED: see steps in the JSON'}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
