"""compile/cpu_build.py's choice among timed candidates, without any runtime installed: the
fastest candidate that passed the gate wins, whatever runtimes this machine has (the build's
end-to-end check in test_build.py needs both ONNX Runtime and OpenVINO)."""
from __future__ import annotations

import pytest

from gcf_trt.compile.cpu_build import _Candidate, fastest_passing
from gcf_trt.errors import AgreementError


def cand(runtime: str, precision: str, ms: float | None, passed: bool) -> _Candidate:
    record = {"passed": passed, **({"median_ms": ms} if ms is not None else {})}
    return _Candidate(runtime, precision, f"{runtime}_{precision}.onnx", {}, record)


def test_the_fastest_passing_candidate_wins_and_a_faster_failing_one_never_does():
    cands = [cand("onnxruntime", "fp32", 4.0, True), cand("onnxruntime", "int8", 1.0, False),
             cand("openvino", "fp32", 3.0, True), cand("openvino", "int8", 2.0, True)]
    chosen, why = fastest_passing(cands)
    assert (chosen.runtime, chosen.precision) == ("openvino", "int8")
    assert "2.00 ms/clip" in why and "1.50x openvino fp32" in why


def test_fp32_can_win_and_then_no_speedup_is_claimed():
    chosen, why = fastest_passing([cand("onnxruntime", "fp32", 1.2, True), cand("onnxruntime", "int8", 1.7, True)])
    assert (chosen.runtime, chosen.precision) == ("onnxruntime", "fp32") and "x " not in why


def test_untimed_or_failed_candidates_alone_are_refused():
    with pytest.raises(AgreementError):
        fastest_passing([cand("openvino", "int8", 1.0, False), cand("onnxruntime", "fp32", None, True)])
