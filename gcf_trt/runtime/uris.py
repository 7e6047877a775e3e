"""Source URIs: what a source string names (:func:`parse_uri` -> :class:`SourceSpec`) and how
it may be shown (:func:`redact`).

File paths and ``file://``, camera indices and ``/dev/videoN``, network streams (``rtsp://``,
``http(s)://``, ... via OpenCV's FFMPEG backend) and GStreamer pipelines; the table is in
:mod:`gcf_trt.runtime.sources`, which opens them.  Credentials in URIs (``rtsp://user:pass@host``)
are never logged or put in messages: every message uses :func:`redact`.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from ..errors import SourceError

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
GSTREAMER_PREFIXES = ("gst:", "gstreamer:")

# ----------------------------------------------------------------------------- redaction
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_PARAM = re.compile(r"(?i)\b(?P<key>password|passwd|pass|pwd|token|access_token|auth|apikey|api_key|key|secret|signature|sig)=(?P<value>[^&\s]+)")


def redact(uri: Any) -> str:
    """``uri`` as a string that is safe to log: user info and secret query values masked.

    >>> redact("rtsp://admin:hunter2@10.0.0.5:554/live?token=abc&ch=1")
    'rtsp://***@10.0.0.5:554/live?token=***&ch=1'
    """
    text = os.fspath(uri) if isinstance(uri, os.PathLike) else str(uri)
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}=***", text)


# ----------------------------------------------------------------------------- URIs
@dataclass
class SourceSpec:
    """A parsed URI: ``kind`` in file/camera/stream/gstreamer, what to pass to OpenCV, live?"""

    kind: str
    target: str | int
    live: bool
    api: int
    display: str  # redacted, for messages


def gstreamer_available() -> bool:
    """Whether this OpenCV build has the GStreamer video I/O backend (from its build info)."""
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() not in ("NO", "OFF")


def parse_uri(uri: str | int | os.PathLike) -> SourceSpec:
    """Classify a source URI; raises SourceError for unknown schemes or missing files."""
    if isinstance(uri, bool):
        raise SourceError(f"invalid source {uri!r}")
    if isinstance(uri, int):
        return SourceSpec("camera", uri, True, cv2.CAP_ANY, f"camera {uri}")
    text = os.fspath(uri) if isinstance(uri, os.PathLike) else str(uri)
    shown = redact(text)
    if not text.strip():
        raise SourceError("empty source URI")
    if text.strip().isdigit():
        return SourceSpec("camera", int(text), True, cv2.CAP_ANY, f"camera {int(text)}")
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("camera", text, True, cv2.CAP_ANY, text)
    lowered = text.lower()
    if lowered.startswith(GSTREAMER_PREFIXES) or " ! " in text:
        pipeline = text.split(":", 1)[1].strip() if lowered.startswith(GSTREAMER_PREFIXES) else text
        if not gstreamer_available():
            raise SourceError(f"GStreamer pipeline {shown!r} needs OpenCV built with GStreamer, and this "
                              f"OpenCV ({cv2.__version__}) has no GStreamer backend",
                              hint="use an rtsp:// or http:// URI (FFMPEG backend) or a file, or install "
                                   "an OpenCV built with GStreamer (e.g. the system python3-opencv)")
        if "appsink" not in pipeline:
            raise SourceError(f"GStreamer pipeline {shown!r} does not end in appsink",
                              hint="end the pipeline with '! videoconvert ! appsink'")
        return SourceSpec("gstreamer", pipeline, True, cv2.CAP_GSTREAMER, shown)
    scheme_match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        if scheme == "file":
            parsed = urllib.parse.urlparse(text)
            path = urllib.parse.unquote(parsed.path)
            if parsed.netloc and parsed.netloc != "localhost":
                path = f"//{parsed.netloc}{path}"
            return _file_spec(path)
        if scheme in STREAM_SCHEMES:
            return SourceSpec("stream", text, True, cv2.CAP_FFMPEG, shown)
        raise SourceError(f"unknown source scheme {scheme + '://'!r} in {shown!r}",
                          hint="use a file path, file://, a camera index, /dev/videoN, "
                               f"{', '.join(s + '://' for s in STREAM_SCHEMES)} or a GStreamer pipeline")
    return _file_spec(text)


def _file_spec(path: str) -> SourceSpec:
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"video file {redact(path)!r} does not exist",
                          hint="check the path; for a camera pass its index (0) or /dev/videoN")
    if p.is_dir():
        raise SourceError(f"{redact(path)!r} is a directory, not a video file")
    return SourceSpec("file", str(p), False, cv2.CAP_ANY, redact(path))


__all__ = ["GSTREAMER_PREFIXES", "STREAM_SCHEMES", "SourceSpec", "gstreamer_available", "parse_uri", "redact"]
