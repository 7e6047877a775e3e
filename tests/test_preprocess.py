"""The shared preprocessing transform."""
from __future__ import annotations

import numpy as np
import pytest

from gcf_trt.errors import FrameError
from gcf_trt.preprocess import Preprocessor, as_bgr, clip_starts, clips_from_frames
from gcf_trt.spec import ModelSpec


@pytest.fixture
def spec():
    return ModelSpec(size=32, resize_short=36, clip_len=4, stride=2, labels=["a", "b"], dim=8)


def test_normalisation_matches_definition(spec):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    out = Preprocessor(spec)(frame)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    expected_r = (1.0 - spec.mean[0]) / spec.std[0]
    expected_g = (0.0 - spec.mean[1]) / spec.std[1]
    np.testing.assert_allclose(out[0], expected_r, rtol=1e-5)
    np.testing.assert_allclose(out[1], expected_g, rtol=1e-5)


def test_centre_crop_keeps_centre(spec):
    frame = np.zeros((36, 72, 3), np.uint8)
    frame[:, 20:52] = 255  # a white band exactly in the centre 32 columns
    crop = Preprocessor(spec).resize_crop(frame)
    assert crop.shape == (32, 32, 3)
    assert crop.min() == 255


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 4)])
def test_gray_and_bgra_are_converted(shape):
    assert as_bgr(np.zeros(shape, np.uint8)).shape == (20, 30, 3)


@pytest.mark.parametrize("frame, match", [
    (np.zeros((20, 30, 2), np.uint8), "not HxW"),
    (np.full((20, 30, 3), np.nan, np.float32), "NaN"),
    (np.zeros((20, 30, 3), np.float32), "dtype"),
    (np.zeros((0, 30, 3), np.uint8), "empty"),
    ("frame", "numpy array"),
])
def test_bad_frames_are_refused(frame, match):
    with pytest.raises(FrameError, match=match):
        as_bgr(frame)


def test_clip_assembly_semantics(spec):
    assert clip_starts(3, spec) == []
    assert clip_starts(9, spec) == [0, 2, 4]
    frames = [np.full((40, 40, 3), i, np.uint8) for i in range(9)]
    clips, ranges = clips_from_frames(frames, spec)
    assert clips.shape == (3, 3, 4, 32, 32)
    assert ranges == [(0, 3), (2, 5), (4, 7)]


def test_frame_step_subsamples(spec):
    spec.frame_step = 2
    frames = [np.full((40, 40, 3), i, np.uint8) for i in range(12)]
    clips, ranges = clips_from_frames(frames, spec)
    assert ranges == [(0, 6), (4, 10)]
