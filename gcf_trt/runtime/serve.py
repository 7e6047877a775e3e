"""``gcf-trt run ... --serve HOST:PORT``: a live web view of the running streams.

One page (``/``) shows per stream the annotated video (MJPEG, which every browser plays in an
``<img>``), the current label and score, the gates of the ring and a timeline of the newest
clip's gate, the completed action segments and the stream's health (fps, latency, drops,
gaps, reconnects).  Endpoints:

==================  ==========================================================
``/``               the page
``/events``         Server-Sent Events: ``state`` (once), ``prediction``, ``segment``, ``gap``, ``health`` (1/s)
``/stream/N.mjpg``  stream N's annotated frames (``multipart/x-mixed-replace``)
``/snapshot/N.jpg`` stream N's latest annotated frame
``/api/state``      streams, health, latest predictions and segments as JSON
``/healthz``        ``{"status": "ok", ...}`` while the run is going
``/metrics``        Prometheus text format (:mod:`gcf_trt.runtime.metrics`)
==================  ==========================================================

Serving never slows inference: the inference thread only keeps a reference to each stream's
latest frame and puts small JSON events into per-viewer queues; one encoder thread draws and
JPEG-encodes at most ``max_fps`` frames per second per watched stream; an MJPEG viewer always
gets the newest JPEG (one per stream is kept, however slow the viewer), an SSE viewer's queue is
bounded and drops its oldest events when full, a stalled socket times out, and a viewer that
disconnects mid-stream just ends its own handler thread.  Built on the standard library's
``ThreadingHTTPServer``.  Source URIs appear only redacted (no credentials).  The server binds
127.0.0.1 unless told otherwise, and says at start who can reach it.  Nothing here imports torch.
"""
from __future__ import annotations

import collections
import http.server
import ipaddress
import json
import queue
import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import InputError, OutputError
from .metrics import Metrics
from .sinks import Sink

if TYPE_CHECKING:
    from .sinks import PredictionEvent, RunView, SegmentEvent
    from .sources import SourceFrame, SourceGap
    from .stream import Prediction

EVENT_QUEUE = 256     # events per SSE viewer before its oldest are dropped
SOCKET_TIMEOUT = 10   # seconds a viewer's socket may block a write before it is dropped


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6."""
    match = re.fullmatch(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*))?:?(?P<port>\d+)", text.strip())
    if not match:
        raise InputError(f"--serve {text!r} is not HOST:PORT", hint="e.g. --serve 127.0.0.1:8080 (PORT 0: any free port)")
    host = match.group("v6") or match.group("host") or "127.0.0.1"
    port = int(match.group("port"))
    if port > 65535:
        raise InputError(f"--serve port {port} is out of range", hint="use a port in 0..65535 (0: any free port)")
    return host, port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Viewer:
    """One SSE viewer: a bounded queue of encoded events; full -> the oldest is dropped."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes] = queue.Queue(maxsize=EVENT_QUEUE)
        self.dropped = 0

    def offer(self, data: bytes) -> None:
        try:
            self.queue.put_nowait(data)
        except queue.Full:
            try:
                self.queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            try:
                self.queue.put_nowait(data)
            except queue.Full:
                self.dropped += 1


class _StreamView:
    """What the page needs of one stream; written by the run, read by the encoder/handlers."""

    def __init__(self) -> None:
        self.frame: Any = None          # latest SourceFrame (a reference, not a copy)
        self.frame_seq = 0
        self.latest: Any = None         # latest Prediction
        self.jpeg: bytes | None = None
        self.jpeg_seq = 0
        self.encoded_seq = -1
        self.watchers = 0               # MJPEG viewers now
        self.frames_sent = 0
        self.segments: collections.deque[dict] = collections.deque(maxlen=50)


def _compact(event: "PredictionEvent") -> dict[str, Any]:
    r = event.record
    return {"stream": event.stream, "clip_index": r["clip_index"], "action": r["action"], "label": r["label"],
            # The page then shows "no action 0.97", as the overlay does, not "no action (no action 0.97)".
            "no_action_class": event.prediction.predicts_no_action_class,
            "score": r["score"], "top_k": r["top_k"], "frame_range": r["frame_range"], "stream_time_s": r.get("stream_time_s"),
            "wall_time": r.get("wall_time"), "latency_ms": r["latency_ms"],
            "gates": [{"clip_index": g["clip_index"], "gate": g["gate"], "selected": g["selected"]} for g in r["gates"]]}


