"""The headline figures, the targets and ``latest.md``; :func:`write_results` writes the files."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .config import SECTIONS
from .timing import error_text

# Targets of issues 13 and 14 on the benchmarked model: (key, description, op, threshold).
# Reported as PASS/MISS in latest.md; never asserted in tests.
TARGETS = [
    ("realtime_factor", "end to end on 30 fps 640x480 video (x real time)", ">=", 25.0),
    ("preprocess_share_of_wall", "preprocessing share of end-to-end wall time", "<=", 0.20),
    ("head_fraction_of_backbone", "head (N=8, as built) as a fraction of one backbone call", "<=", 0.01),
    ("streaming_vs_naive_ratio", "streaming step vs naive recompute of N=8 clips", ">=", 7.8),
    ("cold_start_s", "cold start, warm model cache: import + load + first prediction (s)", "<=", 0.5),
    ("cold_start_first_s", "cold start, first start (empty model cache) (s)", "<=", 1.0),
    ("runtime_rss_mb", "runtime process peak RSS (MB)", "<=", 200.0),
    ("multistream_gain_4", "4 streams: MultiStreamClassifier vs 4 separate classifiers (clips/s)", ">=", 1.5),
    ("e2e_vs_naive_torch_pipeline", "end to end vs the naive torch eager pipeline (fps)", ">=", 5.0),
    ("int8_top1_agreement", "INT8 top-1 agreement with FP32 (trained model)", ">=", 0.99),
    ("int8_vs_fp32_same_runtime", "INT8 vs FP32 speed on the same runtime", ">=", 1.3),
    ("cpu_engine_vs_torch_speedup", "chosen CPU engine vs torch eager FP32", ">=", 3.0),
    ("fp32_vs_torch_speedup", "FP32 CPU engine vs torch eager (not slower)", ">=", 1.0),
    ("run_seconds", "the whole full run of every section on this machine (s; issue 12)", "<=", 360.0),
]
# The figures copied to the top level of latest.json (null where not measurable; reason in notes).
HEADLINE_KEYS = tuple(k for k, *_ in TARGETS) + (
    "int8_top1_agreement_per_runtime", "int8_agreement_n", "int8_agreement_95ci",
    "int8_decision_agreement", "int8_decision_agreement_per_runtime", "int8_decision_agreement_95ci",
    "int8_vs_fp32_per_runtime", "int8_vs_torch_speedup", "cpu_engine_vs_best_ratio",
    "openvino_benchmark_app_clips_per_s", "openvino_benchmark_app_vs_runtime")


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _int8_engine(lat: dict[str, Any], p50: dict[str, float], notes: dict[str, str]) -> str | None:
    """The INT8 engine whose figures are reported: the CPU build's if INT8, else the fastest CPU INT8."""
    if lat.get("cpu_build", {}).get("precision") == "int8" and "cpu_build" in p50:
        return "cpu_build"
    int8 = {k: v for k, v in p50.items() if lat[k]["precision"] == "int8" and lat[k]["runtime"] != "tensorrt"}
    if not int8:
        return None
    name = min(int8, key=int8.get)
    notes["int8_engine"] = f"the CPU build did not choose INT8; INT8 figures are those of the fastest INT8 engine, {name}"
    return name


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures of issues 13/14, each a plain number (or None with a reason in ``notes``)."""
    h: dict[str, Any] = {}
    notes: dict[str, str] = {}
    lat = results.get("backbone") or {}
    p50 = {k: v["p50_ms"] for k, v in lat.items() if v.get("p50_ms")}
    torch_p50 = p50.get("torch_eager_fp32")
    stream = results.get("streaming") or {}
    h["streaming_vs_naive_ratio"] = stream.get("naive_sequential_over_streaming_p50")
    h["streaming_vs_naive_batched_ratio"] = stream.get("naive_batched_over_streaming_p50")
    heads = _get(results, "head", "heads") or {}
    n = _get(results, "model", "spec", "ring_size")
    built = next((v for v in heads.values() if v["ring_size"] == n and v.get("as_built")), None)
    h["head_fraction_of_backbone"] = built["fraction_of_backbone_p50"] if built else None
    if n != 8 and built:
        notes["head_fraction_of_backbone"] = f"this model's ring size is N={n}, not 8"
    same_n = [v for v in heads.values() if v["ring_size"] == n]
    if same_n:
        best = min(same_n, key=lambda v: v["fraction_of_backbone_p50"])
        h["head_fraction_of_backbone_best_config"] = best["fraction_of_backbone_p50"]
        h["head_best_config"] = best.get("variant")
    insitu = _get(stream, "head_in_situ", "streaming")
    if insitu and _get(stream, "streaming", "p50_ms"):
        # the head in a real step, over (step - head): the backbone call and ring push it follows
        h["head_fraction_in_streaming_step"] = insitu["p50_ms"] / max(1e-9, stream["streaming"]["p50_ms"] - insitu["p50_ms"])
    int8_name = _int8_engine(lat, p50, notes)
    h["int8_engine"] = int8_name
    h["int8_vs_torch_speedup"] = torch_p50 / p50[int8_name] if torch_p50 and int8_name else None
    per_rt = {}
    for rt in ("onnxruntime", "openvino"):
        if f"{rt}_fp32" in p50 and f"{rt}_int8" in p50:
            per_rt[rt] = p50[f"{rt}_fp32"] / p50[f"{rt}_int8"]
    h["int8_vs_fp32_per_runtime"] = per_rt or None
    int8_rt = lat[int8_name]["runtime"] if int8_name else None
    h["int8_vs_fp32_same_runtime"] = per_rt.get(int8_rt) if int8_rt else None
    h["fp32_vs_torch_speedup"] = torch_p50 / p50["fp32_build"] if torch_p50 and "fp32_build" in p50 else None
    h["cpu_engine"] = f"{lat['cpu_build']['runtime']} {lat['cpu_build']['precision']}" if "cpu_build" in p50 else None
    h["cpu_engine_vs_torch_speedup"] = torch_p50 / p50["cpu_build"] if torch_p50 and "cpu_build" in p50 else None
    if "cpu_build" in p50:
        best = min(p50, key=p50.get)
        h["best_engine"], h["cpu_engine_vs_best_ratio"] = best, p50["cpu_build"] / p50[best]
    else:
        h["cpu_engine_vs_best_ratio"] = None
        notes["cpu_engine_vs_best_ratio"] = f"the default CPU build was not timed: {_get(lat, 'cpu_build', 'unavailable')}"
    # INT8 agreement on the runtime of the INT8 engine whose speed is reported
    agr = results.get("agreement") or {}
    per = {k: v for k, v in (agr.get("per_runtime") or {}).items() if "top1_agreement" in v}
    h["int8_top1_agreement_per_runtime"] = {k: v["top1_agreement"] for k, v in per.items() if "bf16" not in k} or None
    chosen = per.get(int8_rt) or next((v for k, v in per.items() if "bf16" not in k), None)
    h["int8_top1_agreement"] = chosen["top1_agreement"] if chosen else None
    h["int8_agreement_n"] = chosen["num_predictions"] if chosen else None
    h["int8_agreement_95ci"] = chosen.get("top1_agreement_ci95") if chosen else None
    # The same with the video as the unit (a stream's consecutive rings share clips, so flips come in runs).
    h["int8_agreement_95ci_by_video"] = chosen.get("top1_agreement_ci95_by_video") if chosen else None
    # What the product outputs (the class, or no action: Prediction.action), reported beside the classes.
    h["int8_decision_agreement_per_runtime"] = {k: v["decision_agreement"] for k, v in per.items()
                                                if "bf16" not in k and "decision_agreement" in v} or None
    h["int8_decision_agreement"] = chosen.get("decision_agreement") if chosen else None
    h["int8_decision_agreement_95ci"] = chosen.get("decision_agreement_ci95") if chosen else None
    if agr.get("model", "").startswith("NOT"):
        notes["int8_top1_agreement"] = agr["model"]
    cold = results.get("cold_start") or {}
    h["runtime_rss_mb"] = cold.get("maxrss_mb")
    h["cold_start_s"] = cold.get("process_s")
    h["cold_start_first_s"] = cold.get("first_start_s")
    h["cold_start_in_process_s"] = cold.get("in_process_s")
    e2e = results.get("end_to_end") or {}
    h["realtime_factor"] = e2e.get("realtime_factor")
    h["end_to_end_fps"] = e2e.get("fps")
    h["preprocess_share_of_wall"] = e2e.get("preprocess_share_of_wall")
    h["e2e_vs_naive_torch_pipeline"] = e2e.get("e2e_vs_naive_torch_pipeline")
    h["multistream_gain_4"] = _get(results, "multistream", "multistream_gain_4")
    ov = results.get("openvino_benchmark") or {}
    app = _get(ov, "fp32_throughput_async", "clips_per_s")
    h["openvino_benchmark_app_clips_per_s"] = app
    ours = _get(lat, "fp32_build", "throughput_per_s")
    h["openvino_benchmark_app_vs_runtime"] = app / ours if app and ours else None
    roof = results.get("roofline") or {}
    h["backbone_gflops_per_clip"] = _get(roof, "cost", "gflops_per_clip")
    h["cpu_engine_fraction_of_peak"] = _get(roof, "points", "cpu_build", "fraction_of_peak")
    full = not results.get("quick") and set(results.get("section_seconds") or ()) >= set(SECTIONS)
    h["run_seconds"] = results.get("total_seconds") if full else None
    if not full:
        notes["run_seconds"] = "only a full run of every section is held to the run-time target"
    h["notes"] = notes
    return h


def evaluate_targets(h: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS / MISS / N/A per target, with the margin (how far past or short, relative to it)."""
    out = []
    for key, what, op, threshold in TARGETS:
        value = h.get(key)
        entry = {"key": key, "target": f"{op} {threshold:g}", "what": what, "value": value}
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            entry.update(status="N/A", margin=None)
        else:
            ok = value >= threshold if op == ">=" else value <= threshold
            margin = (value / threshold) if op == ">=" else (threshold / value if value else math.inf)
            entry.update(status="PASS" if ok else "MISS", margin=margin)
        out.append(entry)
    return out


