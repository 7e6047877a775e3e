"""Real servers for the live tests, on 127.0.0.1 only: mosquitto, GStreamer's RTSP server, an
MJPEG-over-HTTP camera, and a `gcf-trt run` process.  A missing binary is a skip with the reason (`.ci/run` installs them via
scripts/ci_system_packages.sh); every wait is bounded in count and time."""
from __future__ import annotations

import http.server
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

LOOPBACK = "127.0.0.1"
HERE = Path(__file__).resolve().parent
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


class Mosquitto:
    """Debian's mosquitto broker on a loopback port (anonymous, no persistence)."""

    def __init__(self, tmp: Path, port: int | None = None):
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; scripts/ci_system_packages.sh)")
        self.port = port or free_port()
        self.conf = tmp / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_port(self.port), "mosquitto did not start listening"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class Subscriber:
    """A real MQTT subscriber (paho) that collects the JSON payloads of one topic."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt
        self.messages: list[dict] = []
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self._client.on_message = lambda c, u, m: self.messages.append(__import__("json").loads(m.payload))
        self._client.connect(LOOPBACK, port)
        self._client.loop_start()
        deadline = time.monotonic() + 5
        while not self._client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the SUBACK

    def wait(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def system_python_with_rtsp_server() -> str:
    """The system python3 that has PyGObject and gst-rtsp-server, or skip."""
    exe = "/usr/bin/python3"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer")
    if not os.access(exe, os.X_OK) or subprocess.run([exe, "-c", probe], capture_output=True).returncode != 0:
        pytest.skip("GStreamer's RTSP server is not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-plugins-good; scripts/ci_system_packages.sh)")
    return exe


class RtspServer:
    """tests/live/rtsp_server.py (gst-rtsp-server) on a loopback port; stop() cuts it, start() restarts it."""

    def __init__(self, port: int | None = None, protocols: str = "tcp+udp"):
        self.python = system_python_with_rtsp_server()
        self.port = port or free_port()
        self.protocols = protocols
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://{LOOPBACK}:{self.port}/live"

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([self.python, str(HERE / "rtsp_server.py"), str(self.port), "120", self.protocols],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)  # the first line: nothing buffered yet
        line = self.proc.stdout.readline() if ready else "(nothing within 20 s)"
        if line.strip() != "READY":
            self.stop()
            raise AssertionError(f"RTSP server did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc.stdout.close()
            self.proc = None


class GcfRun:
    """`gcf-trt run ...` as a subprocess whose stderr a thread collects line by line, so every
    wait on it is bounded in time (a silent, hung process cannot block a test)."""

    def __init__(self, *argv: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "gcf_trt.cli", "run", *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self):
        return self.proc.poll()

    def wait_line(self, pattern: str, timeout: float = 120.0) -> re.Match:
        """The first stderr line matching ``pattern`` (re.match), waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.match(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no stderr line matching {pattern!r}; stderr: {chr(10).join(self.lines)}")

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM (if still running), wait; returns (exit code, the whole stderr)."""
        stop(self.proc, timeout=timeout)
        self._reader.join(timeout=timeout)
        self.proc.stderr.close()
        return self.proc.returncode, "\n".join(self.lines)


def gcf_run(*argv: str, **kwargs) -> subprocess.Popen:
    """`gcf-trt run ...` as a subprocess that runs to its end (stdout/stderr piped, text)."""
    return subprocess.Popen([sys.executable, "-m", "gcf_trt.cli", "run", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}, **kwargs)


# ----------------------------------------------------------------------------- MJPEG camera

def send_mjpeg(handler: "http.server.BaseHTTPRequestHandler", jpegs: list[bytes]) -> None:
    """Answer one GET with an MJPEG (multipart/x-mixed-replace) stream of ``jpegs``, ~200 fps."""
    handler.send_response(200)
    handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
    handler.end_headers()
    try:
        for jpg in jpegs:
            handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                % len(jpg) + jpg + b"\r\n")
            time.sleep(0.005)
    except (BrokenPipeError, ConnectionResetError):  # the client hung up: the camera "cut"
        pass

class LoopbackHttpServer:
    """A threading HTTP server on 127.0.0.1 (a free port) for a handler class; a context manager
    that serves in a daemon thread and shuts down, closes and joins on exit."""

    def __init__(self, handler: type) -> None:
        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class MjpegServer(LoopbackHttpServer):
    """multipart/x-mixed-replace JPEG stream on 127.0.0.1.

    Connection k (0-based) < ``sessions`` serves ``frames_per_session`` frames and then cuts
    the connection (a camera dropping); later connections get 503 (the camera is gone).
    """

    def __init__(self, frames_per_session: int = 12, sessions: int = 2):
        self.connections = 0
        jpegs = []
        for i in range(frames_per_session):
            frame = np.zeros((48, 64, 3), np.uint8)
            cv2.rectangle(frame, (i * 4, 10), (i * 4 + 10, 20), (40, 200, 250), -1)
            jpegs.append(cv2.imencode(".jpg", frame)[1].tobytes())
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                session = server.connections
                server.connections += 1
                if session >= sessions:
                    self.send_error(503)
                    return
                send_mjpeg(self, jpegs)

        super().__init__(Handler)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
