"""The soak script, short: 4 live loopback cameras (cut every 20 s) through StreamingClassifier.

Marked ``slow`` (about 2 minutes; deselected by default): ``python -m pytest -m slow tests/runtime/test_soak.py``.
The 20-minute figure is in benchmarks/results/soak.json (``python benchmarks/soak.py``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_soak_short_run_meets_the_rss_target(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--quick", "--minutes", "1.5",
                           "--warmup", "30", "--sample-seconds", "5", "--cut-every", "20", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.exists(), proc.stderr
    result = json.loads(out.read_text())
    assert result["torch_imported"] is False  # the RSS is the runtime's alone
    assert len(result["streams"]) == 4 and all(s["predictions"] > 0 for s in result["streams"])
    assert result["totals"]["errors"] == 0, [s["last_errors"] for s in result["streams"]]
    # every camera was cut at least 3 times and each cut was a reported gap, not an error
    assert all(s["camera_connections"] >= 4 and s["gaps"] >= 3 for s in result["streams"])
    assert result["rss_mb"]["growth_pct"] <= result["target_rss_growth_pct"] == 5.0
    assert result["fds"]["end"] <= result["fds"]["after_warmup"] + 2  # reconnects leak no descriptors
    assert result["threads"]["end"] <= result["threads"]["after_warmup"] + 2
    assert result["pass"] is True and proc.returncode == 0, proc.stdout[-2000:]
