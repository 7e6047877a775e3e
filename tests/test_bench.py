"""The benchmark harness works: structure and sanity of its results, never speed.

One quick run on the tiny model (module fixture) feeds most tests; the helpers are tested
directly.  Nothing here asserts a latency, a ratio threshold or a target.
"""
from __future__ import annotations

import json
import math
import time

import pytest

pytest.importorskip("torch")

from gcf_trt import bench  # noqa: E402

REQUIRED_KEYS = ("streaming_vs_naive_ratio", "head_fraction_of_backbone", "int8_vs_torch_speedup",
                 "fp32_vs_torch_speedup", "int8_top1_agreement", "runtime_rss_mb", "cold_start_s",
                 "realtime_factor", "cpu_engine_vs_best_ratio")
assert set(REQUIRED_KEYS) <= set(bench.HEADLINE_KEYS)


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_summarize_statistics():
    s = bench.summarize([0.001, 0.002, 0.003, 0.004])
    assert s["count"] == 4
    assert s["min_ms"] == pytest.approx(1.0) and s["max_ms"] == pytest.approx(4.0)
    assert s["p50_ms"] == pytest.approx(2.5) and s["mean_ms"] == pytest.approx(2.5)
    assert s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["throughput_per_s"] == pytest.approx(400.0)
    assert bench.summarize([]) == {"count": 0}


def test_interleaved_round_robin_rotates_and_counts():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = bench.interleaved(fns, warmup=1, iters=4)
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}
    rounds = [calls[i:i + 3] for i in range(3, len(calls), 3)]  # after the warm-up round
    assert [r[0] for r in rounds] == ["a", "b", "c", "a"]       # start rotates every round
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)    # each round calls everyone once
    assert all(t >= 0 for v in samples.values() for t in v)


def test_interleaved_duration_stops_with_minimum_rounds():
    samples = bench.interleaved({"sleep": lambda: time.sleep(0.002)}, warmup=0, duration=0.01, min_iters=3)
    assert len(samples["sleep"]) >= 3
    with pytest.raises(ValueError):
        bench.interleaved({"x": lambda: None})


def test_targets_report_pass_miss_and_missing():
    h = {"streaming_vs_naive_ratio": 7.5, "head_fraction_of_backbone": 0.02, "realtime_factor": None}
    rows = {t["key"]: t for t in bench.evaluate_targets(h)}
    assert rows["streaming_vs_naive_ratio"]["status"] == "PASS"
    assert rows["head_fraction_of_backbone"]["status"] == "MISS"
    assert rows["head_fraction_of_backbone"]["margin"] == pytest.approx(0.5)
    assert rows["realtime_factor"]["status"] == "N/A"


def test_missing_backends_are_recorded_not_raised(monkeypatch, tmp_path):
    import gcf_trt.runtime.backends as backends
    monkeypatch.setattr(backends, "available_runtimes",
                        lambda: {"onnxruntime": None, "openvino": "OpenVINO cannot be imported: test",
                                 "tensorrt": "TensorRT is not installed"})
    cands = {c.name: c for c in bench.backbone_candidates(tmp_path / "backbone.onnx", None, "no int8 build")}
    assert cands["onnxruntime_fp32"].unavailable is None
    assert "no INT8 backbone file" in cands["onnxruntime_int8"].unavailable
    for name in ("openvino_fp32", "openvino_bf16", "openvino_int8"):
        assert "OpenVINO cannot be imported" in cands[name].unavailable
    assert cands["tensorrt_fp16"].unavailable and cands["tensorrt_int8"].unavailable


def test_a_backend_that_fails_to_load_becomes_unavailable(tmp_path):
    from gcf_trt.spec import ModelSpec
    bad = tmp_path / "backbone.onnx"
    bad.write_bytes(b"not an onnx file")
    cands = [bench.Candidate("onnxruntime_fp32", "onnxruntime", "fp32", bad)]
    fns = bench.open_candidates(cands, ModelSpec(), lambda: None, say=lambda m: None)
    assert fns == {}
    assert cands[0].unavailable.startswith("failed to load/run")


def test_cli_registers_bench():
    from gcf_trt.cli import _parser
    args = _parser("bench").parse_args(["bench", "--quick", "--sections", "backbone,head", "--no-plots"])
    assert args.quick and args.no_plots and args.func is not None


def test_cli_rejects_unknown_section(capsys):
    from gcf_trt.cli import main
    assert main(["bench", "--quick", "--sections", "nope"]) == 1
    assert "unknown section" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one quick run
