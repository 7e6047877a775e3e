"""rtsp:// for real: GStreamer's RTSP server on loopback, TCP and UDP transport, the server cut and
restarted mid-stream, three times (the run resumes, each gap is reported, no thread or fd is left
behind, memory does not grow from one outage to the next)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from gcf_trt.errors import SourceError
from gcf_trt.runtime.pipeline import LiveRun, RunConfig
from gcf_trt.runtime.sinks import Sink
from gcf_trt.runtime.sources import open_source
from tests.live.helpers import RtspServer


def read_frames(url: str, transport: str, count: int = 10) -> int:
    with open_source(url, transport=transport, open_timeout_ms=4000, read_timeout_ms=3000) as src:
        n = 0
        for item in src:
            n += 1
            if n >= count:
                break
        return n


@pytest.mark.parametrize("only", ["tcp", "udp"])
def test_transport_option_is_the_transport_used(only):
    """A server that allows one transport: the source with that transport reads frames, the other
    one cannot open - so the option is really what FFmpeg uses, not a no-op."""
    server = RtspServer(protocols=only).start()
    try:
        assert read_frames(server.url, only) == 10
        other = "udp" if only == "tcp" else "tcp"
        with pytest.raises(SourceError, match="cannot open stream source"):
            read_frames(server.url, other)
    finally:
        server.stop()


class Collector(Sink):
    def __init__(self):
        self.predictions, self.gaps, self.lock = [], [], threading.Lock()

    def prediction(self, event):
        with self.lock:
            self.predictions.append(event.record)

    def gap(self, stream, gap):
        with self.lock:
            self.gaps.append(gap)


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


CUTS = 3


def test_server_cut_and_restarted_resumes_reports_gap_and_leaks_nothing(tiny_engines):
    server = RtspServer().start()
    port = server.port
    threads_before, fds_before = threading.active_count(), open_fds()
    said: list[str] = []
    collector = Collector()
    run = LiveRun(RunConfig(sources=[f"rtsp://viewer:s3cret@127.0.0.1:{port}/live"], engines=tiny_engines,
                            transport="tcp", reconnect_attempts=40, reconnect_max_delay=0.25, jsonl=None),
                  [collector], say=said.append)
    errors: list[BaseException] = []

    def target():
        try:
            run.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    rss = []
    try:
        assert wait_for(lambda: len(collector.predictions) >= 3, 30), said
        before = len(collector.predictions)
        for cut in range(CUTS):
            count = len(collector.predictions)
            server.stop()                      # cut mid-stream
            time.sleep(1.5)
            server = RtspServer(port=port).start()  # back on the same port
            assert wait_for(lambda: len(collector.gaps) > cut and len(collector.predictions) >= count + 3, 30), said
            rss.append(rss_kb())
    finally:
        run.stop()
        worker.join(timeout=30)
        server.stop()
    assert not worker.is_alive() and not errors, errors
    gap = collector.gaps[0]
    assert gap.seconds >= 1.0 and gap.attempts >= 1
    assert any(line.startswith("gap: rtsp://***@127.0.0.1") for line in said), said
    assert "s3cret" not in "".join(said) + repr(collector.predictions)
    # Stream time jumps over the outage; frame indices go on; every line names its (redacted) source.
    times = [p["stream_time_s"] for p in collector.predictions]
    assert times == sorted(times)
    after = collector.predictions[before:]
    assert after[0]["stream_time_s"] - collector.predictions[before - 1]["stream_time_s"] >= 1.0
    assert all(p["source"] == f"rtsp://***@127.0.0.1:{port}/live" for p in collector.predictions)
    assert len(collector.gaps) == CUTS
    summary = said[-1]
    assert summary.startswith("gcf-trt run:") and f"{CUTS} gaps" in summary, said
    # Memory: after the first outage (FFmpeg's buffers exist), more outages do not grow it.
    assert rss[-1] - rss[0] < 15_000, rss  # kB
    # Nothing left behind: the decoder thread ended and the capture's sockets are closed.
    assert wait_for(lambda: threading.active_count() <= threads_before, 10), threading.enumerate()
    assert wait_for(lambda: open_fds() <= fds_before, 10), (fds_before, open_fds())
