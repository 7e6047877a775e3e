"""Sinks: the annotated video is browser-playable H.264 where this machine can encode it (else the
codec and the reason are named), written atomically; JSON lines; the sinks an app wires itself."""
from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from gcf_trt.runtime.pipeline import LiveRun, RunConfig
from gcf_trt.runtime.sinks import AtomicVideoWriter, JsonLinesSink, Sink, VideoSink, choose_codec
from tests.conftest import write_video


def probe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,pix_fmt,nb_read_frames", "-count_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def frames(n: int, size=(65, 47)) -> list[np.ndarray]:  # odd sizes: H.264 needs even ones, the writer pads
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size[1], size[0], 3), np.uint8) for _ in range(n)]


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (ffmpeg) is not installed")
def test_mp4_output_is_h264_when_an_encoder_exists(tmp_path):
    codec = choose_codec(".mp4")
    if shutil.which("ffmpeg") is None and codec.name != "h264":
        pytest.skip(f"no H.264 encoder on this machine ({codec.why})")
    assert codec.name == "h264" and codec.browser_playable and codec.why == ""
    out = tmp_path / "a.mp4"
    writer = AtomicVideoWriter(out, 25.0, codec)
    for f in frames(12):
        writer.write(f)
    assert not out.exists()          # only the hidden temp file so far
    writer.commit()
    info = probe(out)
    assert (info["codec_name"], info["pix_fmt"], int(info["nb_read_frames"])) == ("h264", "yuv420p", 12)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_without_h264_the_codec_and_the_reason_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg binary
    codec = choose_codec(".mp4")
    if codec.name == "h264":  # this OpenCV's own FFmpeg has an H.264 encoder: nothing to fall back from
        assert codec.how == "OpenCV's FFmpeg"
        return
    assert codec.name in ("vp9", "mpeg4")
    assert "no H.264 encoder" in codec.why and "no ffmpeg with libx264 is on PATH" in codec.why
    assert codec.describe().startswith(("VP9 (", "MPEG4 ("))
    writer = AtomicVideoWriter(tmp_path / "b.mp4", 25.0, codec)
    for f in frames(5, (64, 48)):
        writer.write(f)
    writer.commit()
    cap = cv2.VideoCapture(str(tmp_path / "b.mp4"))
    assert sum(1 for _ in iter(lambda: cap.read()[0], False)) == 5
    cap.release()


def test_abort_leaves_nothing(tmp_path):
    writer = AtomicVideoWriter(tmp_path / "c.mp4", 25.0)
    for f in frames(3):
        writer.write(f)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


class Recorder(Sink):
    wants_frames = True

    def __init__(self):
        self.frames, self.predictions, self.segments, self.closed = 0, [], [], None

    def frame(self, stream, frame, latest):
        self.frames += 1
        assert frame.stream_time_s == pytest.approx(frame.index / 30.0)

    def prediction(self, event):
        self.predictions.append(event.record)

    def segment(self, event):
        self.segments.append(event)

    def close(self, ok):
        self.closed = ok


def test_an_app_wires_its_own_sinks(tiny_engines, tmp_path):
    """What examples/camera_app.py does: a LiveRun with its own list of sinks."""
    video = write_video(tmp_path / "in.mp4", num_frames=24, fps=30.0)
    recorder, said = Recorder(), []
    sinks = [recorder, JsonLinesSink(tmp_path / "p.jsonl"), VideoSink(tmp_path / "out.mp4")]
    assert LiveRun(RunConfig(sources=[str(video)], engines=tiny_engines), sinks, say=said.append).run() == 0
    assert recorder.frames == 24 and recorder.closed is True
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert lines == recorder.predictions and [p["clip_index"] for p in lines] == list(range(6))
    assert all(p["stream_time_s"] == pytest.approx(p["frame_range"][1] / 30.0, abs=1e-3) for p in lines)
    assert all(p["source"] == str(video) for p in lines)
    assert said[0].startswith(f"video: {tmp_path / 'out.mp4'} as ") and said[-1].startswith("gcf-trt run: 24 frames")
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert sum(1 for _ in iter(lambda: cap.read()[0], False)) == 24
    cap.release()


def test_a_failed_run_removes_the_partial_video(tiny_engines, tmp_path):
    sink = VideoSink(tmp_path / "out.mp4")
    with pytest.raises(Exception, match="shorter than one clip"):
        LiveRun(RunConfig(sources=[str(write_video(tmp_path / "short.mp4", num_frames=2))], engines=tiny_engines),
                [sink], say=lambda s: None).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.mp4"]
