"""Shared fixtures: a tiny model, its checkpoint, generated videos; the ``gpu`` marker.

Tests marked ``gpu`` need TensorRT and a CUDA device.  They are real tests: where both exist
they run; elsewhere they are skipped with the reason (ImportError is caught, not only
ModuleNotFoundError, because a half-installed tensorrt fails to load its libraries).
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

# OpenVINO caches compiled models per user by default: tests (and the interpreters they start)
# use a cache of their own, never the developer's ~/.cache/gcf-trt.
os.environ.setdefault("GCF_TRT_CACHE_DIR", tempfile.mkdtemp(prefix="gcf-trt-test-cache-"))

TINY_SPEC = dict(backbone="edge3d", backbone_args={"width": 4, "blocks": [1, 1, 1, 1]}, clip_len=4,
                 stride=4, size=32, resize_short=36, ring_size=4, labels=["left", "right", "grow"],
                 head_hidden=16, long_range=2)


@functools.lru_cache(maxsize=1)
def gpu_skip_reason() -> str | None:
    """None when TensorRT imports and a CUDA device answers, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"TensorRT is not installed or cannot load its libraries ({exc})"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as exc:
            return f"cuda-python is not installed ({exc})"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return f"no CUDA device answers (cudaGetDeviceCount: {err}, {count} devices)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


def write_video(path: Path, num_frames: int = 24, size: tuple[int, int] = (64, 48), fps: float = 30.0,
                seed: int = 0, fourcc: str = "mp4v") -> Path:
    """Write a real video (a square drifting over noise) with OpenCV; returns ``path``."""
    rng = np.random.default_rng(seed)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    background = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    for i in range(num_frames):
        frame = background.copy()
        x = int((i * 3) % max(1, w - 12))
        cv2.rectangle(frame, (x, h // 3), (x + 12, h // 3 + 12), (40, 200, 250), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def tiny_spec_kwargs() -> dict:
    return {**TINY_SPEC}


@pytest.fixture(scope="session")
def tiny_model():
    torch = pytest.importorskip("torch")
    from gcf_trt.compile.model import GCFNet
    torch.manual_seed(0)
    return GCFNet.from_spec_args(**TINY_SPEC).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    from gcf_trt.compile.model import save_checkpoint
    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_engines(tiny_checkpoint, tmp_path_factory) -> Path:
    """FP32 ONNX Runtime engines of the tiny model (built once per session)."""
    from gcf_trt.compile.build import build_engines
    out = tmp_path_factory.mktemp("engines") / "tiny"
    build_engines(tiny_checkpoint, out, target="cpu", precision="fp32", runtime="onnxruntime")
    return out


@pytest.fixture
def video_file(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mp4", num_frames=24)


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    """Three short real videos (read-only for the tests): calibration input of the tiny model."""
    d = tmp_path_factory.mktemp("calib")
    for i in range(3):
        write_video(d / f"v{i}.mp4", num_frames=24, seed=i)
    return d


@pytest.fixture(scope="session")
def demo_engines_fp32(tmp_path_factory) -> Path:
    """FP32 ONNX Runtime engines of the bundled, trained demo model (its gates find actions)."""
    pytest.importorskip("torch")
    from importlib.resources import files
    from gcf_trt.compile.build import build_engines
    out = tmp_path_factory.mktemp("demo") / "engines"
    build_engines(str(files("gcf_trt") / "assets" / "demo.pt"), out, precision="fp32", runtime="onnxruntime")
    return out


# ----------------------------------------------------------------------------- real frames, calibrated model
def read_frames(path) -> list[np.ndarray]:
    """Every frame of a video file, BGR uint8 (the product's reader, gcf_trt.data.read_video)."""
    from gcf_trt.data import read_video
    return read_video(path)


def varied_frames(num_frames: int, seed: int = 3) -> list[np.ndarray]:
    """Frames whose clips really differ (moving, recoloured square; oscillating brightness),
    so that a wrong ring order or clip boundary changes the head's output measurably."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
    frames = []
    for i in range(num_frames):
        frame = (background.astype(np.int16) + int(60 * np.sin(i / 3.0))).clip(0, 255).astype(np.uint8)
        x, y = (i * 5) % 52, 10 + (i % 7) * 3
        cv2.rectangle(frame, (x, y), (x + 12, y + 12), (int(rng.integers(0, 255)), 200, 250), -1)
        frames.append(frame)
    return frames


@pytest.fixture(scope="session")
def calibrated_model(tiny_spec_kwargs):
    """The tiny architecture with BatchNorm statistics measured on real clips.

    Freshly initialised, the tiny backbone's activations shrink layer by layer to ~1e-4, so
    every clip has nearly the same descriptor and a 1e-4 parity tolerance could not tell a
    wrong ring order from a right one.  Calibrated BN keeps activations O(1).
    """
    torch = pytest.importorskip("torch")
    from gcf_trt.compile.model import GCFNet
    torch.manual_seed(0)
    model = GCFNet.from_spec_args(**tiny_spec_kwargs)
    from gcf_trt.preprocess import clips_from_frames
    clips, _ = clips_from_frames(varied_frames(64, seed=11), model.spec)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model.backbone(torch.from_numpy(clips))
    return model.eval()


@pytest.fixture(scope="session")
def calibrated_checkpoint(calibrated_model, tmp_path_factory):
    from gcf_trt.compile.model import save_checkpoint
    return save_checkpoint(calibrated_model, tmp_path_factory.getbasetemp() / "calibrated.pt")


@pytest.fixture(scope="session")
def calibrated_engines(calibrated_checkpoint, tmp_path_factory):
    """FP32 ORT engines of ``calibrated_model``.  Built once per session even when another test
    module imports this fixture (the directory is reused: builds are atomic)."""
    out = tmp_path_factory.getbasetemp() / "calibrated-engines"
    if not (out / "manifest.json").is_file():
        from gcf_trt.compile.build import build_engines
        build_engines(calibrated_checkpoint, out, target="cpu", precision="fp32", runtime="onnxruntime")
    return out
