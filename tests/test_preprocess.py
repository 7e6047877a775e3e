"""The shared preprocessing transform."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from gcf_trt.errors import FrameError
from gcf_trt.preprocess import Preprocessor, as_bgr, clip_starts, clips_from_frames, crop_plan
from gcf_trt.spec import ModelSpec


@pytest.fixture
def spec():
    return ModelSpec(size=32, resize_short=36, clip_len=4, stride=2, labels=["a", "b"], dim=8)


@pytest.mark.parametrize("one_call", [True, False], ids=["opencv-blob", "numpy-fallback"])
def test_normalisation_matches_definition(spec, one_call):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    prep = Preprocessor(spec)
    if not one_call:
        prep._blob = None  # what an OpenCV without the dnn module runs
    out = prep(frame)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    expected_r = (1.0 - spec.mean[0]) / spec.std[0]
    expected_g = (0.0 - spec.mean[1]) / spec.std[1]
    np.testing.assert_allclose(out[0], expected_r, rtol=1e-5)
    np.testing.assert_allclose(out[1], expected_g, rtol=1e-5)


def test_opencv_blob_equals_numpy_arithmetic(spec):
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (spec.size, spec.size, 3), dtype=np.uint8)
    prep, fallback = Preprocessor(spec), Preprocessor(spec)
    fallback._blob = None
    assert prep._blob is not None, "this OpenCV lacks cv2.dnn.blobFromImageWithParams"
    a, b = prep.to_tensor(crop), fallback.to_tensor(crop)
    assert a.shape == b.shape == (3, spec.size, spec.size) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)  # float32 rounding only
    expected = (crop[..., ::-1].transpose(2, 0, 1) / 255.0 - np.reshape(spec.mean, (3, 1, 1))) \
        / np.reshape(spec.std, (3, 1, 1))
    np.testing.assert_allclose(a, expected, atol=1e-5, rtol=0)
    mirrored = crop[:, ::-1]  # a strided view, as a flip augmentation would pass it
    np.testing.assert_allclose(prep.to_tensor(mirrored), fallback.to_tensor(mirrored), atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (1080, 1920), (96, 128), (36, 72), (30, 40)])
def test_crop_geometry_is_the_centred_preset_crop(hw):
    """Linear ramps survive area and bilinear filtering exactly, so each output pixel must read
    the source coordinate its centre maps to: the centred square of side
    min(H, W) * size / resize_short (shrinking, enlarging, both orientations)."""
    spec = ModelSpec(size=32, resize_short=36, labels=["a", "b"], dim=8)
    h, w = hw
    plan = crop_plan(h, w, spec.size, spec.resize_short)
    exact = min(h, w) * spec.size / spec.resize_short
    assert abs(plan.side - exact) <= 2 ** plan.halvings  # rounding + trim to a multiple of 2**k
    assert abs(plan.top - (h - plan.side) / 2) <= 0.5 and abs(plan.left - (w - plan.side) / 2) <= 0.5
    assert plan.side / 2 ** plan.halvings < 2 * spec.size
    # Ramps that span 0..255 over (just beyond) the exact crop, so a misplaced crop shows.
    lo_x, lo_y = (w - exact) / 2 - 2, (h - exact) / 2 - 2
    slope = 255 / (exact + 4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = np.clip(np.round((xs - lo_x) * slope), 0, 255)
    frame[..., 1] = np.clip(np.round((ys - lo_y) * slope), 0, 255)
    crop = Preprocessor(spec).resize_crop(frame).astype(np.float64)
    assert crop.shape == (spec.size, spec.size, 3)
    centres = (np.arange(spec.size) + 0.5) * plan.side / spec.size - 0.5
    # Border pixels of an enlargement are clamped (replicated) by OpenCV; compare the interior.
    # Tolerance: quantisation of the ramp and of the output (one grey level each at most, OpenCV's
    # fixed-point bilinear weights), plus the round-half-up of OpenCV's uint8 2x area path
    # (measured: about +0.2 to +0.4 grey levels of bias per halving).
    inner, atol = slice(1, -1), 1.5 + 0.4 * plan.halvings
    np.testing.assert_allclose(crop[0, inner, 0], ((plan.left + centres - lo_x) * slope)[inner], atol=atol)
    np.testing.assert_allclose(crop[inner, 0, 1], ((plan.top + centres - lo_y) * slope)[inner], atol=atol)


def test_crop_first_stays_close_to_whole_frame_resize():
    """The crop-first, two-step resize approximates the whole-frame INTER_AREA resize it
    replaced: on a smooth 640x480 frame the mean difference is well under one grey level."""
    spec = ModelSpec(size=112, resize_short=128, labels=["a", "b"], dim=8)
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 6)
    new = Preprocessor(spec).resize_crop(frame).astype(np.float32)
    # The old transform: resize all of the frame (one INTER_AREA), then crop the centre.
    whole = cv2.resize(frame, (171, 128), interpolation=cv2.INTER_AREA)
    old = whole[8:120, 29:141].astype(np.float32)
    diff = np.abs(new - old)
    assert diff.mean() < 1.0 and diff.max() < 16, (diff.mean(), diff.max())


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
