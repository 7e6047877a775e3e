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
