"""``gcf-trt run``: JSON lines, annotated video, summary, errors, SIGTERM, credentials, no torch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest

from gcf_trt.cli import main
from tests.conftest import write_video
from tests.live.helpers import MjpegServer

NUM_FRAMES = 24  # 6 clips with the tiny spec (clip_len = stride = 4)


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def run_cli(*argv: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gcf_trt.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": os.getcwd()}, **kwargs)


def test_run_writes_json_lines_and_summary(calibrated_engines, video_file, capsys):
    assert main(["run", str(video_file), "--engines", str(calibrated_engines), "--top-k", "2"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [p["clip_index"] for p in lines] == list(range(NUM_FRAMES // 4))
    assert lines[-1]["frame_range"] == [8, 23] and len(lines[-1]["gates"]) == 4
    assert all(len(p["top_k"]) == 2 and p["label"] == p["top_k"][0][0] for p in lines)
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"gcf-trt run: {NUM_FRAMES} frames, 6 clips,")
    assert "0 bad frames, 0 dropped frames, 0 gaps" in summary


def test_run_jsonl_output_video_and_max_frames(calibrated_engines, video_file, tmp_path, capsys):
    jsonl, video = tmp_path / "preds.jsonl", tmp_path / "annotated.mp4"
    assert main(["run", f"file://{video_file}", "--engines", str(calibrated_engines), "--jsonl", str(jsonl),
                 "--output", str(video), "--max-frames", "10"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert [json.loads(line)["clip_index"] for line in jsonl.read_text().splitlines()] == [0, 1]
    assert count_frames(video) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "clip.mp4", "preds.jsonl"]  # no temp
    assert "10 frames, 2 clips" in err
    # The codec is named (H.264 where this machine has an encoder; else which one and why).
    assert f"video: {video} as " in err and ("H264 (" in err or "no H.264 encoder" in err)


def test_run_errors_exit_1(calibrated_engines, video_file, tmp_path, capsys):
    assert main(["run", str(video_file), "--engines", str(calibrated_engines), "--expect-model-hash", "0" * 16]) == 1
    assert main(["run", "ftp://user:s3cret@host/v.mp4", "--engines", str(calibrated_engines)]) == 1
    assert main(["run", str(video_file), "--engines", str(tmp_path)]) == 1
    assert main(["run", str(tmp_path / "missing.mp4"), "--engines", str(calibrated_engines)]) == 1
    assert main(["run", str(video_file), "--engines", str(calibrated_engines), "--output", str(tmp_path / "x.gif")]) == 1
    err = capsys.readouterr().err
    assert "error[source]: unknown source scheme 'ftp://'" in err and "s3cret" not in err
    assert "error[engine]:" in err and "no manifest.json" in err
    assert "error[source]:" in err and "does not exist" in err
    assert "unsupported extension '.gif'" in err
    assert "was built for model" in err and "0000000000000000" in err
    assert err.count("hint:") == 5


def test_show_without_display_is_a_clear_error(calibrated_engines, video_file, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["run", str(video_file), "--engines", str(calibrated_engines), "--show"]) == 1
    err = capsys.readouterr().err
    assert "--show needs" in err and "--output" in err


def test_sigterm_flushes_lines_and_finishes_video(calibrated_engines, tmp_path):
    """A looping file runs until SIGTERM; every line written is whole, the video is finalised."""
    video_in = write_video(tmp_path / "in.mp4", num_frames=16)
    jsonl, video_out = tmp_path / "p.jsonl", tmp_path / "out.avi"
    proc = subprocess.Popen([sys.executable, "-m", "gcf_trt.cli", "run", str(video_in), "--engines",
                             str(calibrated_engines), "--loop", "--jsonl", str(jsonl), "--output", str(video_out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not jsonl.exists() or jsonl.read_text().count("\n") < 8):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = jsonl.read_text().splitlines()
    assert len(lines) >= 8 and all(json.loads(line)["label"] for line in lines)
    assert [json.loads(line)["clip_index"] for line in lines] == list(range(len(lines)))
    assert "stopped by SIGTERM" in err.strip().splitlines()[-1]
    assert count_frames(video_out) >= 4 * len(lines)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp renamed away


def test_stream_gap_credentials_and_no_torch(calibrated_engines):
    """An HTTP MJPEG camera that drops once: the gap is reported, the password never printed,
    and the whole `gcf-trt run` process never imports torch."""
    code = ("import sys, runpy\n"
            "sys.argv = ['gcf-trt'] + sys.argv[1:]\n"
            "from gcf_trt.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
            "sys.exit(rc)\n")
    with MjpegServer(frames_per_session=12, sessions=2) as server:
        proc = subprocess.run([sys.executable, "-c", code, "run", server.url("viewer:s3cret@"),
                               "--engines", str(calibrated_engines), "--reconnect-attempts", "2",
                               "--reconnect-max-delay", "0.2"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    out, err = proc.stdout, proc.stderr
    assert "s3cret" not in out + err
    assert err.strip().splitlines()[-1] == "NO-TORCH"
    # The camera comes back once (a gap), then stays down: bounded retries, then a clear error.
    assert proc.returncode == 1, err
    assert "gap: http://***@127.0.0.1" in err and "error[source]: live source" in err
    summary = next(line for line in err.splitlines() if line.startswith("gcf-trt run:"))
    assert "24 frames" in summary and "1 gaps" in summary
    assert len(out.splitlines()) >= 4  # clips before and after the gap


@pytest.fixture(scope="module")
def demo_engines(tmp_path_factory):
    """FP32 engines of the bundled, trained demo model (gates mean something on it)."""
    pytest.importorskip("torch")
    from importlib.resources import files
    from gcf_trt.compile.build import build_engines
    out = tmp_path_factory.mktemp("demo") / "engines"
    build_engines(str(files("gcf_trt") / "assets" / "demo.pt"), out, precision="fp32", runtime="onnxruntime")
    return out


def test_run_reports_action_segments(demo_engines, tmp_path):
    """`gcf-trt run` turns the gates into action segments: completed ones ride on the prediction
    lines, and the stream's segments end the stderr report; they match the generated truth."""
    from gcf_trt.data import plan_video, render_video, write_video as write_generated
    from gcf_trt.segments import temporal_iou

    plan = plan_video(7, 0)  # a 'bounce' whose action covers frames 32..80 of 104
    video = write_generated(tmp_path / "action.mp4", render_video(plan))
    proc = run_cli("run", str(video), "--engines", str(demo_engines))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(isinstance(p["segments_completed"], list) for p in lines)
    seg_line = [line for line in proc.stderr.splitlines() if "action segments" in line]
    assert len(seg_line) == 1, proc.stderr
    spans = [tuple(int(v) for v in part.split(" ")[0].split("-"))
             for part in seg_line[0].split("(frames): ")[1].split(", ")]
    best = max(temporal_iou(span, (plan.start, plan.end)) for span in spans)
    assert best >= 0.5, (spans, plan.start, plan.end)
    assert lines[-1]["label"] == plan.label_name


