"""Catalogue of bad inputs (docs/RELIABILITY.md): each one gets one clear message naming what
and where, a hint, exit code 1 from the CLI, no traceback unless --verbose, nothing half-written.

The CLI cases run the real ``python -m gcf_trt.cli`` in a subprocess (so anything that escapes
``main`` - a traceback, a native library's stderr, a leaked secret - is seen).  Cases already
covered elsewhere are not repeated here: missing / corrupt checkpoints, a missing calib dir,
unreadable or too-short calibration videos, int8 without --calib and an --out under a regular file via
``main`` are in ``tests/compile/test_build.py::test_cli_bad_inputs``; NaN / float / 2-channel frames
pushed through the Python API in ``tests/runtime/test_stream.py::test_bad_frames_are_skipped_and_counted``
and ``tests/test_preprocess.py::test_bad_frames_are_refused``; grayscale / BGRA / resolution
changes in ``tests/runtime/test_stream.py::test_gray_bgra_and_size_changes_are_accepted``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from gcf_trt.errors import EngineError, SourceError
from gcf_trt.manifest import read_manifest
from tests.conftest import write_video

SECRET = "s3cretpw"


# ----------------------------------------------------------------------------- helpers
def cli(*argv: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gcf_trt.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path.cwd())})


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_mjpeg_avi(path: Path, num_frames: int, corrupt: set[int] = frozenset(), size=(64, 48)) -> Path:
    """An MJPG AVI whose frames listed in ``corrupt`` have their JPEG data zeroed (undecodable)."""
    rng = np.random.default_rng(1)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    assert writer.isOpened()
    for _ in range(num_frames):
        writer.write(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    pos, k = 0, 0
    while (pos := data.find(b"\xff\xd8", pos)) >= 0:  # JPEG start-of-image markers, one per frame
        if k in corrupt:
            data[pos + 2:pos + 600] = bytes(598)
        pos, k = pos + 2, k + 1
    assert k == num_frames
    path.write_bytes(bytes(data))
    return path


def copy_engines(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- the CLI table
@dataclass
class Case:
    """``setup(tmp, ctx) -> argv``; the command must exit ``code`` with ``error[kind]`` and every
    fragment of ``expect`` (what and where) on stderr; ``absent`` paths must not exist after."""

    setup: Callable[[Path, dict], list[str]]
    kind: str
    expect: tuple[str, ...]
    absent: tuple[str, ...] = ("out.avi", "engines")
    code: int = 1
    needs_torch: bool = False


def _run(source: str | Path, ctx: dict, *extra: str) -> list[str]:
    return ["run", str(source), "--engines", str(ctx["engines"]), "--output", str(ctx["tmp"] / "out.avi"),
            "--reconnect-attempts", "1", "--reconnect-max-delay", "0.1", *extra]


def _zero_byte(tmp, ctx):
    (tmp / "empty.mp4").write_bytes(b"")
    return _run(tmp / "empty.mp4", ctx)


def _truncated_video(tmp, ctx):
    data = write_video(tmp / "full.mp4", num_frames=24).read_bytes()
    (tmp / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return _run(tmp / "truncated.mp4", ctx)


def _corrupt_video(tmp, ctx):
    data = bytearray(write_video(tmp / "full.mp4", num_frames=24).read_bytes())
    data[64:] = np.random.default_rng(0).integers(0, 256, len(data) - 64, dtype=np.uint8).tobytes()
    (tmp / "corrupt.mp4").write_bytes(bytes(data))
    return _run(tmp / "corrupt.mp4", ctx)


def _no_decodable_frame(tmp, ctx):
    return _run(write_mjpeg_avi(tmp / "nodecode.avi", 12, corrupt=set(range(12))), ctx)


def _shorter_than_clip(tmp, ctx):
    return _run(write_video(tmp / "short.mp4", num_frames=2), ctx)  # a clip needs 4 frames


def _engines_without_manifest(tmp, ctx):
    eng = copy_engines(ctx["engines"], tmp / "eng")
    (eng / "manifest.json").unlink()
    return _run(ctx["video"], {**ctx, "engines": eng})


def _manifest_of_other_model(tmp, ctx):
    """The manifest of another model (other input size) beside these engine files, with hashes
    that match the files: only the tensor shapes can tell."""
    eng = copy_engines(ctx["engines"], tmp / "eng")
    manifest = json.loads((eng / "manifest.json").read_text())
    manifest["spec"].update(size=40, resize_short=44)
    manifest["model_hash"] = "0123456789abcdef"
    (eng / "manifest.json").write_text(json.dumps(manifest))
    return _run(ctx["video"], {**ctx, "engines": eng})


def _truncated_engine(tmp, ctx):
    eng = copy_engines(ctx["engines"], tmp / "eng")
    data = (eng / "backbone.onnx").read_bytes()
    (eng / "backbone.onnx").write_bytes(data[: len(data) // 2])
    return _run(ctx["video"], {**ctx, "engines": eng})


def _unwritable_jsonl(tmp, ctx):
    (tmp / "file.txt").write_text("a regular file, not a directory")
    return _run(ctx["video"], ctx, "--jsonl", str(tmp / "file.txt" / "preds.jsonl"))


def _unwritable_video(tmp, ctx):
    (tmp / "file.txt").write_text("a regular file, not a directory")
    return ["run", str(ctx["video"]), "--engines", str(ctx["engines"]), "--output",
            str(tmp / "file.txt" / "out.avi")]


def _build(ctx, out: Path, *extra: str, checkpoint: Path | None = None) -> list[str]:
    return ["build", "--checkpoint", str(checkpoint or ctx["checkpoint"]), "--out", str(out), *extra]


def _empty_calib_dir(tmp, ctx):
    (tmp / "calib").mkdir()
    return _build(ctx, tmp / "engines", "--precision", "int8", "--calib", str(tmp / "calib"))


class _Exploit:
    """Unpickling this calls eval(): a checkpoint carrying code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).write_text('pwned')",))


