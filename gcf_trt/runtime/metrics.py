"""Prometheus metrics of a live run (``/metrics`` of :class:`gcf_trt.runtime.serve.LiveServer`).

One registry per run (never the process-global one, so two runs in one process do not clash).
Counters and gauges are read from the run's per-stream health at scrape time (nothing to
update per frame); the per-stage latency histograms are observed once per prediction.  Every
series carries ``stream`` (its position, from 0) and ``source`` (the URI with credentials
masked, see :func:`gcf_trt.runtime.uris.redact`) - never a credential.

=========================================  ==========================================
``gcf_frames_total``                        frames decoded and handed to the classifier
``gcf_clips_total``                         clips run (= predictions)
``gcf_dropped_frames_total``                frames the bounded source queue dropped
``gcf_bad_frames_total``                    unusable or undecodable frames skipped
``gcf_gaps_total``, ``gcf_reconnects_total``  outages of a live source, reconnects
``gcf_segments_total``                      completed action segments
``gcf_fps``                                 frames per second over the last ~64 frames
``gcf_action_in_view``                      1 while the latest prediction shows an action, else 0
``gcf_latency_seconds{stage}``              histogram per stage: preprocess, queue, backbone, head, total
``gcf_live_frames_sent_total``              JPEG frames sent to web viewers
=========================================  ==========================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError
from .sinks import Sink

if TYPE_CHECKING:
    from .sinks import PredictionEvent, RunView

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
COUNTERS = (("frames", "frames decoded and handed to the classifier"),
            ("clips", "clips run through backbone and head (= predictions)"),
            ("dropped_frames", "frames dropped by the bounded source queue"),
            ("bad_frames", "unusable or undecodable frames skipped"),
            ("gaps", "outages of a live source"),
            ("reconnects", "reconnects of a live source"),
            ("segments", "completed action segments"))


class Metrics(Sink):
    """The run's Prometheus registry; :meth:`render` gives the text exposition format.

    ``extra``: a callable returning ``{stream: {name: value}}`` of more counters (the web
    view's ``live_frames_sent``), read at scrape time.
    """

    def __init__(self, extra: Callable[[], dict[int, dict[str, float]]] | None = None):
        try:
            import prometheus_client
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError as exc:
            raise InputError(f"--serve needs prometheus_client for /metrics ({exc})",
                             hint="pip install 'gcf-trt[live]' (or pip install prometheus-client)") from None
        self._pc = prometheus_client
        self._families = (CounterMetricFamily, GaugeMetricFamily)
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.latency = prometheus_client.Histogram("gcf_latency_seconds", "latency of one prediction per stage",
                                                   ["stream", "source", "stage"], buckets=LATENCY_BUCKETS,
                                                   registry=self.registry)
        self._extra = extra
        self._run: "RunView | None" = None
        self.registry.register(self)  # collect() below

    def start(self, run: "RunView") -> None:
        self._run = run

    def prediction(self, event: "PredictionEvent") -> None:
        for stage, ms in event.prediction.latency_ms.items():
            self.latency.labels(str(event.stream), event.source, stage).observe(float(ms) / 1e3)

    def collect(self) -> Any:
        """prometheus_client's collector protocol: the run's counters at scrape time."""
        counter, gauge = self._families
        run = self._run
        if run is None:
            return
        healths = [run.health(i) for i in range(len(run.streams))]
        extra = self._extra() if self._extra else {}
        for name, doc in COUNTERS:
            family = counter(f"gcf_{name}", doc, labels=["stream", "source"])
            for h in healths:
                family.add_metric([str(h["stream"]), h["source"]], float(h[name]))
            yield family
        fps = gauge("gcf_fps", "frames per second over the last ~64 frames", labels=["stream", "source"])
        for h in healths:
            fps.add_metric([str(h["stream"]), h["source"]], float(h["fps"]))
        yield fps
        in_view = gauge("gcf_action_in_view", "1 while the latest prediction's ring shows an action "
                        "(a clip's gate >= the action gate), else 0", labels=["stream", "source"])
        for h in healths:
            in_view.add_metric([str(h["stream"]), h["source"]], 1.0 if h["action"] else 0.0)
        yield in_view
        if extra:
            sent = counter("gcf_live_frames_sent", "JPEG frames sent to web viewers", labels=["stream", "source"])
            for h in healths:
                sent.add_metric([str(h["stream"]), h["source"]], float(extra.get(h["stream"], {}).get("live_frames_sent", 0)))
            yield sent

    def describe(self) -> list:
        return []  # series appear with the run's streams; nothing to describe up front

    def render(self) -> tuple[bytes, str]:
        """``(body, content type)`` of the text exposition format."""
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST


__all__ = ["COUNTERS", "LATENCY_BUCKETS", "Metrics"]
