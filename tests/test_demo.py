"""gcf_trt.demo: what the demo generates for the build (the whole demo runs in test_evaluate.py)."""
from __future__ import annotations

import pytest

from gcf_trt.compile.calibration import GATE_PREDICTIONS, calibration_split
from gcf_trt.errors import CalibrationError
from gcf_trt.compile.options import CalibrationOptions
from gcf_trt.data import make_videos
from gcf_trt.demo import calibration_video_count
from gcf_trt.spec import ModelSpec


@pytest.mark.parametrize("clip_len", [8, 16])
def test_the_demo_generates_enough_calibration_videos_for_the_gate_and_the_calibration(tmp_path, clip_len):
    """Whatever the clip length, the generated videos give the gate its held-out predictions and
    the calibration its clips, for any split the build draws.  The fixed count the demo had
    before (32, enough for 8-frame clips) does not do for 16-frame clips."""
    spec = ModelSpec(clip_len=clip_len, stride=clip_len, size=16, resize_short=18)
    seed = 10_007
    count = calibration_video_count(spec, seed)
    make_videos(tmp_path, count, seed=seed)
    for split_seed in range(4):
        calib, holdout = calibration_split(tmp_path, spec, seed=split_seed)
        assert sum(len(clips) for clips in holdout) >= GATE_PREDICTIONS
        assert len(calib) == CalibrationOptions().clips
    if clip_len == 16:
        fixed = tmp_path / "fixed"
        make_videos(fixed, 32, seed=seed)
        with pytest.raises(CalibrationError, match="held-out predictions"):
            calibration_split(fixed, spec)