def _pickle_with_code(tmp, ctx):
    import torch
    evil = tmp / "evil.pt"
    torch.save({"format": "gcf-trt-checkpoint", "version": 1, "payload": _Exploit(tmp / "PWNED")}, evil)
    return _build(ctx, tmp / "engines", checkpoint=evil)


def _out_under_proc(tmp, ctx):
    return _build(ctx, Path("/proc") / f"gcf-trt-engines-{os.getpid()}")


CASES: dict[str, Case] = {
    # ---- gcf-trt run: the source
    "missing_file": Case(lambda tmp, ctx: _run(tmp / "missing.mp4", ctx), "source", ("missing.mp4", "does not exist")),
    "zero_byte_file": Case(_zero_byte, "source", ("empty.mp4", "is empty (0 bytes)")),
    "truncated_video": Case(_truncated_video, "source", ("truncated.mp4", "cannot open file source")),
    "corrupt_video": Case(_corrupt_video, "source", ("corrupt.mp4", "cannot open file source")),
    "no_decodable_frame": Case(_no_decodable_frame, "video", ("nodecode.avi", "no decodable frame")),
    "shorter_than_one_clip": Case(_shorter_than_clip, "video", ("short.mp4", "shorter than one clip", "needs 4")),
    "unknown_uri_scheme": Case(lambda tmp, ctx: _run(f"foo://user:{SECRET}@127.0.0.1/cam", ctx), "source",
                               ("unknown source scheme 'foo://'", "foo://***@127.0.0.1/cam")),
    "unreachable_rtsp": Case(lambda tmp, ctx: _run(f"rtsp://user:{SECRET}@127.0.0.1:{free_port()}/x", ctx),
                             "source", ("cannot open stream source", "rtsp://***@127.0.0.1:")),
    "unreachable_http": Case(lambda tmp, ctx: _run(f"http://user:{SECRET}@127.0.0.1:{free_port()}/v.mjpg", ctx),
                             "source", ("cannot open stream source", "http://***@127.0.0.1:")),
    # ---- gcf-trt run: the engines
    "engines_without_manifest": Case(_engines_without_manifest, "engine", ("eng has no manifest.json",)),
    "manifest_of_other_model": Case(_manifest_of_other_model, "engine",
                                    ("backbone.onnx", "'clip'", "different models")),
    "truncated_engine_file": Case(_truncated_engine, "engine", ("eng/backbone.onnx", "does not match the hash")),
    # ---- gcf-trt run: the outputs
    "unwritable_jsonl": Case(_unwritable_jsonl, "output", ("file.txt/preds.jsonl", "Not a directory")),
    "unwritable_output_video": Case(_unwritable_video, "output", ("file.txt/out.avi", "not a writable directory"),
                                    absent=("file.txt/out.avi",)),
    # ---- gcf-trt build
    "empty_calib_dir": Case(_empty_calib_dir, "calibration", ("no video files", "calib")),
    "checkpoint_pickle_with_code": Case(_pickle_with_code, "checkpoint", ("evil.pt", "refused", "not executed"),
                                        absent=("engines", "PWNED")),
    "build_out_under_proc": Case(_out_under_proc, "output", ("cannot write to /proc",)),
}


