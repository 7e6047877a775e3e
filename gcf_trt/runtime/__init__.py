"""torch-free runtime: what a camera app imports.  Nothing under this package imports torch.

Typical use::

    from gcf_trt.runtime import StreamingClassifier
    with StreamingClassifier("engines/") as clf:
        for prediction in clf.run("rtsp://camera/stream"):
            print(prediction.action or "no action", prediction.label, prediction.score)

``prediction.action`` is the decision: the class when a clip of the ring shows an action (its
gate >= ``gcf_trt.spec.ACTION_GATE``), None when none does (``label`` is then the head's guess).
"""
# Lazy exports (PEP 562): `from gcf_trt.runtime import StreamingClassifier` imports only what that
# needs, so a camera app's cold start does not pay for sinks, the live server or multi-stream code.
# LiveServer (--serve) and the MQTT events need the 'live' extra: import them from
# gcf_trt.runtime.serve / gcf_trt.runtime.events.
_EXPORTS = {
    "AtomicVideoWriter": "sinks",
    "Backoff": "sources",
    "ClipAssembler": "stream",
    "ClipGate": "stream",
    "ClipInfo": "ring",
    "DescriptorRing": "ring",
    "Engines": "engines",
    "FrameResult": "stream",
    "GapRecord": "stream",
    "IteratorSource": "sources",
    "JsonLinesSink": "sinks",
    "LiveRun": "pipeline",
    "MultiStreamClassifier": "multistream",
    "PendingClip": "core",
    "Prediction": "stream",
    "PredictionEvent": "sinks",
    "RunConfig": "pipeline",
    "SegmentEvent": "sinks",
    "ShowSink": "sinks",
    "Sink": "sinks",
    "Source": "sources",
    "SourceFrame": "sources",
    "SourceGap": "sources",
    "StreamCore": "core",
    "StreamPrediction": "multistream",
    "StreamState": "stream",
    "StreamingClassifier": "stream",
    "ThreadedSource": "sources",
    "VideoCaptureSource": "sources",
    "VideoSink": "sinks",
    "draw_prediction": "draw",
    "gstreamer_available": "uris",
    "load_engines": "engines",
    "measure_stage_costs": "stream",
    "open_source": "sources",
    "parse_uri": "uris",
    "redact": "uris",
    "run_head": "core",
    "run_streams": "pipeline",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = ["Backoff", "ClipAssembler", "ClipGate", "ClipInfo", "DescriptorRing", "Engines", "FrameResult",
           "GapRecord", "PendingClip", "StreamCore", "run_head",
           "IteratorSource", "MultiStreamClassifier", "Prediction", "Source", "SourceFrame", "SourceGap", "StreamState",
           "StreamPrediction", "StreamingClassifier", "ThreadedSource", "VideoCaptureSource", "draw_prediction",
           "gstreamer_available", "load_engines", "measure_stage_costs", "open_source", "parse_uri", "redact",
           "AtomicVideoWriter", "JsonLinesSink", "LiveRun", "PredictionEvent", "RunConfig", "SegmentEvent", "ShowSink",
           "Sink", "VideoSink", "run_streams"]
