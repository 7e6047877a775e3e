"""``gcf-trt run SOURCE... --engines DIR``: stream video sources and report what they show.

Parsing only: the run itself is :func:`gcf_trt.runtime.pipeline.run_streams` (sources ->
classifier -> sinks: JSON lines, annotated video, window, live web view, action events).
Never imports torch.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

from ..errors import InputError


def _number(kind: type, flag: str, minimum: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` whose errors name the flag (``--top-k must be >= 1``): one line, exit 1."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise InputError(f"{flag} takes a{'n integer' if kind is int else ' number'}, got {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise InputError(f"{flag} must be {'>' if strict else '>='} {minimum:g}, got {text}",
                             hint=f"see gcf-trt run --help for {flag}")
        return value
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="stream a video file, camera or URL through an engines directory",
                       description="Stream SOURCE (file, file://, camera index, /dev/videoN, rtsp://, "
                                   "http(s)://, GStreamer pipeline) and write one JSON prediction per line.")
    p.add_argument("source", metavar="SOURCE", nargs="+",
                   help="video file, camera index, /dev/videoN, rtsp:// or http(s):// URL; several SOURCEs run as "
                        "one stream each, their clips batched together, each line tagged with its \"stream\"")
    p.add_argument("--engines", required=True, metavar="DIR", help="engines directory from 'gcf-trt build'")
    p.add_argument("--runtime", default=None, help="force a runtime (onnxruntime, openvino, tensorrt)")
    p.add_argument("--expect-model-hash", default=None, metavar="HASH",
                   help="refuse engines built from another model (the model_hash in manifest.json)")
    p.add_argument("--threads", type=_number(int, "--threads", 1), default=None,
                   help="inference threads (default: the runtime's)")
    p.add_argument("--top-k", type=_number(int, "--top-k", 1), default=5, help="classes listed per prediction (default 5)")
    p.add_argument("--jsonl", default="-", metavar="FILE", help="write the JSON lines here instead of stdout")
    p.add_argument("--output", default=None, metavar="VIDEO",
                   help="write the annotated frames to this video (H.264 where this machine has an encoder)")
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window (needs a display)")
    p.add_argument("--serve", default=None, metavar="HOST:PORT",
                   help="live web view, /metrics and /healthz at http://HOST:PORT/ (e.g. 127.0.0.1:8080; PORT 0 "
                        "picks a free one; a HOST other than 127.0.0.1 exposes it, without authentication)")
    p.add_argument("--serve-fps", type=_number(float, "--serve-fps", 0, strict=True), default=10.0,
                   help="most frames per second encoded for the web view (default 10)")
    p.add_argument("--events", default=None, metavar="mqtt://HOST[:PORT]/TOPIC|FILE.jsonl",
                   help="publish each completed action segment to an MQTT broker or append it to a .jsonl file")
    p.add_argument("--transport", choices=("tcp", "udp"), default=None,
                   help="rtsp:// sources: RTP over TCP (through firewalls/NAT) or UDP (default: FFmpeg's choice)")
    p.add_argument("--loop", action="store_true", help="restart a video file at its end")
    p.add_argument("--fps", type=_number(float, "--fps", 0, strict=True), default=None,
                   help="subsample the source to about this frame rate")
    p.add_argument("--max-frames", type=_number(int, "--max-frames", 1), default=None, metavar="N",
                   help="stop after N source frames")
    p.add_argument("--max-batch", type=_number(int, "--max-batch", 1), default=8,
                   help="several sources: most clips per backbone call (default 8)")
    p.add_argument("--flush-timeout-ms", type=_number(float, "--flush-timeout-ms", 0), default=50.0,
                   help="several sources: longest a clip waits for its batch to fill (default 50)")
    p.add_argument("--reconnect-attempts", type=_number(int, "--reconnect-attempts", 0), default=8, metavar="N",
                   help="live sources: reconnect attempts per outage before giving up, 0 = forever (default 8)")
    p.add_argument("--reconnect-max-delay", type=_number(float, "--reconnect-max-delay", 0, strict=True), default=10.0,
                   metavar="S", help="live sources: cap of the exponential backoff between attempts (default 10 s)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        # FFmpeg's own log lines (printed by libav, not by us) could quote a stream URL with
        # its credentials; silence them unless --verbose.  Read when OpenCV's FFMPEG backend
        # initialises, so this must happen before the first capture is opened.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        # OpenCV's own warnings (e.g. "can't be used to capture by name" for a refused stream)
        # would precede the one error line; read at cv2's first log.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    from ..runtime.pipeline import RunConfig, run_streams
    return run_streams(RunConfig(
        sources=args.source, engines=args.engines, runtime=args.runtime, expect_model_hash=args.expect_model_hash,
        threads=args.threads, top_k=args.top_k, loop=args.loop, fps=args.fps, max_frames=args.max_frames,
        max_batch=args.max_batch, flush_timeout_ms=args.flush_timeout_ms, reconnect_attempts=args.reconnect_attempts,
        reconnect_max_delay=args.reconnect_max_delay, transport=args.transport, jsonl=args.jsonl, output=args.output,
        show=args.show, serve=args.serve, serve_fps=args.serve_fps, events=args.events,
        quiet=args.quiet))
