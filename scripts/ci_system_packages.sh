#!/bin/sh
# System binaries the live-view / events / RTSP tests drive for real (tests skip, with the
# reason, when one is missing): mosquitto (MQTT broker), chromium + chromedriver (headless
# browser for the --serve page), ffmpeg (RTSP server in listen mode, H.264 encoder).
# Quiet and idempotent: installs only what is missing; needs root (CI containers run as root).
set -eu
need=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v chromedriver >/dev/null 2>&1 || need="$need chromium-driver"
command -v ffmpeg >/dev/null 2>&1 || need="$need ffmpeg"
if [ -z "$need" ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086  # $need is a word list on purpose
apt-get install -y -qq $need >/dev/null
