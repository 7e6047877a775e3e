"""One exception type for everything the user can fix, caught once at the CLI's edge.

Each error names *what* went wrong (``kind``), *where* (in the message) and *how to fix it*
(``hint``).  The CLI prints ``error[kind]: message`` and ``hint: ...`` and exits 1; the
traceback is shown only with ``--verbose``.  Library users catch :class:`GcfError`.
"""
from __future__ import annotations


class GcfError(Exception):
    """An error the user can act on.

    Attributes:
        kind: a short stable identifier (``"checkpoint"``, ``"video"``, ...), useful for tests
            and for apps that want to react to one class of failure.
        hint: one sentence telling the user how to fix it.
    """

    kind = "error"
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:  # one line, hint included, for logs
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InputError(GcfError):
    """A command-line argument or API argument is invalid."""

    kind = "input"
    default_hint = "check the command's arguments (gcf-trt COMMAND --help)"


class CheckpointError(GcfError):
    """A checkpoint is missing, unreadable, or not a gcf-trt checkpoint."""

    kind = "checkpoint"
    default_hint = "pass a checkpoint written by 'gcf-trt train' or gcf_trt.compile.model.save_checkpoint"


class VideoError(GcfError):
    """A video file or stream cannot be opened, decoded, or is too short."""

    kind = "video"
    default_hint = "check the path or URI and that the file is a video OpenCV can decode"


class SourceError(VideoError):
    """A video source URI is malformed, unsupported, or unreachable."""

    kind = "source"
    default_hint = ("use a file path, file://, a camera index, /dev/videoN, rtsp://, http(s)://, "
                    "or a GStreamer pipeline ending in appsink")


class FrameError(GcfError):
    """A frame has the wrong shape, dtype or contains NaN/inf."""

    kind = "frame"
    default_hint = "pass HxWx3 BGR uint8 frames (grayscale and BGRA are converted automatically)"


class CalibrationError(GcfError):
    """Calibration data is missing or unusable."""

    kind = "calibration"
    default_hint = "put a few real videos (mp4/avi/mkv/mov) longer than one clip into the calib dir"


class EngineError(GcfError):
    """An engines directory, manifest or engine file is missing, corrupt, or for another model."""

    kind = "engine"
    default_hint = "rebuild the engines with 'gcf-trt build'"


class AgreementError(GcfError):
    """A quantized/reduced-precision engine disagrees with the FP32 reference too much."""

    kind = "agreement"
    default_hint = ("lower --min-agreement if you accept the loss, calibrate on more representative "
                    "videos, or build with --precision fp32")


class BackendUnavailable(GcfError):
    """A runtime (TensorRT, OpenVINO, ...) is not installed or cannot run here."""

    kind = "backend"
    default_hint = "install the matching extra, e.g. pip install 'gcf-trt[openvino]' or 'gcf-trt[trt]'"


class OutputError(GcfError):
    """An output path cannot be written."""

    kind = "output"
    default_hint = "choose a directory you can write to, or fix its permissions"


class BackboneError(InputError):
    """An unknown or unavailable backbone was requested."""

    kind = "backbone"
    default_hint = "run 'gcf-trt backbones' to list the available backbones"