@pytest.fixture
def ctx(tmp_path, tiny_engines, tiny_checkpoint):
    return {"tmp": tmp_path, "engines": tiny_engines, "checkpoint": tiny_checkpoint,
            "video": write_video(tmp_path / "good.mp4", num_frames=24)}


def _check_failure(case: Case, proc: subprocess.CompletedProcess, tmp: Path, verbose: bool) -> None:
    err = proc.stderr
    assert proc.returncode == case.code, err
    errors = [line for line in err.splitlines() if line.startswith("error[")]
    hints = [line for line in err.splitlines() if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, err          # one message, one fix
    if not verbose:  # and no library noise around it (OpenCV / FFmpeg warnings)
        assert not [line for line in err.splitlines() if "WARN" in line or line.startswith("[")], err
    assert errors[0].startswith(f"error[{case.kind}]: "), err
    for fragment in case.expect:                              # what and where
        assert fragment in errors[0], (fragment, errors[0])
    assert ("Traceback" in err) == verbose, err
    assert SECRET not in err + proc.stdout
    # stdout: only whole JSON prediction lines (run) or progress lines (build)
    assert all(line.startswith("... ") or json.loads(line) for line in proc.stdout.splitlines())
    for name in case.absent:                                  # nothing half-written
        assert not (tmp / name).exists(), name
    leftovers = [p.name for p in tmp.rglob(".*") if "tmp" in p.name]
    assert not leftovers, leftovers


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_input(name, ctx, tmp_path):
    case = CASES[name]
    argv = case.setup(tmp_path, ctx)
    proc = cli(*argv, cwd=tmp_path)
    _check_failure(case, proc, tmp_path, verbose=False)


@pytest.mark.parametrize("name", ["zero_byte_file", "no_decodable_frame", "manifest_of_other_model",
                                  "unreachable_rtsp"])
def test_verbose_adds_the_traceback(name, ctx, tmp_path):
    case = CASES[name]
    proc = cli("--verbose", *case.setup(tmp_path, ctx), cwd=tmp_path)
    _check_failure(case, proc, tmp_path, verbose=True)


def test_catalogue_is_large_enough():
    assert len(CASES) >= 12 and len({c.kind for c in CASES.values()}) >= 6


# ----------------------------------------------------------------------------- bad frames go on
def test_file_with_corrupt_frames_goes_on_and_counts_them(tmp_path):
    """FFmpeg fails on frames 3 and 7 of 24: they are skipped and counted, the file goes on and
    the frame indices keep matching the file (before the fix the file ended at frame 3)."""
    from gcf_trt.runtime.sources import open_source
    video = write_mjpeg_avi(tmp_path / "somebad.avi", 24, corrupt={3, 7})
    with open_source(video) as src:
        indices = [item.index for item in src]
    assert indices == [i for i in range(24) if i not in (3, 7)]
    assert src.stats.frames_corrupt == 2 and src.stats.frames_read == 22


def test_cli_stream_with_corrupt_frames_goes_on(tmp_path, tiny_engines):
    video = write_mjpeg_avi(tmp_path / "somebad.avi", 24, corrupt={3, 7})
    proc = cli("run", str(video), "--engines", str(tiny_engines), "--jsonl", str(tmp_path / "p.jsonl"))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 22 // 4  # 22 good frames, clip_len = stride = 4
    assert lines[0]["frame_range"] == [0, 4]  # frame 3 is missing: the first clip is 0,1,2,4
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("gcf-trt run: 22 frames, 5 clips") and "2 bad frames" in summary
    assert "skipped 1 undecodable frame(s) at frame 3" in proc.stderr and "Traceback" not in proc.stderr


def test_odd_sized_frames_through_the_api(tiny_engines):
    """Tiny, odd and extreme-aspect frames (gray, BGRA, BGR) are resized like any other."""
    from gcf_trt.runtime import StreamingClassifier
    rng = np.random.default_rng(0)
    shapes = [(1, 1, 3), (5, 7), (3, 200, 4), (200, 3, 1), (7, 5, 3), (33, 1, 3), (1, 99), (2, 2, 4)]
    frames = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in shapes]
    with StreamingClassifier(tiny_engines) as clf:
        predictions = clf.run_frames(frames)
        state = clf.state
    assert state.bad_frames == 0 and state.good_frames == 8 and len(predictions) == 2
    assert all(np.isfinite(p.logits).all() for p in predictions)