def test_bad_flags_are_one_line_naming_the_flag(tmp_path, video_file):
    """Each bad value: exit 1, one error line naming the flag (not the Python parameter), one hint,
    no traceback - and before any engine loads (the engines dir here does not even exist)."""
    import socket
    missing = str(tmp_path / "no-engines")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        cases = [(["--top-k", "0"], "error[input]: --top-k must be >= 1, got 0"),
                 (["--max-frames", "0"], "error[input]: --max-frames must be >= 1, got 0"),
                 (["--fps", "-2"], "error[input]: --fps must be > 0, got -2"),
                 (["--threads", "x"], "error[input]: --threads takes an integer, got 'x'"),
                 (["--reconnect-max-delay", "0"], "error[input]: --reconnect-max-delay must be > 0, got 0"),
                 (["--serve", "localhost:port"], "error[input]: --serve 'localhost:port' is not HOST:PORT"),
                 (["--serve", f"127.0.0.1:{busy}"], f"error[output]: --serve cannot listen on 127.0.0.1:{busy}"),
                 (["--events", "kafka://broker/t"], "error[input]: --events kafka://broker/t: unknown scheme"),
                 (["--transport", "tcp"], "error[input]: an RTSP transport applies to rtsp:// sources")]
        for flags, expected in cases:
            proc = run_cli("run", str(video_file), "--engines", missing, *flags, timeout=60)
            err = proc.stderr.strip().splitlines()
            assert proc.returncode == 1, (flags, proc.stderr)
            assert err[0].startswith(expected), (flags, err)
            assert len(err) == 2 and err[1].startswith("hint: "), (flags, err)
            assert "Traceback" not in proc.stderr and "top_k" not in proc.stderr


def test_quiet_keeps_results_and_warnings_only(calibrated_engines, video_file, tmp_path, capsys):
    from gcf_trt.runtime.sinks import choose_codec
    video = tmp_path / "q.mp4"
    assert main(["run", str(video_file), "--engines", str(calibrated_engines), "--output", str(video),
                 "--jsonl", str(tmp_path / "p.jsonl"), "--events", str(tmp_path / "e.jsonl"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "events:" not in err
    # H.264 is only a note; a fallback codec is a warning that -q keeps.
    assert ("video:" in err) == bool(choose_codec(".mp4").why)
    assert err.strip().splitlines()[-1].startswith(f"gcf-trt run: {NUM_FRAMES} frames")
