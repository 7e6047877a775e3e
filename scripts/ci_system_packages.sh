#!/bin/sh
# System packages the live tests drive for real (each test skips, with the reason, when its
# binary is missing):
#   mosquitto                     MQTT broker for tests/runtime/test_events.py
#   chromium, chromium-driver     headless browser for the --serve page (tests/runtime/test_serve.py)
#   ffmpeg                        H.264 encoder for --output (libx264)
#   python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base/-good
#                                 GStreamer's RTSP server for tests/runtime/test_rtsp.py
# Quiet and idempotent: apt runs only when a package is missing.  Needs root (CI runs as root).
set -eu
packages="mosquitto chromium chromium-driver ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
need=""
for p in $packages; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
[ -z "$need" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086  # $need is a word list on purpose
apt-get install -y -qq $need >/dev/null