@pytest.fixture(scope="module")
def quick_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    config = bench.Config(quick=True, out=out, work=tmp_path_factory.mktemp("bench_work"),
                          checkpoint=tiny_checkpoint, demo_checkpoint=None)
    results = bench.run(config, say=lambda m: None)
    files = bench.write_results(results, out)
    return results, out, files


def test_quick_run_writes_every_file(quick_run):
    results, out, files = quick_run
    names = {f.name for f in files}
    assert {"latest.json", "latest.md"} <= names
    assert {"latency_distribution.png", "stage_breakdown.png", "roofline.png"} <= names
    for f in files:
        assert f.is_file() and f.stat().st_size > 0
    assert not results.get("errors"), results.get("errors")


def test_quick_run_headline_keys_are_positive_finite_numbers(quick_run):
    _, out, _ = quick_run
    data = json.loads((out / "latest.json").read_text())
    for key in REQUIRED_KEYS:
        assert positive_finite(data.get(key)), (key, data.get(key), data["headline"]["notes"],
                                                data.get("errors"), data["builds"].get("int8_source"))
    assert 0 < data["int8_top1_agreement"] <= 1
    assert data["cpu_engine_vs_best_ratio"] >= 1.0  # the best is the minimum of the same run


def test_quick_run_backends_and_machine_info(quick_run):
    results, _, _ = quick_run
    lat = results["backbone_latency"]
    for name in ("torch_eager_fp32", "onnxruntime_fp32"):
        assert lat[name]["count"] == 6 and len(lat[name]["samples_ms"]) == 6
        for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_per_s"):
            assert positive_finite(lat[name][k])
    for name in ("tensorrt_fp16", "tensorrt_int8"):
        assert lat[name]["unavailable"]  # recorded with the reason, not skipped silently
    for entry in lat.values():
        assert "p50_ms" in entry or entry.get("unavailable")
    cpu = results["machine"]["cpu"]
    assert cpu["model"] and cpu["usable_cores"] >= 1 and isinstance(cpu["flags"], list)
    assert "onnxruntime" in results["machine"]["versions"]


def test_quick_run_sections(quick_run):
    results, _, _ = quick_run
    heads = results["head"]["heads"]
    assert {e["ring_size"] for e in heads.values()} >= {8}
    st = results["streaming"]
    assert st["ring_size"] == results["model"]["spec"]["ring_size"]
    assert positive_finite(st["naive_batched_over_streaming_p50"])
    e2e = results["end_to_end"]
    assert e2e["frames"] > 0 and e2e["predictions"] > 0
    assert set(e2e["stage_ms_per_frame"]) >= {"decode", "preprocess", "backbone", "head"}
    assert e2e["video"]["size"] == [640, 480] and e2e["video"]["fps"] == pytest.approx(30.0)
    cold = results["cold_start"]
    assert cold["torch_imported"] is False
    assert positive_finite(cold["import_s"]) and positive_finite(cold["maxrss_mb"])
    roof = results["roofline"]
    assert roof["cost"]["flops_per_clip"] > 0
    assert positive_finite(roof["peaks"]["fp32_peak_gflops"])
    assert all(positive_finite(p["gflops"]) for p in roof["points"].values())


def test_quick_run_markdown_reports_targets(quick_run):
    results, out, _ = quick_run
    md = (out / "latest.md").read_text()
    assert "## Targets" in md and "## Backbone latency" in md
    for key, *_ in bench.TARGETS:
        assert f"`{key}`" in md
    assert any(s in md for s in ("**PASS**", "**MISS**"))


def test_shift_matmul_head_what_if_is_the_same_maths(tiny_model):
    import torch
    alt = bench._shift_matmul_head(tiny_model)
    n, d = tiny_model.spec.ring_size, tiny_model.spec.dim
    x = torch.randn(3, n, d)
    mask = torch.ones(3, n)
    mask[0, : n // 2] = 0
    with torch.no_grad():
        ref, got = tiny_model.head(x, mask), alt(x, mask)
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, atol=1e-6)


def test_resize_what_if_reports_times_and_pixel_difference(tmp_path):
    from gcf_trt.spec import ModelSpec
    video = bench.write_video(tmp_path / "v.mp4", seconds=0.2)
    out = bench.whatif_resize(ModelSpec(), video, say=lambda m: None, warmup=1, iters=3)
    assert out["frame"] == [640, 480] and out["resized_to"] == [171, 128]
    assert all(positive_finite(v) for v in out["p50_ms"].values())
    assert 0 <= out["pixel_abs_diff_0_255"]["mean"] <= out["pixel_abs_diff_0_255"]["max"] <= 255
