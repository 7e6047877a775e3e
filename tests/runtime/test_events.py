"""Action events: a real mosquitto broker (started here on a free loopback port) receives the
segments of a generated video whose action window is known; the file target gets the same
records; a broker that is away at first gets the queued events when it comes; the queue is bounded."""
from __future__ import annotations

import json

import pytest

from gcf_trt.errors import InputError
from gcf_trt.runtime.events import JsonlEvents, MqttEvents, open_events
from gcf_trt.runtime.sinks import SegmentEvent
from gcf_trt.segments import Segment, temporal_iou
from tests.live.helpers import Mosquitto, Subscriber, free_port, gcf_run

pytest.importorskip("paho.mqtt.client")


@pytest.fixture(scope="module")
def demo_engines(demo_engines_fp32):
    return demo_engines_fp32


@pytest.fixture(scope="module")
def action_video(tmp_path_factory):
    from gcf_trt.data import plan_video, render_video, write_video
    plan = plan_video(7, 0)  # a 'bounce' whose action covers frames 32..80 of 104 (25 fps)
    return plan, write_video(tmp_path_factory.mktemp("video") / "action.mp4", render_video(plan))


def check_segments(records: list[dict], plan, source: str) -> None:
    assert records, "no segment event"
    best = max(records, key=lambda r: temporal_iou((r["start"], r["end"]), (plan.start, plan.end)))
    assert temporal_iou((best["start"], best["end"]), (plan.start, plan.end)) >= 0.5, (records, plan)
    assert best["label"] == plan.label_name and 0 < best["label_score"] <= 1
    # Stream times are the frames' times in the file (25 fps), wall times real Unix seconds.
    assert best["start_stream_time_s"] == pytest.approx(best["start"] / 25.0, abs=1e-3)
    assert best["end_stream_time_s"] == pytest.approx(best["end"] / 25.0, abs=1e-3)
    assert best["start_wall_time"] > 1.6e9 and best["end_wall_time"] >= best["start_wall_time"]
    assert all(r["stream"] == 0 and r["source"] == source for r in records)


def test_mqtt_broker_receives_the_segments_of_a_known_video(demo_engines, action_video, tmp_path):
    plan, video = action_video
    broker = Mosquitto(tmp_path).start()
    sub = Subscriber(broker.port, "gcf/test/events")
    try:
        proc = gcf_run(str(video), "--engines", str(demo_engines), "--jsonl", str(tmp_path / "p.jsonl"),
                       "--events", f"mqtt://127.0.0.1:{broker.port}/gcf/test/events")
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
        completed = [seg for line in lines for seg in line["segments_completed"]]
        received = sub.wait(len(completed) + 1, timeout=5)  # the stream's end closes one more
    finally:
        sub.close()
        broker.stop()
    assert f"events: segments to mqtt://127.0.0.1:{broker.port}/gcf/test/events" in err
    check_segments(received, plan, str(video))
    # The JSON lines carry the same completed segments, and stream/wall time on every prediction.
    assert completed == received[:len(completed)]
    assert all(line["stream_time_s"] == pytest.approx(line["frame_range"][1] / 25.0, abs=1e-3) for line in lines)
    assert all(line["source"] == str(video) and line["wall_time"] > 1.6e9 for line in lines)


def test_events_file_gets_the_same_records(demo_engines, action_video, tmp_path):
    plan, video = action_video
    events = tmp_path / "events.jsonl"
    proc = gcf_run(f"file://{video}", "--engines", str(demo_engines), "--jsonl", str(tmp_path / "p.jsonl"),
                   "--events", str(events))
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    check_segments([json.loads(line) for line in events.read_text().splitlines()], plan, f"file://{video}")


def segment_event(i: int) -> SegmentEvent:
    return SegmentEvent(0, "cam", Segment(i * 10, i * 10 + 9, 0.9, i, i), "bounce", 0.99, i, i + 0.4, 1.7e9 + i,
                        1.7e9 + i + 0.4)


def test_broker_down_at_first_then_up_gets_the_queued_events_and_queue_is_bounded(tmp_path):
    port = free_port()
    sink = MqttEvents("127.0.0.1", port, "gcf/late", max_queued=3, drain_timeout=15)
    try:
        for i in range(5):        # the broker is not there yet: 3 queue, 2 are dropped
            sink.segment(segment_event(i))
        assert (sink.sent, sink.dropped) == (3, 2)
        broker = Mosquitto(tmp_path, port=port)
        sub = None
        try:
            broker.start()
            sub = Subscriber(port, "gcf/late")
            # paho's own thread retries (1 s backoff); the queued events go out once it connects.
            sink.close(True)
            received = sub.wait(3, timeout=10)
        finally:
            if sub is not None:
                sub.close()
            broker.stop()
    finally:
        sink.close(False)
    assert [r["first_clip"] for r in received] == [0, 1, 2], received


def test_bad_event_targets_name_the_flag(tmp_path):
    for target, text in [("mqtt:///topic", "names no broker host"), ("kafka://h/t", "unknown scheme"),
                         (str(tmp_path / "events.txt"), "must end in .jsonl"), ("mqtt://h/a/#", "wildcard")]:
        with pytest.raises(InputError, match=text) as info:
            open_events(target)
        assert "--events" in info.value.message
    with pytest.raises(InputError) as info:
        open_events("mqtt://user:hunter2@/t")
    assert "hunter2" not in info.value.message
    assert isinstance(open_events(str(tmp_path / "e.jsonl")), JsonlEvents)


def test_broker_cut_mid_run_and_restarted_gets_the_events_sent_meanwhile(tmp_path):
    broker = Mosquitto(tmp_path).start()
    sink = MqttEvents("127.0.0.1", broker.port, "gcf/cut", drain_timeout=20)
    sub = None
    try:
        assert sink.connected.wait(10)
        sink.segment(segment_event(0))
        broker.stop()                               # cut while the run goes on
        assert wait_until(lambda: not sink.connected.is_set(), 10)
        for i in (1, 2):
            sink.segment(segment_event(i))          # queued while the broker is away
        broker.start()                              # back on the same port
        sub = Subscriber(broker.port, "gcf/cut")    # subscribes before paho's next retry (>= 1 s)
        assert sink.connected.wait(40), "paho did not reconnect"
        sink.close(True)
        received = sub.wait(2, timeout=10)
    finally:
        if sub is not None:
            sub.close()
        sink.close(False)
        broker.stop()
    assert [r["first_clip"] for r in received] == [1, 2], received
    assert sink.unacknowledged == 0 and sink.dropped == 0


def wait_until(check, timeout: float) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False