class LiveServer(Sink):
    """The web view as a sink of a :class:`~gcf_trt.runtime.pipeline.LiveRun`.

    Args:
        address: ``HOST:PORT`` (default host 127.0.0.1; PORT 0 picks a free port, see :attr:`url`).
        max_fps: most JPEG frames encoded per second per watched stream.
        max_width: frames wider than this are scaled down before encoding.
        jpeg_quality: 1..100.
        max_viewers: concurrent streaming connections (MJPEG + SSE); more get 503.
    """

    wants_frames = True

    def __init__(self, address: str = "127.0.0.1:8080", *, max_fps: float = 10.0, max_width: int = 640,
                 jpeg_quality: int = 75, max_viewers: int = 16):
        host, port = parse_address(address)
        if not max_fps > 0:
            raise InputError(f"--serve-fps must be > 0, got {max_fps}")
        self.max_fps, self.max_width, self.jpeg_quality = float(max_fps), int(max_width), int(jpeg_quality)
        self.max_viewers = int(max_viewers)
        self.metrics = Metrics(extra=self._extra_metrics)
        self._views: list[_StreamView] = []
        self._viewers: set[_Viewer] = set()
        self._active = 0
        self._lock = threading.Lock()
        self._new_jpeg = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._run: "RunView | None" = None
        self._threads: list[threading.Thread] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        handler = type("Handler", (_Handler,), {"live": self})
        server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family,
                                                                          "daemon_threads": True})
        try:
            self.httpd = server_class((host, port), handler)
        except OSError as exc:
            raise OutputError(f"--serve cannot listen on {host}:{port}: {exc.strerror}",
                              hint="pick another port (0: any free port) or stop what holds it") from None
        self.host, self.port = host, self.httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"

    # --- sink hooks (inference / reader threads: cheap) --------------------------------------
    def start(self, run: "RunView") -> None:
        self._run = run
        self.metrics.start(run)
        self._views = [_StreamView() for _ in run.streams]
        if _is_loopback(self.host):
            run.say(f"live view: {self.url} (bound to {self.host}: only this machine can connect; "
                    f"--serve 0.0.0.0:{self.port} exposes it)")
        else:
            run.say(f"live view: {self.url} (bound to {self.host}: reachable from other machines, "
                    f"without authentication)")
        for target, name in ((self.httpd.serve_forever, "gcf-serve-http"), (self._encode_loop, "gcf-serve-encoder")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def frame(self, stream: int, frame: "SourceFrame", latest: "Prediction | None") -> None:
        view = self._views[stream]
        view.frame, view.latest = frame, latest
        view.frame_seq += 1

    def prediction(self, event: "PredictionEvent") -> None:
        self.metrics.prediction(event)
        self._views[event.stream].latest = event.prediction
        self._publish("prediction", _compact(event))

    def segment(self, event: "SegmentEvent") -> None:
        record = event.to_dict()
        self._views[event.stream].segments.append(record)
        self._publish("segment", record)

    def gap(self, stream: int, gap: "SourceGap") -> None:
        self._publish("gap", {"stream": stream, "seconds": round(gap.seconds, 3), "frames_missed": gap.frames_missed,
                              "attempts": gap.attempts})

    def close(self, ok: bool) -> None:
        self._stop.set()
        with self._new_jpeg:
            self._new_jpeg.notify_all()
        if self._threads:
            self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # --- state for the handlers ----------------------------------------------------------------
    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        payload = f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
        with self._lock:
            viewers = list(self._viewers)
        for viewer in viewers:
            viewer.offer(payload)

    def _extra_metrics(self) -> dict[int, dict[str, float]]:
        return {i: {"live_frames_sent": v.frames_sent} for i, v in enumerate(self._views)}

    def state(self) -> dict[str, Any]:
        """Streams with their health, latest prediction and segments (what ``/api/state`` returns)."""
        run = self._run
        streams = []
        if run is not None:
            for i, view in enumerate(self._views):
                p = view.latest
                streams.append({**run.health(i), "ring_size": run.spec.ring_size,
                                "prediction": None if p is None else {
                                    "clip_index": p.clip_index, "action": p.action, "label": p.label,
                                    "no_action_class": p.predicts_no_action_class,
                                    "score": round(float(p.score), 4),
                                    "gates": [{"clip_index": g.clip_index, "gate": round(float(g.gate), 4),
                                               "selected": g.selected} for g in p.gates]},
                                "segments": list(view.segments)})
        return {"streams": streams, "running": run is not None and not self._stop.is_set()}

    # --- the encoder thread --------------------------------------------------------------------
    def _encode_loop(self) -> None:
        period = 1.0 / self.max_fps
        next_health = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            for view in self._views:
                if view.watchers and view.frame is not None and view.frame_seq != view.encoded_seq:
                    self._encode(view)
            if started >= next_health and self._run is not None:
                next_health = started + 1.0
                for i in range(len(self._views)):
                    self._publish("health", self._run.health(i))
            self._stop.wait(max(0.0, period - (time.monotonic() - started)))

    def _encode(self, view: _StreamView) -> bool:
        import cv2
        from .sinks import _annotate
        seq, frame, latest = view.frame_seq, view.frame, view.latest
        if frame is None:
            return False
        canvas = _annotate(frame, latest, self._run.spec.ring_size if self._run else 0)
        if canvas is None:
            return False
        h, w = canvas.shape[:2]
        if w > self.max_width:
            canvas = cv2.resize(canvas, (self.max_width, int(round(h * self.max_width / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            return False
        with self._new_jpeg:
            view.jpeg, view.encoded_seq = buf.tobytes(), seq
            view.jpeg_seq += 1
            self._new_jpeg.notify_all()
        return True

    def _enter(self) -> bool:
        with self._lock:
            if self._active >= self.max_viewers:
                return False
            self._active += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1


class _Handler(http.server.BaseHTTPRequestHandler):
    live: LiveServer
    timeout = SOCKET_TIMEOUT  # a stalled viewer's socket: writes give up, the thread ends
    server_version = "gcf-trt"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no access log on stderr
        pass

    def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, code: int = 200) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        live, path = self.live, self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/healthz":
                state = live.state()
                self._json({"status": "ok" if state["running"] else "stopping",
                            "streams": [{k: s[k] for k in ("stream", "source", "fps", "frames", "clips", "gaps")}
                                        for s in state["streams"]]}, 200 if state["running"] else 503)
            elif path == "/metrics":
                body, content_type = live.metrics.render()
                self._send(200, body, content_type)
            elif path == "/api/state":
                self._json(live.state())
            elif path == "/events":
                self._events()
            elif (m := re.fullmatch(r"/stream/(\d+)\.mjpg", path)):
                self._mjpeg(int(m.group(1)))
            elif (m := re.fullmatch(r"/snapshot/(\d+)\.jpg", path)):
                self._snapshot(int(m.group(1)))
            else:
                self._send(404, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError, socket.timeout, TimeoutError):
            self.close_connection = True  # the viewer went away or stalled: harmless

    def _view(self, index: int) -> _StreamView | None:
        views = self.live._views
        if 0 <= index < len(views):
            return views[index]
        self._send(404, b"no such stream\n", "text/plain")
        return None

    def _snapshot(self, index: int) -> None:
        view = self._view(index)
        if view is None:
            return
        if view.jpeg is None and not self.live._encode(view):
            self._send(503, b"no frame yet\n", "text/plain", {"Retry-After": "1"})
            return
        self._send(200, view.jpeg, "image/jpeg")

    def _mjpeg(self, index: int) -> None:
        live = self.live
        view = self._view(index)
        if view is None:
            return
        if not live._enter():
            self._send(503, b"too many viewers\n", "text/plain", {"Retry-After": "5"})
            return
        with live._lock:
            view.watchers += 1
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=gcfframe")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            sent = -1
            while not live._stop.is_set():
                with live._new_jpeg:
                    if view.jpeg_seq == sent:
                        live._new_jpeg.wait(1.0)
                    if view.jpeg_seq == sent or view.jpeg is None:
                        continue
                    jpeg, sent = view.jpeg, view.jpeg_seq
                # Written outside the lock: a slow viewer holds up only itself, and skips frames.
                self.wfile.write(b"--gcfframe\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
                view.frames_sent += 1
        finally:
            with live._lock:
                view.watchers -= 1
            live._leave()

    def _events(self) -> None:
        live = self.live
        if not live._enter():
            self._send(503, b"too many viewers\n", "text/plain", {"Retry-After": "5"})
            return
        viewer = _Viewer()
        with live._lock:
            live._viewers.add(viewer)
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(f"retry: 2000\nevent: state\ndata: {json.dumps(live.state())}\n\n".encode())
            self.wfile.flush()
            while not live._stop.is_set():
                try:
                    data = viewer.queue.get(timeout=1.0)
                except queue.Empty:
                    data = b": keep-alive\n\n"  # also how a closed tab is noticed
                self.wfile.write(data)
                self.wfile.flush()
        finally:
            with live._lock:
                live._viewers.discard(viewer)
            live._leave()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gcf-trt live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:16px;background:#111;color:#eee}
h1{font-size:18px;margin:0 0 12px} .grid{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#1c1c1c;border-radius:8px;padding:12px;width:480px}
.card img{width:100%;background:#000;border-radius:4px;min-height:120px}
.label{font-size:22px;font-weight:600;margin:8px 0 2px} .score{color:#9c9} .label.idle{color:#888} .label.idle .score{color:#888;font-weight:400}
.src{color:#999;font-size:12px;word-break:break-all} .health{font-size:12px;color:#bbb;margin-top:6px}
canvas{width:100%;background:#000;border-radius:4px;margin-top:6px} .seg{font-size:12px;color:#cdf}
.status{font-size:12px;color:#888}
</style></head><body>
<h1>gcf-trt live <span class="status" id="status">connecting...</span></h1>
<div class="grid" id="grid"></div>
<script>
"use strict";
const cards = {};
function el(tag, cls, parent) { const e = document.createElement(tag); if (cls) e.className = cls; parent.appendChild(e); return e; }
function card(s) {
  if (cards[s.stream]) return cards[s.stream];
  const c = el("div", "card", document.getElementById("grid")); c.id = "stream-" + s.stream;
  const src = el("div", "src", c); src.textContent = "stream " + s.stream + ": " + s.source;
  const img = el("img", "", c); img.id = "video-" + s.stream; img.alt = "stream " + s.stream; img.src = "/stream/" + s.stream + ".mjpg";
  const label = el("div", "label", c); label.id = "label-" + s.stream; label.textContent = "waiting for the first clip";
  label.dataset.clip = "-1"; label.dataset.updates = "0";
  const ring = el("canvas", "", c); ring.id = "ring-" + s.stream; ring.width = 460; ring.height = 60;
  const tl = el("canvas", "", c); tl.id = "timeline-" + s.stream; tl.width = 460; tl.height = 60; tl.dataset.points = "0";
  const health = el("div", "health", c); health.id = "health-" + s.stream;
  const segs = el("div", "seg", c); segs.id = "segments-" + s.stream; segs.dataset.count = "0";
  cards[s.stream] = {label, ring, tl, health, segs, ringSize: s.ring_size || 1, points: [], segments: []};
  return cards[s.stream];
}
function drawRing(c, gates) {
  const g = c.ring.getContext("2d"), w = c.ring.width, h = c.ring.height, n = Math.max(c.ringSize, gates.length);
  g.clearRect(0, 0, w, h); const cell = w / n, first = n - gates.length;
  for (let i = 0; i < n; i++) {
    g.strokeStyle = "#555"; g.strokeRect(i * cell + 1, 1, cell - 3, h - 2);
    if (i < first) continue; const gate = gates[i - first];
    g.fillStyle = gate.selected ? "#50c850" : "#969696";
    const bh = Math.max(0, Math.min(1, gate.gate)) * (h - 4); g.fillRect(i * cell + 2, h - 2 - bh, cell - 5, bh);
  }
}
function drawTimeline(c) {
  const g = c.tl.getContext("2d"), w = c.tl.width, h = c.tl.height, pts = c.points.slice(-115), step = w / 115;
  g.clearRect(0, 0, w, h);
  const lo = pts.length ? pts[0].clip : 0;
  for (const s of c.segments) {
    const x0 = (s.first_clip - lo) * step, x1 = (s.last_clip - lo + 1) * step;
    if (x1 < 0) continue; g.fillStyle = "rgba(80,140,255,0.35)"; g.fillRect(Math.max(0, x0), 0, x1 - Math.max(0, x0), h);
  }
  pts.forEach((p, i) => { g.fillStyle = p.selected ? "#50c850" : "#969696"; const bh = p.gate * (h - 2); g.fillRect(i * step, h - bh, Math.max(1, step - 1), bh); });
}
function onPrediction(p) {
  const c = cards[p.stream]; if (!c) return;
  // "no action" when no clip of the ring reaches the action gate; the class is then only a guess
  // (shown in brackets).  A model with a no-action class that predicts it: "no action 0.97".
  const idle = p.action === null, guess = idle && !p.no_action_class;
  c.label.innerHTML = ""; c.label.append((idle ? "no action" : p.label) + " ");
  const sc = document.createElement("span"); sc.className = "score";
  sc.textContent = guess ? "(" + p.label + " " + p.score.toFixed(2) + ")" : p.score.toFixed(2); c.label.appendChild(sc);
  c.label.classList.toggle("idle", idle); c.label.dataset.action = idle ? "" : p.action;
  c.label.dataset.label = p.label;
  c.label.dataset.clip = String(p.clip_index); c.label.dataset.updates = String(Number(c.label.dataset.updates) + 1);
  drawRing(c, p.gates);
  const newest = p.gates[p.gates.length - 1];
  c.points.push({clip: newest.clip_index, gate: newest.gate, selected: newest.selected}); if (c.points.length > 500) c.points.shift();
  c.tl.dataset.points = String(Number(c.tl.dataset.points) + 1); drawTimeline(c);
}
function onSegment(s) {
  const c = cards[s.stream]; if (!c) return; c.segments.push(s); if (c.segments.length > 50) c.segments.shift();
  c.segs.dataset.count = String(Number(c.segs.dataset.count) + 1);
  const t = (v) => v === null ? "?" : v.toFixed(1) + " s";
  c.segs.textContent = "segments: " + c.segments.slice(-5).map(x => (x.label || "?") + " " + t(x.start_stream_time_s) + "-" + t(x.end_stream_time_s)).join(", ");
  drawTimeline(c);
}
function onHealth(h) {
  const c = cards[h.stream]; if (!c) return;
  c.health.textContent = `${h.fps} fps | latency ${h.latency_ms === null ? "-" : h.latency_ms + " ms"} | ${h.frames} frames, ${h.clips} clips | dropped ${h.dropped_frames} | bad ${h.bad_frames} | gaps ${h.gaps} | reconnects ${h.reconnects}`;
}
const es = new EventSource("/events");
es.addEventListener("state", (e) => { const st = JSON.parse(e.data); st.streams.forEach((s) => { const c = card(s); onHealth(s); (s.segments || []).forEach(onSegment); }); document.getElementById("status").textContent = "live"; });
es.addEventListener("prediction", (e) => onPrediction(JSON.parse(e.data)));
es.addEventListener("segment", (e) => onSegment(JSON.parse(e.data)));
es.addEventListener("health", (e) => onHealth(JSON.parse(e.data)));
es.addEventListener("gap", (e) => { const g = JSON.parse(e.data); const c = cards[g.stream]; if (c) c.health.textContent += " | gap " + g.seconds + " s"; });
es.onerror = () => { document.getElementById("status").textContent = "reconnecting..."; };
</script></body></html>
"""

__all__ = ["LiveServer", "parse_address"]