def test_nan_frames_mid_stream_keep_the_stream_alive(tiny_engines):
    """NaN / inf frames between good ones: skipped, counted with the frame index, and the
    predictions are those of the good frames alone."""
    from gcf_trt.runtime import StreamingClassifier
    rng = np.random.default_rng(0)
    good = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(12)]
    nan, inf = np.full((24, 32, 3), np.nan, np.float32), np.full((24, 32, 3), np.inf, np.float32)
    mixed = good[:2] + [nan] + good[2:9] + [inf, nan] + good[9:]
    with StreamingClassifier(tiny_engines) as clf:
        with_bad = clf.run_frames(mixed)
        state = clf.state
    with StreamingClassifier(tiny_engines) as clf:
        clean = clf.run_frames(good)
    assert state.bad_frames == 3 and state.frames_seen == 15
    assert "frame 11" in state.last_bad_frame and "NaN or inf" in state.last_bad_frame
    assert len(with_bad) == len(clean) == 3
    for a, b in zip(with_bad, clean):
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- API-level engines
def test_corrupt_engine_without_hash_check_is_an_engine_error(tmp_path, tiny_engines):
    """Even with verify=False a corrupt file is an EngineError, not a runtime's own exception."""
    from gcf_trt.runtime.engines import load_engines
    eng = copy_engines(tiny_engines, tmp_path / "eng")
    (eng / "head.onnx").write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(EngineError, match="cannot load .*head.onnx"):
        load_engines(eng, verify=False, head="engine")
    (eng / "head.npz").write_bytes(b"PK\x03\x04garbage" * 50)  # the numpy head's weights
    with pytest.raises(EngineError, match="cannot read head weights .*head.npz"):
        load_engines(eng, verify=False)
    with pytest.raises(EngineError, match="does not match the hash"):
        load_engines(eng)


def test_manifest_of_other_model_is_refused_by_the_api(tmp_path, tiny_engines):
    from gcf_trt.runtime import StreamingClassifier
    eng = copy_engines(tiny_engines, tmp_path / "eng")
    manifest = json.loads((eng / "manifest.json").read_text())
    manifest["spec"].update(ring_size=6)
    (eng / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(eng).spec.ring_size == 6  # a valid manifest on its own
    with pytest.raises(EngineError, match="'descriptors' has shape .* different models"):
        StreamingClassifier(eng)


def test_unreachable_stream_is_a_source_error_with_hint():
    from gcf_trt.runtime.sources import open_source
    with pytest.raises(SourceError, match="cannot open stream source") as err:
        open_source(f"http://u:{SECRET}@127.0.0.1:{free_port()}/x", open_timeout_ms=2000)
    assert SECRET not in str(err.value) and "server is up" in err.value.hint


def test_reliability_doc_names_only_existing_tests():
    """Every `[dir/]test_x.py::test_y` in docs/RELIABILITY.md (paths relative to tests/) exists, so
    the promise table cannot rot."""
    import re
    root = Path(__file__).resolve().parents[1]
    refs = set(re.findall(r"(?:tests/)?((?:\w+/)*test_\w+\.py)::(\w+)", (root / "docs" / "RELIABILITY.md").read_text()))
    assert len(refs) >= 30
    missing = [f"{f}::{n}" for f, n in sorted(refs) if f"def {n}(" not in (root / "tests" / f).read_text()]
    assert missing == []
