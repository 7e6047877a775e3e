"""--serve: a real headless Chromium (Debian's chromium + chromedriver via selenium) opens the live
page of `gcf-trt run` on a looping generated video and an RTSP camera with credentials; frames
arrive, label and gate timeline update, /metrics parses with Prometheus' parser, no credential
shows anywhere.  A stalled or vanishing viewer does not grow memory or stop the run."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import urllib.request

import pytest

from tests.live.helpers import GcfRun, RtspServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1100,1000")


def fetch(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(check, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return check()


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver; "
                    "scripts/ci_system_packages.sh)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_live_page_in_headless_chromium(demo_engines_fp32, tmp_path, browser):
    from gcf_trt.data import plan_video, render_video, write_video
    from gcf_trt.runtime.engines import load_engines
    # The action, then an empty scene: 200 still frames, long enough for rings without an action.
    frames = list(render_video(plan_video(7, 0)))
    video = write_video(tmp_path / "action.mp4", frames + [frames[0]] * 200)
    camera = RtspServer().start()
    camera_url = f"rtsp://viewer:s3cret@127.0.0.1:{camera.port}/live"
    proc = GcfRun(str(video), camera_url, "--engines", str(demo_engines_fp32), "--loop", "--transport", "tcp",
                  "--serve", "127.0.0.1:0", "--jsonl", str(tmp_path / "p.jsonl"))
    try:
        line = proc.wait_line(r"live view: (http://\S+) (.*)")
        url = line.group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        assert "only this machine can connect" in line.group(2)
        browser.get(url)
        js = "const e = document.getElementById(arguments[0]); return e ? e.dataset[arguments[1]] : null;"
        for stream in (0, 1):
            assert wait_for(lambda: int(browser.execute_script(js, f"label-{stream}", "updates") or 0) >= 2, 60), \
                browser.page_source[:2000]
        # Frames arrive: the <img> decoded MJPEG frames and the server keeps sending new ones.
        assert wait_for(lambda: browser.execute_script(
            "return document.getElementById('video-0').naturalWidth;"), 20) == 128
        assert wait_for(lambda: browser.execute_script(
            "return document.getElementById('video-1').naturalWidth;"), 20) == 64
        first = fetch(url + "metrics")
        time.sleep(1.5)
        # The label and the gate timeline keep updating.
        clip0 = int(browser.execute_script(js, "label-0", "clip"))
        points0 = int(browser.execute_script(js, "timeline-0", "points"))
        assert wait_for(lambda: int(browser.execute_script(js, "label-0", "clip")) > clip0, 20)
        assert wait_for(lambda: int(browser.execute_script(js, "timeline-0", "points")) > points0, 20)
        assert wait_for(lambda: int(browser.execute_script(js, "segments-0", "count") or 0) >= 1, 30)
        # The label says the decision: the class, or "no action" (and the class guessed) when no
        # clip of the ring reaches the action gate, or "no action 0.97" when the model's own
        # no-action class is the top class.  Both are seen on this video (the still part).
        with load_engines(demo_engines_fp32) as engines:
            no_action_label = engines.spec.no_action_label
        shown = set()

        def decision_shown() -> bool:
            # One script reads all three, so no prediction lands between the text and the attributes.
            text, action, label = browser.execute_script(
                "const e = document.getElementById('label-0'); return [e.innerText, e.dataset.action, e.dataset.label];")
            if action:
                pattern = re.escape(action) + r" \d\.\d\d"
            elif label == no_action_label:
                pattern = r"no action \d\.\d\d"
            else:
                pattern = r"no action \(" + re.escape(label) + r" \d\.\d\d\)"
            assert re.fullmatch(pattern, text), (text, action, label)
            shown.add(action == "")
            return shown == {True, False}
        assert wait_for(decision_shown, 60), shown
        ring_ink = browser.execute_script(
            "const c = document.getElementById('ring-0'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i + 1]; return s;")
        assert ring_ink > 0
        assert wait_for(lambda: "fps" in browser.find_element("id", "health-1").text, 10)
        # /metrics: Prometheus' own parser, per-stream series, latency histogram per stage.
        second = fetch(url + "metrics")
        for stream in ("0", "1"):
            assert metric(second, "gcf_frames_total", stream=stream) > metric(first, "gcf_frames_total", stream=stream) > 0
            assert metric(second, "gcf_live_frames_sent_total", stream=stream) > metric(first, "gcf_live_frames_sent_total", stream=stream)
            for stage in ("preprocess", "queue", "backbone", "head", "total"):
                assert metric(second, "gcf_latency_seconds_count", stream=stream, stage=stage) > 0
        assert metric(second, "gcf_reconnects_total", stream="1") == 0
        for stream in ("0", "1"):
            assert metric(second, "gcf_action_in_view", stream=stream) in (0.0, 1.0)
        health = json.loads(fetch(url + "healthz"))
        assert health["status"] == "ok" and [s["stream"] for s in health["streams"]] == [0, 1]
        # No credential on the page, in the state, in the metrics or in the events.
        events = urllib.request.urlopen(url + "events", timeout=10)
        sse = events.read(4000).decode()
        events.close()
        for text in (browser.page_source, fetch(url + "api/state"), second, sse):
            assert "s3cret" not in text and "viewer:" not in text
        assert "rtsp://***@127.0.0.1" in browser.page_source
        if os.environ.get("GCF_LIVE_SCREENSHOT"):  # docs/img/live_view.png is made this way
            browser.save_screenshot(os.environ["GCF_LIVE_SCREENSHOT"])
    finally:
        code, err = proc.finish()
        camera.stop()
    assert code == 0, err
    assert "s3cret" not in err
    assert "stopped by SIGTERM" in err.strip().splitlines()[-1], err


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def test_stalled_and_vanishing_viewers_are_harmless(tiny_engines, tmp_path):
    from tests.conftest import write_video
    video = write_video(tmp_path / "clip.mp4", num_frames=48, size=(320, 240))
    jsonl = tmp_path / "p.jsonl"
    proc = GcfRun(str(video), "--engines", str(tiny_engines), "--loop", "--serve", ":0", "--serve-fps", "50",
                  "--jsonl", str(jsonl))
    stalled = []
    try:
        url = proc.wait_line(r"live view: (http://\S+)").group(1)
        port = int(url.rsplit(":", 1)[1].strip("/"))

        def open_raw(path: str, rcvbuf: int = 4096) -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            return s

        # Viewers that never read: MJPEG and SSE.  Their socket buffers fill, then nothing grows.
        stalled = [open_raw("/stream/0.mjpg"), open_raw("/events")]
        # A viewer that reads a little and vanishes mid-frame.
        for _ in range(3):
            s = open_raw("/stream/0.mjpg", 1 << 16)
            assert s.recv(1000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
            s.close()
        time.sleep(2)
        lines_before, rss_before = jsonl.read_text().count("\n"), rss_kb(proc.pid)
        time.sleep(5)
        lines_after, rss_after = jsonl.read_text().count("\n"), rss_kb(proc.pid)
        assert lines_after > lines_before + 10  # inference went on at full speed meanwhile
        assert rss_after - rss_before < 20_000, (rss_before, rss_after)  # kB
        assert json.loads(fetch(url + "healthz"))["status"] == "ok"
        body = fetch(url + "metrics")
        assert metric(body, "gcf_frames_total", stream="0") > 0
        assert proc.poll() is None
    finally:
        for s in stalled:
            s.close()
        code, err = proc.finish()
    assert code == 0, err
