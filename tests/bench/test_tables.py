"""latest.md's INT8 agreement lines say where the disagreements are, as the build's refusals do."""
from __future__ import annotations

from gcf_trt.bench import tables


def test_agreement_lines_name_the_near_ties_and_the_rings_without_a_relevant_clip():
    record = {"top1_agreement": 0.98, "top1_agreement_ci95": [0.97, 0.99], "num_predictions": 1000,
              "num_disagreements": 20, "cosine_mean": 0.999, "cosine_min": 0.99,
              "near_tie_margin": 0.2, "near_ties": 150, "disagreements_at_near_ties": 14,
              "relevant_gate": 0.5, "without_relevant_clip": 400, "disagreements_without_relevant_clip": 9}
    lines = tables._agreement({"model": "m", "videos": "v",
                               "per_runtime": {"onnxruntime": record, "openvino": {"unavailable": "not installed"}}})
    ort = next(line for line in lines if line.startswith("- onnxruntime:"))
    assert "**98.00%** over 1000 ring predictions" in ort
    assert "14 of the 20 disagreements are near-ties of FP32 itself" in ort and "15.0% of the predictions" in ort
    assert "9 of the 20 on rings where no FP32 gate reaches 0.5 (no action in view, 40.0% of the predictions)" in ort
    assert "- openvino: unavailable - not installed" in lines


def test_a_measured_peak_below_an_engines_rate_is_reported_as_no_ceiling():
    """An AVX2 CPU without VNNI once measured its INT8 "peak" on torch._int_mm's reference loop
    (1.7 GOP/s) and reported the INT8 engines at 3892 % and 7364 % of it."""
    from gcf_trt.bench.sections.roofline import roofline
    cost = {"flops_per_clip": 1e9, "gflops_per_clip": 1.0, "counter": "test",
            "arithmetic_intensity": {"fp32": 1.0, "bf16": 2.0, "int8": 4.0}}
    peaks = {"matmul_size": 64, "threads": 2, "fp32": {}, "bf16": {}, "int8": {},
             "fp32_peak_gflops": 200.0, "int8_peak_gflops": 1.7}
    latency = {"openvino_fp32": {"p50_ms": 10.0, "precision": "fp32"},
               "openvino_int8": {"p50_ms": 8.0, "precision": "int8"}}
    roof = {"cost": cost, "peaks": peaks, **roofline(cost, peaks, latency)}
    fp32, int8 = roof["points"]["openvino_fp32"], roof["points"]["openvino_int8"]
    assert abs(fp32["fraction_of_peak"] - 0.5) < 1e-9 and "ceiling_note" not in fp32
    assert int8["fraction_of_peak"] is None and "no ceiling was measured" in int8["ceiling_note"]
    md = "\n".join(tables._roofline(roof))
    assert "| openvino_fp32 | 100.0 | fp32 | 50% |" in md
    assert "| openvino_int8 | 125.0 | int8 | the measured int8 peak (1.7 GFLOP/s) is below" in md
    assert "%" not in md.split("| openvino_int8 |")[1].split("\n")[0]


def test_a_peak_source_too_slow_for_the_budget_is_measured_small_and_says_so(monkeypatch):
    """A reference loop (torch._int_mm without VNNI) must not spend the section's budget on one
    full-size call while the real kernels wait."""
    import time

    from gcf_trt.bench.sections import roofline
    from gcf_trt.bench.timing import Deadline

    def cubic(n):  # about 1 GOP/s: a 2048^2 matmul would take ~17 s
        return lambda: time.sleep(2.0 * n ** 3 / 1e9)

    def constant(n):  # fast at any size
        return lambda: time.sleep(1e-4)
    monkeypatch.setattr(roofline, "_peak_sources", lambda bf16_native: [
        ("int8", "slow loop", cubic), ("int8", "kernel", constant), ("fp32", "kernel", constant)])
    peaks = roofline.machine_peaks(2048, repeats=2, bf16=(False, "no"), deadline=Deadline(6.0))
    slow, fast = peaks["int8"]["slow loop"], peaks["int8"]["kernel"]
    assert slow["size"] == 256 and "measured at 256^2" in slow["note"]
    assert "size" not in fast and fast["repeats"] == 2
    assert peaks["int8_peak_gflops"] == fast["best_gflops"]
    assert "(measured at 256^2" in "\n".join(tables._roofline({"cost": {"gflops_per_clip": 1.0, "counter": "t"},
                                                              "peaks": peaks}))
