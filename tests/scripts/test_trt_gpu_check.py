"""scripts/gpu_check.sh where there is no GPU: it still writes its JSON, says what is missing,
and exits 1 (the GPU run itself is for machines with TensorRT; see docs/TENSORRT.md)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import gpu_skip_reason

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(gpu_skip_reason() is None, reason="a GPU is here: run scripts/gpu_check.sh itself")
def test_without_tensorrt_the_report_says_so(tmp_path):
    out = tmp_path / "report" / "gpu_check.json"
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(out), "--work",
                          str(tmp_path / "work")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert report["format"] == "gcf-trt-gpu-check" and report["ok"] is False
    env = report["steps"]["environment"]
    assert env["ok"] is False and "TensorRT" in env["error"] and "trt-cu12" in env["hint"]
    assert set(report["steps"]) == {"environment"}  # nothing ran on a machine that cannot
    assert "FAILED" in res.stdout and "Traceback" not in res.stdout + res.stderr
