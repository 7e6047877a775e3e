"""Security: checkpoints never run code, engine files are hash-checked at load, no shell ever sees
user input, credentials in stream URLs never reach output or logs.

Elsewhere: a checkpoint pickle with code is refused and not run
(``tests/compile/test_model.py::test_checkpoint_with_code_is_refused_not_run``; through the CLI in
``tests/test_bad_inputs.py``), ``redact`` (``tests/runtime/test_sources.py::test_redact``), the password of
a live HTTP camera absent from ``gcf-trt run``'s stdout/stderr
(``tests/commands/test_run_cli.py::test_stream_gap_credentials_and_no_torch``).
"""
from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gcf_trt.errors import EngineError, SourceError
from gcf_trt.runtime import Backoff, load_engines, open_source
from tests.conftest import write_video
from tests.live.helpers import MjpegServer

ROOT = Path(__file__).resolve().parents[1]
SECRET = "pa55-s3cret"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def python_files() -> list[Path]:
    files = []
    for folder in ("gcf_trt", "benchmarks", "examples", "scripts"):
        files += sorted((ROOT / folder).rglob("*.py"))
    assert len(files) > 20
    return files


# ----------------------------------------------------------------------------- checkpoints
def test_every_torch_load_uses_weights_only():
    """Every torch.load in the package passes weights_only=True (so a pickle cannot run code)."""
    calls = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert any(name.startswith("gcf_trt/compile/model.py") for name, _ in calls)  # load_checkpoint is seen
    assert [name for name, ok in calls if not ok] == []


# ----------------------------------------------------------------------------- engine files
@pytest.mark.parametrize("victim", ["backbone.onnx", "head.onnx"])
def test_tampered_engine_file_is_refused(victim, tiny_engines, tmp_path):
    """One byte changed in a weight: still a valid model (it loads without the check), but the
    hash in the manifest refuses it, through the API and through `gcf-trt run`."""
    eng = shutil.copytree(tiny_engines, tmp_path / "eng")
    onnx = pytest.importorskip("onnx")
    data = bytearray((eng / victim).read_bytes())
    weights = max(onnx.load(str(eng / victim)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = data.find(weights)
    assert len(weights) > 16 and at > 0
    data[at + len(weights) // 2] ^= 0x01  # one bit of one weight: the graph still parses
    (eng / victim).write_bytes(bytes(data))
    with load_engines(eng, verify=False):
        pass  # a silently altered model would have run
    with pytest.raises(EngineError, match=f"{victim} does not match the hash in the manifest"):
        load_engines(eng)
    video = write_video(tmp_path / "v.mp4", num_frames=8)
    proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", "run", str(video), "--engines", str(eng)],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"error[engine]: {eng / victim} does not match the hash" in proc.stderr


def test_manifest_cannot_point_outside_the_engines_dir(tiny_engines, tmp_path):
    eng = shutil.copytree(tiny_engines, tmp_path / "eng")
    shutil.copy(eng / "head.onnx", tmp_path / "elsewhere.onnx")
    manifest = json.loads((eng / "manifest.json").read_text())
    manifest["components"]["head"]["file"] = "../elsewhere.onnx"
    manifest["files"]["../elsewhere.onnx"] = manifest["files"]["head.onnx"]
    (eng / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="not a file inside the engines directory"):
        load_engines(eng)


# ----------------------------------------------------------------------------- no shell
def test_no_shell_anywhere():
    """No os.system / os.popen / shell=True: user input (paths, URIs) never reaches a shell."""
    found = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
                    (func.value.id, func.attr) in {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
                                                   ("subprocess", "getstatusoutput")}:
                found.append(f"{where} {func.value.id}.{func.attr}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where} shell=")
    assert found == []


@pytest.mark.parametrize("source", ["x.mp4; touch PWNED", "$(touch PWNED).mp4", "`touch PWNED`.mp4",
                                    "rtsp://127.0.0.1:1/$(touch PWNED)"])
def test_shell_metacharacters_are_just_characters(source, tiny_engines, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", "run", source, "--engines", str(tiny_engines),
                           "--reconnect-attempts", "1"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=ENV)
    assert proc.returncode == 1 and "error[source]" in proc.stderr
    assert not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------------------- credentials
def test_credentials_never_reach_output_files_or_logs(tiny_engines, tmp_path):
    """A live camera with user:password in its URL, --verbose (debug logs and FFmpeg's own
    messages on), JSON lines and an annotated video: the password is nowhere."""
    jsonl = tmp_path / "p.jsonl"
    with MjpegServer(frames_per_session=12, sessions=1) as server:
        url = server.url(f"viewer:{SECRET}@") + f"?token={SECRET}&channel=1"
        proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", "--verbose", "run", url, "--engines",
                               str(tiny_engines), "--jsonl", str(jsonl), "--output", str(tmp_path / "out.avi"),
                               "--reconnect-attempts", "1", "--reconnect-max-delay", "0.1"],
                              capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 1, proc.stderr  # the camera went away after 12 frames: bounded retries
    assert len(jsonl.read_text().splitlines()) == 3  # it did stream
    assert "DEBUG" in proc.stderr and "gap" not in proc.stdout  # debug logging was on
    everything = proc.stdout + proc.stderr + jsonl.read_text()
    assert SECRET not in everything
    assert f"http://***@127.0.0.1:{server.httpd.server_address[1]}/stream.mjpg?token=***" in proc.stderr
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert SECRET.encode() not in written
    # the run ended in an error: the partial annotated video was discarded, no temp file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_credentials_never_reach_log_records(caplog):
    """In-process: every log record of a stream that drops and reconnects is redacted."""
    caplog.set_level(logging.DEBUG)
    with MjpegServer(frames_per_session=4, sessions=1) as server:
        src = open_source(server.url(f"admin:{SECRET}@"), reconnect=Backoff(initial=0.05, max_attempts=1),
                          open_timeout_ms=3000, read_timeout_ms=3000)
        with pytest.raises(SourceError) as err:
            list(src)
        src.close()
    assert caplog.records and any("reconnecting" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text and SECRET not in str(err.value) and SECRET not in repr(src)