def summary_lines(results: dict[str, Any], files: list[Path]) -> list[str]:
    """What ``gcf-trt bench`` prints at the end: one line per target, the files, the failures."""
    lines = [""]
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"{t['status']:4s}  {t['key']:30s} {value:>8s}  (target {t['target']})")
    lines.append(f"wrote {', '.join(str(f) for f in files)}")
    for name, v in (results.get("over_budget") or {}).items():
        lines.append(f"section {name} took {v['took_s']:.0f} s, over its budget of {v['budget_s']:.0f} s")
    if results.get("errors"):
        lines.append(f"sections with errors: {', '.join(results['errors'])} (details in latest.json 'errors')")
    return lines


# ----------------------------------------------------------------------------- files
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_results(results: dict[str, Any], out: str | os.PathLike, make_plots: bool = True) -> list[Path]:
    """Write ``latest.json``, ``latest.md`` and the PNG plots into ``out`` (each file atomically)."""
    from ..fsutil import atomic_file
    from ..manifest import write_json_atomic
    from .tables import markdown
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if make_plots:
        try:
            from .plots import plots
            written += plots(results, out)
        except Exception as exc:  # noqa: BLE001 - plots are a convenience; the data is the result
            results.setdefault("errors", {})["plots"] = {"error": error_text(exc)}
    results["files"] = [p.name for p in written]
    write_json_atomic(out / "latest.json", _jsonable(results))
    md = out / "latest.md"
    with atomic_file(md) as tmp:
        tmp.write_text(markdown(results))
    return [out / "latest.json", md, *written]


RESULTS_VERSION = 2  # the layout runner.run writes; version 1 was the single-module harness


def read_results(out: str | os.PathLike) -> dict[str, Any]:
    """``latest.json`` of a results directory (for re-rendering without measuring)."""
    from ..errors import InputError
    path = Path(out) / "latest.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="point at a directory written by gcf-trt bench") from exc
    if not isinstance(results, dict) or results.get("format") != "gcf-trt-bench" \
            or results.get("version") != RESULTS_VERSION:
        raise InputError(f"{path} is not a version {RESULTS_VERSION} gcf-trt bench result "
                         f"(version {results.get('version') if isinstance(results, dict) else None})",
                         hint="re-run gcf-trt bench to measure with this version")
    return results


def replot(out: str | os.PathLike) -> list[Path]:
    """Re-render ``latest.md`` and the plots of ``out`` from its ``latest.json`` (no measurement)."""
    return write_results(read_results(out), out)
