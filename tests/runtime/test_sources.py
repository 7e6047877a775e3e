"""Sources: URI parsing, redaction, files (loop, fps, step), iterators, the threaded queue's drop
policies, and a real MJPEG-over-HTTP stream on 127.0.0.1 that is cut to test reconnects."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from gcf_trt.errors import InputError, SourceError
from gcf_trt.runtime.sources import Backoff, SourceFrame, SourceGap, ThreadedSource, IteratorSource, open_source
from gcf_trt.runtime.uris import gstreamer_available, parse_uri, redact
from tests.conftest import write_video
from tests.live.helpers import MjpegServer


# ----------------------------------------------------------------------------- URIs
@pytest.mark.parametrize("uri,expected", [
    ("rtsp://admin:hunter2@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("http://user@cam.local/video.mjpg", "http://***@cam.local/video.mjpg"),
    ("https://cam/x?token=abc123&ch=1", "https://cam/x?token=***&ch=1"),
    ("rtsp://cam/live?user=a&password=p%40ss", "rtsp://cam/live?user=a&password=***"),
    ("/videos/clip.mp4", "/videos/clip.mp4"),
    (3, "3"),
])
def test_redact(uri, expected):
    assert redact(uri) == expected


def test_parse_uri_kinds(tmp_path):
    video = write_video(tmp_path / "a b.mp4", num_frames=4)
    assert parse_uri(str(video)).kind == "file"
    spec = parse_uri("file://" + str(video).replace(" ", "%20"))
    assert spec.kind == "file" and spec.target == str(video) and not spec.live
    assert parse_uri("0").kind == "camera" and parse_uri("0").target == 0 and parse_uri(1).live
    assert parse_uri("/dev/video2").kind == "camera"
    rtsp = parse_uri("rtsp://u:secret@10.1.1.1/s")
    assert rtsp.kind == "stream" and rtsp.live and "secret" not in rtsp.display
    assert parse_uri("https://example.org/v.mp4").api == cv2.CAP_FFMPEG


def test_bad_uris(tmp_path):
    with pytest.raises(SourceError, match="unknown source scheme 'ftp://'") as err:
        parse_uri("ftp://u:secret@host/v.mp4")
    assert "secret" not in str(err.value) and err.value.hint
    with pytest.raises(SourceError, match="does not exist"):
        parse_uri(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="is a directory"):
        parse_uri(str(tmp_path))
    with pytest.raises(SourceError, match="empty"):
        parse_uri("  ")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(SourceError, match="cannot open file source"):
        open_source(junk)
    with pytest.raises(SourceError, match="not a source"):
        open_source(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError):
        open_source(str(junk), fps=0)


def test_gstreamer_pipeline_needs_gstreamer():
    pipeline = "videotestsrc num-buffers=4 ! videoconvert ! appsink"
    if gstreamer_available():
        assert parse_uri(pipeline).kind == "gstreamer"
    else:
        with pytest.raises(SourceError, match="GStreamer") as err:
            parse_uri("gst:" + pipeline)
        assert "rtsp://" in err.value.hint


# ----------------------------------------------------------------------------- files
def test_file_frames_loop_fps_and_step(tmp_path):
    video = write_video(tmp_path / "v.mp4", num_frames=12, fps=30.0)
    with open_source(video) as src:
        items = list(src)
    assert [i.index for i in items] == list(range(12)) and all(isinstance(i, SourceFrame) for i in items)
    assert src.stats.frames_dropped == 0 and src.fps == pytest.approx(30.0)

    with open_source(video, fps=10.0) as src:  # 30 -> 10 fps keeps every third frame
        assert [i.index for i in src] == [0, 3, 6, 9]
    with open_source(video, step=4, threaded=False) as src:
        assert [i.index for i in src] == [0, 4, 8]
        assert src.stats.frames_skipped == 9

    with open_source(video, loop=True) as src:
        frames = []
        for item in src:
            frames.append(item)
            if len(frames) == 30:
                break
    assert src.stats.loops >= 2
    np.testing.assert_array_equal(frames[12].image, frames[0].image)  # the loop restarted the file
    with pytest.raises(InputError, match="loop applies to files"):
        open_source("rtsp://127.0.0.1:9/x", loop=True)


def test_iterator_source():
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    with open_source(iter(frames)) as src:
        got = list(src.frames())
    assert [int(f[0, 0, 0]) for f in got] == [0, 1, 2, 3, 4]
    assert isinstance(open_source(frames), IteratorSource)


# ----------------------------------------------------------------------------- threading
def test_threaded_block_policy_keeps_every_frame():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(40)]
    src = ThreadedSource(IteratorSource(frames), queue_size=2, drop="block")
    got = []
    for item in src:
        time.sleep(0.002)  # a consumer slower than the producer
        got.append(item.index)
    src.close()
    assert got == list(range(40)) and src.stats.frames_dropped == 0


def test_threaded_drop_oldest_counts_drops_and_keeps_newest():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(60)]
    src = ThreadedSource(IteratorSource(frames, live=True), queue_size=3, drop="drop_oldest")
    got = []
    for item in src:
        time.sleep(0.01)
        got.append(item.index)
    src.close()
    assert src.stats.frames_dropped > 0
    assert len(got) + src.stats.frames_dropped == 60
    assert got == sorted(got) and got[-1] == 59  # order kept, the newest frame always arrives


def test_threaded_source_reraises_decoder_errors():
    def broken():
        yield np.zeros((4, 4, 3), np.uint8)
        raise SourceError("camera unplugged")
    src = open_source(broken(), threaded=True)
    with pytest.raises(SourceError, match="camera unplugged"):
        list(src)
    src.close()
    with pytest.raises(InputError, match="drop policy"):
        ThreadedSource(IteratorSource([]), drop="newest")


def test_backoff_is_exponential_and_bounded():
    assert list(Backoff(initial=0.5, factor=2, maximum=3, max_attempts=5).delays()) == [0.5, 1, 2, 3, 3]
    unbounded = Backoff(max_attempts=None).delays()
    assert len([next(unbounded) for _ in range(100)]) == 100


def test_http_mjpeg_stream_reconnects_and_reports_the_gap():
    with MjpegServer(frames_per_session=12, sessions=2) as server:
        src = open_source(server.url("viewer:s3cret@"), reconnect=Backoff(initial=0.05, maximum=0.1, max_attempts=2),
                          open_timeout_ms=3000, read_timeout_ms=3000)
        assert src.live and "s3cret" not in src.uri and "s3cret" not in repr(src)
        items = []
        with pytest.raises(SourceError, match="did not come back after 2 reconnect attempts") as err:
            for item in src:
                items.append(item)
        src.close()
    assert "s3cret" not in str(err.value)
    frames = [i for i in items if isinstance(i, SourceFrame)]
    gaps = [i for i in items if isinstance(i, SourceGap)]
    assert len(frames) == 24 and len(gaps) == 1
    assert isinstance(items[12], SourceGap) and gaps[0].seconds > 0 and gaps[0].attempts == 1
    assert src.stats.reconnects == 1 and src.stats.gaps == 1
    assert frames[12].index == 12 + gaps[0].frames_missed  # indices continue past the gap


def test_closing_a_live_threaded_source_mid_stream_is_prompt():
    """close() while the decoder thread is reading a live stream: no crash, no hang."""
    with MjpegServer(frames_per_session=200, sessions=1) as server:
        src = open_source(server.url(), reconnect=Backoff(initial=5.0, max_attempts=3))
        assert isinstance(src, ThreadedSource) and src.drop == "drop_oldest"
        for n, item in enumerate(src):
            if n == 3:
                break
        start = time.monotonic()
        src.close()
        assert time.monotonic() - start < 5.0
        assert not src._thread.is_alive()
