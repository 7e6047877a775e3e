"""Typed options of ``gcf-trt build``, shared by both targets (torch-free).

Each dataclass is one concern and validates itself with messages that name the CLI flag the
value comes from (``--min-agreement must be ...``), so the library and the CLI report the same
thing.  Which flag belongs to which option, and which target it applies to, is defined once in
:mod:`gcf_trt.commands.build`.

* :class:`CalibrationOptions`: how clips are drawn from ``--calib`` videos (both targets).
* :class:`GateOptions`: the agreement gate against FP32 (both targets).
* :class:`CpuOptions`: engine threads and the timed selection trial (``--target cpu``).
* :class:`TensorRTOptions`: profile, workspace, timing cache, DLA, verification (``--target trt``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

CALIBRATION_METHODS = ("minmax", "percentile")


def _positive_int(flag: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{flag} must be an integer >= {minimum}, got {value!r}",
                         hint=f"pass {flag} {max(minimum, 1)} or more")


def _fraction(flag: str, value: object, example: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise InputError(f"{flag} must be a fraction between 0 and 1, got {value!r}",
                         hint=f"e.g. {flag} {example} ({float(example):.0%}); percents are not accepted")


@dataclass(frozen=True)
class CalibrationOptions:
    """Clips drawn from the calibration videos; a quarter of them are held out for the gate."""

    clips: int = 64          # --calib-clips
    method: str = "minmax"   # --calib-method: minmax | percentile
    seed: int = 0
    # --gate-predictions: held-out ring predictions the gate decides on, from videos that are not
    # calibrated on; 256 resolves 99% (one flip in 16 predictions is 94%).
    gate_predictions: int = 256

    def validate(self) -> "CalibrationOptions":
        _positive_int("--calib-clips", self.clips, minimum=2)
        _positive_int("--gate-predictions", self.gate_predictions, minimum=1)
        if self.method not in CALIBRATION_METHODS:
            raise InputError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}",
                             hint="use --calib-method minmax (default) or percentile")
        return self


@dataclass(frozen=True)
class GateOptions:
    """A reduced-precision engine must agree with FP32 on held-out predictions."""

    min_agreement: float = 0.99       # --min-agreement: top-1 agreement, a fraction
    min_cosine: float | None = None   # --min-cosine: per-clip descriptor cosine, optional

    def validate(self) -> "GateOptions":
        _fraction("--min-agreement", self.min_agreement, "0.99")
        if self.min_cosine is not None:
            _fraction("--min-cosine", self.min_cosine, "0.995")
        return self


@dataclass(frozen=True)
class CpuOptions:
    """The CPU engines' threads and the timed trial that picks runtime x precision."""

    threads: int | None = None     # --threads (None: all cores)
    trial_iterations: int = 10     # --trial-iterations
    trial_warmup: int = 2

    def validate(self) -> "CpuOptions":
        if self.threads is not None:
            _positive_int("--threads", self.threads)
        _positive_int("--trial-iterations", self.trial_iterations)
        _positive_int("trial_warmup", self.trial_warmup, minimum=0)
        return self


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT builder options (docs/TENSORRT.md)."""

    min_batch: int = 1                  # --min-batch: optimization profile of the batch dim
    opt_batch: int = 1                  # --opt-batch
    max_batch: int = 8                  # --max-batch
    workspace_mb: int = 1024            # --workspace-mb: workspace memory pool limit
    timing_cache: Path | None = None    # --timing-cache (None: per-user cache, per TensorRT + GPU)
    dla_core: int | None = None         # --dla-core: Jetson DLA, GPU fallback, fixed batch
    verify: bool = True                 # --no-verify turns it off: run the plans against ORT FP32
    cuda_graph: bool = False            # --cuda-graph: recorded as the backbone's runtime option

    def validate(self) -> "TensorRTOptions":
        for flag, value in (("--min-batch", self.min_batch), ("--opt-batch", self.opt_batch),
                            ("--max-batch", self.max_batch), ("--workspace-mb", self.workspace_mb)):
            _positive_int(flag, value)
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError(f"batch profile needs --min-batch <= --opt-batch <= --max-batch, got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}",
                             hint="e.g. --min-batch 1 --opt-batch 1 --max-batch 8")
        if self.dla_core is not None:
            _positive_int("--dla-core", self.dla_core, minimum=0)
            if not self.min_batch == self.opt_batch == self.max_batch:
                # "DLA does not support dynamic dimensions, so the profile's min, max, and opt
                # values must be equal" (TensorRT docs, "DLA Supported Layers and Restrictions")
                raise InputError("--dla-core needs a fixed batch (DLA has no dynamic shapes): --min-batch, --opt-batch "
                                 "and --max-batch must be equal",
                                 hint="e.g. --dla-core 0 --min-batch 1 --opt-batch 1 --max-batch 1")
        if self.timing_cache is not None and not isinstance(self.timing_cache, Path):
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
        return self

    @property
    def verify_batch(self) -> int:
        """A batch inside the profile for the post-build check: 2 when allowed (exercises
        batching), else the profile's only size (DLA: min = opt = max, often 1)."""
        return min(max(2, self.min_batch), self.max_batch)
