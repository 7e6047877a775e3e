"""``gcf-trt build`` flags: a flag for the other target, an out-of-range fraction or a bad count
is an error that names the flag, from the real CLI in a subprocess (exit 1, one ``error[...]``
line, one ``hint:`` line, no traceback; argparse usage errors exit 2)."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gcf_trt.cli", "build", *args], capture_output=True, text=True,
                          timeout=300)


CASES = {
    # name: (extra args, flag the message must name, words it must contain)
    "cpu_max_batch": (["--target", "cpu", "--max-batch", "4"], "--max-batch", "--target cpu"),
    "cpu_dla_core": (["--dla-core", "0"], "--dla-core", "--target cpu"),   # cpu is the default target
    "trt_threads": (["--target", "trt", "--threads", "2"], "--threads", "--target trt"),
    "trt_runtime": (["--target", "trt", "--runtime", "openvino"], "--runtime", "--target trt"),
    "min_agreement_percent": (["--min-agreement", "99"], "--min-agreement", "between 0 and 1"),
    "min_agreement_negative": (["--target", "trt", "--min-agreement", "-0.1"], "--min-agreement", "between 0 and 1"),
    "min_cosine": (["--min-cosine", "1.5"], "--min-cosine", "between 0 and 1"),
    "calib_clips": (["--calib-clips", "0"], "--calib-clips", ">= 2"),
    "trial_iterations": (["--trial-iterations", "0"], "--trial-iterations", ">= 1"),
    "trt_profile": (["--target", "trt", "--min-batch", "4", "--max-batch", "2"], "--min-batch", "--max-batch"),
    "trt_workspace": (["--target", "trt", "--workspace-mb", "0"], "--workspace-mb", ">= 1"),
    "dla_dynamic": (["--target", "trt", "--dla-core", "0", "--max-batch", "8"], "--dla-core", "fixed batch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_flag_errors_name_the_flag(case, tiny_checkpoint, tmp_path):
    extra, flag, words = CASES[case]
    res = _cli("--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"), *extra)
    err = res.stderr
    assert res.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith(("error[", "hint:"))]
    assert len(lines) == 2 and lines[0].startswith("error[input]: ") and lines[1].startswith("hint: "), err
    assert flag in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in err
    # messages speak of flags, never of Python parameters
    for param in ("max_batch", "min_agreement", "min_cosine", "calib_clips", "trial_iterations", "dla_core",
                  "workspace_mb", "min_batch"):
        assert param not in err
    assert not (tmp_path / "out").exists()


def test_from_needs_target_trt(tiny_engines, tmp_path):
    res = _cli("--from", str(tiny_engines), "--out", str(tmp_path / "out"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error[input]: --from does not apply to --target cpu")
    assert "\nhint: " in res.stderr


def test_from_and_checkpoint_together_is_a_usage_error(tiny_checkpoint, tiny_engines, tmp_path):
    res = _cli("--checkpoint", str(tiny_checkpoint), "--from", str(tiny_engines), "--out", str(tmp_path / "o"),
               "--target", "trt")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--from: not allowed with argument --checkpoint" in res.stderr


def test_calib_method_does_not_apply_with_from(tiny_engines, tmp_path):
    res = _cli("--target", "trt", "--from", str(tiny_engines), "--calib-method", "percentile",
               "--out", str(tmp_path / "o"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error[input]: --calib-method does not apply with --from")
