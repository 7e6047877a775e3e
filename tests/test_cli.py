"""The CLI's edge (gcf_trt/cli.py): verbosity flags anywhere, one error line + one hint, no
traceback unless --verbose, no progress-bar debris on a stderr that is not a terminal.

Every case runs the real CLI in a subprocess, as a user would.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_video


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gcf_trt.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(Path.cwd())})


def one_error(proc: subprocess.CompletedProcess, kind: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert [line for line in lines if line.startswith("error[")] == [lines[-2]], proc.stderr
    assert lines[-2].startswith(f"error[{kind}]") and lines[-1].startswith("hint: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_verbose_and_quiet_are_accepted_after_the_subcommand(tmp_path):
    missing = str(tmp_path / "nope.mp4")
    for flags in (["-v"], ["--verbose"], ["-q"], ["--quiet"]):
        proc = cli("run", missing, "--engines", str(tmp_path / "none"), *flags)
        assert proc.returncode == 1, (flags, proc.stderr)  # a usage error would be 2
        assert "unrecognized arguments" not in proc.stderr
    # after the subcommand, -v means a traceback
    assert "Traceback" in cli("run", missing, "--engines", str(tmp_path / "none"), "-v").stderr
    assert "Traceback" in cli("-v", "run", missing, "--engines", str(tmp_path / "none")).stderr
    one_error(cli("run", missing, "--engines", str(tmp_path / "none"), "-q"), "source")


def test_verbose_and_quiet_together_is_a_usage_error(tmp_path):
    proc = cli("backbones", "-q", "-v")
    assert proc.returncode == 2 and "not allowed with" in proc.stderr and "Traceback" not in proc.stderr


def test_a_failing_build_leaves_no_progress_bar_debris(tiny_checkpoint, tmp_path):
    """Bars are drawn only on a terminal and closed on error: stderr is the error and its hint."""
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        write_video(calib / f"v{i}.mp4", num_frames=24, seed=i)
    proc = cli("build", "--checkpoint", str(tiny_checkpoint), "--calib", str(calib), "--precision", "int8",
               "--gate-predictions", "100000", "--out", str(tmp_path / "out"))
    one_error(proc, "calibration")
    assert "needs 100000 held-out predictions" in proc.stderr
    assert "%|" not in proc.stderr and "\r" not in proc.stderr and "it/s" not in proc.stderr
    assert not (tmp_path / "out").exists()
