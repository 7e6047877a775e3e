"""Action events: each completed segment as one JSON record, to an MQTT broker or a file.

``--events mqtt://[USER:PASS@]HOST[:PORT]/TOPIC`` publishes with paho-mqtt (QoS 1) from
paho's own network thread, which also reconnects (1 s .. 30 s backoff); while the broker is
away records wait in a bounded queue (``max_queued``), the oldest beyond it are dropped and
counted, so a dead broker never grows memory or slows inference.  ``--events FILE.jsonl``
appends the same records to a file, one line each, flushed.

A record (:meth:`gcf_trt.runtime.sinks.SegmentEvent.to_dict`): ``stream``, ``source``
(credentials masked), ``label``, ``label_score``, ``score`` (the mean gate), ``start``/``end``
frames, ``start_stream_time_s``/``end_stream_time_s`` and ``start_wall_time``/``end_wall_time``
(Unix seconds).  Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING

from ..errors import InputError, OutputError
from .sinks import Sink
from .uris import redact

if TYPE_CHECKING:
    from .sinks import SegmentEvent

DEFAULT_TOPIC = "gcf-trt/events"


class JsonlEvents(Sink):
    """Segment records appended to ``path``, one JSON line each, flushed as written."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        try:
            self._out = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write --events {path}: {exc.strerror}") from exc
        self.sent = 0

    def segment(self, event: "SegmentEvent") -> None:
        self._out.write(json.dumps(event.to_dict()) + "\n")
        self._out.flush()
        self.sent += 1

    def close(self, ok: bool) -> None:
        if not self._out.closed:
            self._out.close()


class MqttEvents(Sink):
    """Segment records published to ``topic`` on an MQTT broker (see the module docstring).

    Args:
        host, port: the broker.
        topic: where records go.
        username, password: optional broker credentials (never printed).
        max_queued: records kept while the broker is unreachable.
        drain_timeout: seconds :meth:`close` waits for queued records to go out.
    """

    def __init__(self, host: str, port: int = 1883, topic: str = DEFAULT_TOPIC, *, username: str | None = None,
                 password: str | None = None, max_queued: int = 1000, drain_timeout: float = 5.0,
                 client_id: str = ""):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise InputError(f"--events mqtt:// needs paho-mqtt ({exc})",
                             hint="pip install 'gcf-trt[live]' (or pip install paho-mqtt)") from None
        self._mqtt = mqtt
        self.host, self.port, self.topic = host, int(port), topic
        self.shown = f"mqtt://{host}:{port}/{topic}"
        self.drain_timeout = float(drain_timeout)
        self.sent = self.dropped = 0
        self._closed = False
        self.connected = threading.Event()
        self._unacked: set[int] = set()   # message ids the broker has not acknowledged yet
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_queued_messages_set(int(max_queued))
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        # connect_async + loop_start: a broker that is down at start is retried by paho's thread,
        # and the run goes on meanwhile (events queue up to max_queued).
        self._client.connect_async(host, self.port, keepalive=30)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._unacked.discard(mid)

    def start(self, run) -> None:
        run.note(f"events: segments to {self.shown}")

    def segment(self, event: "SegmentEvent") -> None:
        """Queue one record.  Not connected (rc NO_CONN) still queues it: paho sends QoS 1
        messages once it (re)connects; only a full queue drops it."""
        with self._lock:
            info = self._client.publish(self.topic, json.dumps(event.to_dict()), qos=1)
            if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
            else:
                self.sent += 1
                self._unacked.add(info.mid)

    @property
    def unacknowledged(self) -> int:
        """Records queued or sent that the broker has not acknowledged."""
        with self._lock:
            return len(self._unacked)

    def close(self, ok: bool) -> None:
        """Wait up to ``drain_timeout`` for the broker to acknowledge every record, then disconnect."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.drain_timeout
        while self.unacknowledged and time.monotonic() < deadline:
            time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()


def open_events(target: str) -> Sink:
    """The events sink for ``--events``: ``mqtt://[USER:PASS@]HOST[:PORT]/TOPIC`` or ``FILE.jsonl``."""
    if target.lower().startswith(("mqtt://", "tcp://")):
        url = urllib.parse.urlsplit(target)
        if not url.hostname:
            raise InputError(f"--events {redact(target)} names no broker host",
                             hint="use mqtt://HOST[:PORT]/TOPIC, e.g. mqtt://127.0.0.1:1883/gcf-trt/events")
        try:
            port = url.port or 1883
        except ValueError:
            raise InputError(f"--events {redact(target)} has an invalid port",
                             hint="use mqtt://HOST[:PORT]/TOPIC") from None
        topic = urllib.parse.unquote(url.path.lstrip("/")) or DEFAULT_TOPIC
        if "+" in topic or url.fragment or target.endswith("#"):  # '#' starts a URL fragment
            raise InputError(f"--events {redact(target)}: the topic has a wildcard (+ or #)",
                             hint="publishing needs a plain topic, e.g. mqtt://HOST/gcf-trt/events")
        return MqttEvents(url.hostname, port, topic,
                          username=urllib.parse.unquote(url.username) if url.username else None,
                          password=urllib.parse.unquote(url.password) if url.password else None)
    if "://" in target:
        raise InputError(f"--events {redact(target)}: unknown scheme",
                         hint="use mqtt://HOST[:PORT]/TOPIC or a FILE.jsonl")
    if not target.endswith(".jsonl"):
        raise InputError(f"--events {target}: a file target must end in .jsonl",
                         hint="use FILE.jsonl or mqtt://HOST[:PORT]/TOPIC")
    return JsonlEvents(target)


__all__ = ["DEFAULT_TOPIC", "JsonlEvents", "MqttEvents", "open_events"]
