#!/usr/bin/env python3
"""Soak test: 4 live loopback camera streams for --minutes; RSS growth after warm-up, drops, gaps, errors.

Each stream is the whole camera-app path, as a long-running deployment runs it:

* a camera: an MJPEG-over-HTTP server on 127.0.0.1 (a thread of this process) serving a
  generated looped video (a square drifting over noise, different per stream) paced at
  ``--fps``, which **cuts the connection every ``--cut-every`` seconds** (a camera reboot, so the
  reconnect path - FFmpeg reopen, backoff, gap - runs many times during the soak);
* a reader thread: ``open_source(url)`` (FFmpeg decode thread + bounded ``drop_oldest`` queue,
  reconnect with backoff forever) -> ``StreamingClassifier(engines, threads=1).run()``.

Every ``--sample-seconds`` the process's RSS (``/proc/self/status`` VmRSS), open file
descriptors, threads and the per-stream counters are sampled.  RSS growth is measured after a
warm-up (ONNX Runtime's arena, FFmpeg's buffers and the queues reach their steady size first):
``growth_pct = (median of the last 3 samples - median of the first 3 after warm-up) / the latter``.
Target: <= 5 %.  Also reported: the linear RSS slope after warm-up (MB/hour), fd and thread
counts (a leak on reconnect shows there first), dropped frames, gaps, bad frames, errors.

    python benchmarks/soak.py                      # 20 minutes, default edge3d model (random weights)
    python benchmarks/soak.py --minutes 3 --quick  # tiny model
    python benchmarks/soak.py --engines engines/   # your engines

Without ``--engines`` a model is built in a *subprocess* (needs the torch extra), so this process
never imports torch and its RSS is the runtime's alone.  Writes benchmarks/results/soak.json
(or ``--out``); exit code 0 when the RSS target is met and no stream had an error, else 1.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import http.server
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines on every planned cut: noise here

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gcf_trt.manifest import write_json_atomic  # noqa: E402
from gcf_trt.runtime import Backoff, StreamingClassifier, open_source, redact  # noqa: E402

TARGET_GROWTH_PCT = 5.0


def build_engines_subprocess(quick: bool, work: Path) -> Path:
    """Random-weights FP32 ONNX Runtime engines, built in a process of its own so that this one
    never imports torch (its RSS is the runtime's alone)."""
    cmd = [sys.executable, "-m", "gcf_trt.bench.fixtures", str(work), "--runtime", "onnxruntime"]
    subprocess.run(cmd + (["--quick"] if quick else []), check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return work / "engines"


# ----------------------------------------------------------------------------- cameras
def camera_frames(stream: int, count: int, size: tuple[int, int]) -> list[bytes]:
    rng = np.random.default_rng(stream)
    w, h = size
    background = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    jpegs = []
    for i in range(count):
        frame = background.copy()
        x = int((i * 4 + stream * 17) % max(1, w - 24))
        cv2.rectangle(frame, (x, h // 3), (x + 24, h // 3 + 24), (40 + 50 * stream, 200, 250), -1)
        jpegs.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return jpegs


class LoopbackCamera:
    """MJPEG over HTTP on 127.0.0.1, paced at ``fps``, cutting each connection after ``cut_every`` s."""

    def __init__(self, jpegs: list[bytes], fps: float, cut_every: float | None):
        self.connections = 0
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start = time.monotonic()
                try:
                    for i in range(10 ** 9):
                        due = start + i / fps
                        if cut_every and due - start > cut_every:
                            return  # the camera reboots: connection closed
                        time.sleep(max(0.0, due - time.monotonic()))
                        jpg = jpegs[i % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="camera")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/cam.mjpg"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------- readers
class Reader(threading.Thread):
    """One camera app: source -> StreamingClassifier, reopened if anything raises (counted)."""

    def __init__(self, index: int, url: str, engines: Path, runtime: str | None, stop: threading.Event):
        super().__init__(daemon=True, name=f"reader-{index}")
        self.index, self.url, self.engines, self.runtime, self.stop = index, url, engines, runtime, stop
        self.predictions = 0
        self.errors: list[str] = []
        self.totals = {"frames": 0, "dropped": 0, "gaps": 0, "gap_seconds": 0.0, "bad_frames": 0}
        self.clf: StreamingClassifier | None = None
        self.source = None

    def counters(self) -> dict:
        live = self.clf.state if self.clf is not None else None
        out = dict(self.totals)
        if live is not None:
            out["frames"] += live.frames_seen
            out["dropped"] += live.dropped_frames
            out["gaps"] += len(live.gaps)
            out["gap_seconds"] += live.gap_seconds
            out["bad_frames"] += live.bad_frames
        out["gap_seconds"] = round(out["gap_seconds"], 2)
        return {"predictions": self.predictions, **out, "errors": len(self.errors)}

    def run(self) -> None:
        with StreamingClassifier(self.engines, runtime=self.runtime, options={"threads": 1},
                                 history_size=32) as clf:
            while not self.stop.is_set():
                self.clf = clf
                try:
                    self.source = open_source(self.url, reconnect=Backoff(initial=0.5, maximum=5.0, max_attempts=None),
                                              open_timeout_ms=5000, read_timeout_ms=5000)
                    for _ in clf.run(self.source):
                        self.predictions += 1
                        if self.stop.is_set():
                            break
                except Exception as exc:  # noqa: BLE001 - a soak counts every failure and carries on
                    self.errors.append(f"{type(exc).__name__}: {redact(str(exc))}"[:300])
                    time.sleep(1.0)
                finally:
                    if self.source is not None:
                        self.source.close()
                    state = clf.state
                    for key, value in (("frames", state.frames_seen), ("dropped", state.dropped_frames),
                                       ("gaps", len(state.gaps)), ("gap_seconds", state.gap_seconds),
                                       ("bad_frames", state.bad_frames)):
                        self.totals[key] += value
                    clf.reset()


# ----------------------------------------------------------------------------- measurement
def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(t, y, 1)[0] * 3600.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="soak duration (default 20)")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate of each camera (default 15)")
    parser.add_argument("--size", default="320x240", help="camera frame size WxH (default 320x240)")
    parser.add_argument("--cut-every", type=float, default=60.0,
                        help="each camera drops its connection every S seconds (0 = never; default 60)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the RSS growth (default 15%% of the run, 30..120 s)")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--engines", default=None, help="engines directory (default: build one in a subprocess)")
    parser.add_argument("--quick", action="store_true", help="without --engines: the bench's quick model (gcf_trt.bench.fixtures.QUICK_SPEC)")
    parser.add_argument("--runtime", default=None, help="force a runtime (onnxruntime, openvino)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    parser.add_argument("--verbose", action="store_true", help="log every reconnect")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(asctime)s %(name)s: %(message)s")
    duration = args.minutes * 60.0
    warmup = args.warmup if args.warmup is not None else min(120.0, max(30.0, 0.15 * duration))
    if duration < warmup + 3 * args.sample_seconds:
        parser.error(f"--minutes too short: need more than the warm-up ({warmup:.0f} s) plus 3 samples")
    w, h = (int(v) for v in args.size.lower().split("x"))

    tmp = None
    if args.engines:
        engines, model = Path(args.engines), "given"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gcf-soak-")
        print("building engines in a subprocess ...", flush=True)
        engines = build_engines_subprocess(args.quick, Path(tmp.name))
        model = "tiny (test suite)" if args.quick else "default edge3d, random weights"

    stop = threading.Event()
    cameras = [LoopbackCamera(camera_frames(i, 64, (w, h)), args.fps, args.cut_every or None)
               for i in range(args.streams)]
    readers = [Reader(i, cam.url, engines, args.runtime, stop) for i, cam in enumerate(cameras)]
    samples: list[dict] = []
    start = time.monotonic()
    for r in readers:
        r.start()
    try:
        next_sample = start
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - start, 1), "rss_mb": round(rss_mb(), 2), "fds": open_fds(),
                                "threads": threading.active_count(),
                                "streams": [r.counters() for r in readers]})
                last = samples[-1]
                print(f"t={last['t']:7.1f}s rss={last['rss_mb']:.1f} MB fds={last['fds']} threads={last['threads']} "
                      f"predictions={sum(s['predictions'] for s in last['streams'])} "
                      f"dropped={sum(s['dropped'] for s in last['streams'])} "
                      f"gaps={sum(s['gaps'] for s in last['streams'])} "
                      f"errors={sum(s['errors'] for s in last['streams'])}", flush=True)
                next_sample += args.sample_seconds
                if now - start >= duration:
                    break
            time.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
    finally:
        stop.set()
        for r in readers:
            r.join(timeout=30)
        for cam in cameras:
            cam.close()
    elapsed = time.monotonic() - start

    after = [s for s in samples if s["t"] >= warmup]
    base = statistics.median(s["rss_mb"] for s in after[:3])
    end = statistics.median(s["rss_mb"] for s in after[-3:])
    growth = (end - base) / base * 100.0
    streams = []
    for r in readers:
        c = r.counters()
        streams.append({"stream": r.index, **c, "camera_connections": cameras[r.index].connections,
                        "last_errors": r.errors[-3:]})
    errors = sum(s["errors"] for s in streams)
    first_after = after[0]
    result = {
        "what": "soak: live loopback MJPEG cameras -> open_source -> StreamingClassifier, RSS after warm-up",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {"minutes": args.minutes, "streams": args.streams, "fps": args.fps, "size": [w, h],
                   "cut_every_s": args.cut_every, "warmup_s": warmup, "sample_seconds": args.sample_seconds,
                   "model": model, "runtime": args.runtime or "manifest", "threads_per_stream": 1},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_end": os.getloadavg()},
        "torch_imported": "torch" in sys.modules,
        "duration_s": round(elapsed, 1),
        "rss_mb": {"start": samples[0]["rss_mb"], "after_warmup": round(base, 2), "end": round(end, 2),
                   "max_after_warmup": max(s["rss_mb"] for s in after),
                   "growth_pct": round(growth, 2),
                   "slope_mb_per_hour_after_warmup": None if (s := slope_per_hour(
                       [(x["t"], x["rss_mb"]) for x in after])) is None else round(s, 2)},
        "target_rss_growth_pct": TARGET_GROWTH_PCT,
        "fds": {"after_warmup": first_after["fds"], "end": samples[-1]["fds"]},
        "threads": {"after_warmup": first_after["threads"], "end": samples[-1]["threads"]},
        "totals": {key: sum(s[key] for s in streams)
                   for key in ("predictions", "frames", "dropped", "gaps", "bad_frames", "errors")},
        "streams": streams,
        "pass": bool(growth <= TARGET_GROWTH_PCT and errors == 0 and all(s["predictions"] > 0 for s in streams)),
        "samples": samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(f"RSS {base:.1f} -> {end:.1f} MB after warm-up ({growth:+.2f} %, target <= {TARGET_GROWTH_PCT} %), "
          f"{result['totals']['predictions']} predictions, {result['totals']['dropped']} dropped frames, "
          f"{result['totals']['gaps']} gaps, {errors} errors in {elapsed / 60:.1f} min -> {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
