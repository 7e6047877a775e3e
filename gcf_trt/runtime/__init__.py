"""torch-free runtime: what a camera app imports.  Nothing under this package imports torch.

Typical use::

    from gcf_trt.runtime import StreamingClassifier
    with StreamingClassifier("engines/") as clf:
        for prediction in clf.run("rtsp://camera/stream"):
            print(prediction.label, prediction.score)
"""
from .engines import Engines, load_engines
from .ring import ClipInfo, DescriptorRing
from .sources import (Backoff, IteratorSource, Source, SourceFrame, SourceGap, ThreadedSource,
                      VideoCaptureSource, gstreamer_available, open_source, parse_uri, redact)
from .core import PendingClip, StreamCore, run_head
from .stream import (ClipAssembler, ClipGate, FrameResult, GapRecord, Prediction, StreamingClassifier, StreamState,
                     measure_stage_costs)
from .draw import draw_prediction
from .multistream import MultiStreamClassifier, StreamPrediction
from .sinks import AtomicVideoWriter, JsonLinesSink, ShowSink, Sink, VideoSink
from .pipeline import LiveRun, PredictionEvent, RunConfig, SegmentEvent, run_streams
# LiveServer (--serve) and the MQTT events need the 'live' extra: import them from
# gcf_trt.runtime.serve / gcf_trt.runtime.events.

__all__ = ["Backoff", "ClipAssembler", "ClipGate", "ClipInfo", "DescriptorRing", "Engines", "FrameResult",
           "GapRecord", "PendingClip", "StreamCore", "run_head",
           "IteratorSource", "MultiStreamClassifier", "Prediction", "Source", "SourceFrame", "SourceGap", "StreamState",
           "StreamPrediction", "StreamingClassifier", "ThreadedSource", "VideoCaptureSource", "draw_prediction",
           "gstreamer_available", "load_engines", "measure_stage_costs", "open_source", "parse_uri", "redact",
           "AtomicVideoWriter", "JsonLinesSink", "LiveRun", "PredictionEvent", "RunConfig", "SegmentEvent", "ShowSink",
           "Sink", "VideoSink", "run_streams"]
