"""Minimal camera app: a source, the engines and a list of sinks - the same pieces as `gcf-trt run`.

    python examples/camera_app.py 0 --engines engines/                          # first camera
    python examples/camera_app.py rtsp://user:pass@cam/stream --engines engines/ --draw out.mp4 --serve 127.0.0.1:8080
"""
import argparse
import sys

from gcf_trt.errors import GcfError
from gcf_trt.runtime import LiveRun, RunConfig, Sink, VideoSink


class PrintSink(Sink):
    """Our own sink: one line per prediction and per completed action segment."""

    def prediction(self, event):
        p = event.prediction  # p.source has the credentials masked: safe to print
        print(f"{p.source} {p.stream_time_s:7.2f} s  clip {p.clip_index}: {p.label} {p.score:.2f}  "
              f"gates {[round(g.gate, 2) for g in p.gates]}")

    def segment(self, event):
        print(f"action {event.label}: {event.start_stream_time_s:.1f}-{event.end_stream_time_s:.1f} s")


parser = argparse.ArgumentParser()
parser.add_argument("uri", help="file, camera index, /dev/videoN, rtsp:// or http(s):// URL")
parser.add_argument("--engines", required=True, help="engines directory from 'gcf-trt build'")
parser.add_argument("--draw", metavar="VIDEO", help="also write the frames with label and gate bar")
parser.add_argument("--serve", metavar="HOST:PORT", help="live web view (needs the 'live' extra)")
args = parser.parse_args()

try:
    sinks = [PrintSink()]
    if args.draw:
        sinks.append(VideoSink(args.draw))
    if args.serve:
        from gcf_trt.runtime.serve import LiveServer
        sinks.append(LiveServer(args.serve))
    LiveRun(RunConfig(sources=[args.uri], engines=args.engines), sinks).run()  # Ctrl-C ends it cleanly
except GcfError as exc:
    sys.exit(f"error: {exc}")
