"""ModelSpec: everything a runtime needs to know about a model besides its weights.

It travels inside the checkpoint and inside every engines ``manifest.json``, so the runtime
preprocesses frames exactly as training did and knows the ring size and the labels without
importing torch.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

# Kinetics statistics used by torchvision's video models; our own backbone uses them too so
# that a torchvision backbone and ours share one preprocessing preset.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

# The tensor contract of the engines (docs/DESIGN.md "Tensor contract"): the exporter names the
# graphs' tensors with these, every backend, the runtime, Triton and bench read them from here.
BACKBONE_INPUT, BACKBONE_OUTPUT = "clip", "descriptor"
HEAD_INPUTS, HEAD_OUTPUTS = ("descriptors", "mask"), ("logits", "gates")
BACKBONE_INPUTS, BACKBONE_OUTPUTS = (BACKBONE_INPUT,), (BACKBONE_OUTPUT,)

# A clip whose gate reaches this shows the action: the head's gates are trained towards 1 on
# the action's clips and 0 elsewhere.  A ring none of whose clips reaches it holds no action,
# and a prediction says so (``Prediction.action`` is None); the segment detector
# (gcf_trt.segments) opens a segment at the same value, and the agreement gate reports how often
# INT8 and FP32 decide alike (docs/INT8.md, "The decision").
ACTION_GATE = 0.5

# The class name `gcf-trt train --no-action-class` adds: the head is trained to predict it on
# rings that hold none of the action (a stream shows many), instead of guessing a class there.
NO_ACTION_LABEL = "no action"


@dataclass
class ModelSpec:
    """Shape and preprocessing contract of a GCF-Net model.

    Attributes:
        backbone: registry name of the clip backbone (see ``gcf-trt backbones``).
        backbone_args: keyword arguments of the backbone factory (e.g. ``{"width": 16}``).
        clip_len: frames per clip (T).
        stride: a new clip starts every ``stride`` (sampled) frames.
        frame_step: temporal subsampling; only every ``frame_step``-th source frame is used.
        size: square crop size fed to the backbone (H = W = size).
        resize_short: the shorter frame side is resized to this before the centre crop.
        mean, std: per-channel RGB normalisation (values in [0, 1] before normalisation).
        ring_size: number of clip descriptors the head fuses (N).
        dim: descriptor size (D), set by the backbone.
        labels: class names; ``len(labels)`` is the number of classes.
        head_hidden: width of the fusion head's hidden projection (E).
        long_range: temporal dilation of the long-range fusion branch (d).
        select_ratio: a clip is kept when its gate is >= select_ratio * the largest gate.
        no_action_label: the label (one of ``labels``) of a class meaning "no action in view",
            for models trained with one (``gcf-trt train --no-action-class``); None for models
            whose every class is an action.
    """

    backbone: str = "edge3d"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    clip_len: int = 16
    stride: int = 16
    frame_step: int = 1
    size: int = 112
    resize_short: int = 128
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    ring_size: int = 8
    dim: int = 256
    labels: list[str] = field(default_factory=lambda: ["class0", "class1"])
    head_hidden: int = 128
    long_range: int = 2
    select_ratio: float = 0.5
    no_action_label: str | None = None

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.labels = [str(v) for v in self.labels]
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def no_action_index(self) -> int | None:
        """Index of :attr:`no_action_label` in ``labels``, or None."""
        return None if self.no_action_label is None else self.labels.index(self.no_action_label)

    @property
    def action_labels(self) -> list[str]:
        """The labels that name an action (all but :attr:`no_action_label`)."""
        return [v for v in self.labels if v != self.no_action_label]

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """Shape of one preprocessed clip: (3, T, H, W)."""
        return (3, self.clip_len, self.size, self.size)

    @property
    def frames_per_clip(self) -> int:
        """Source frames spanned by one clip, subsampling included."""
        return (self.clip_len - 1) * self.frame_step + 1

    def validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"ModelSpec.{name} must be a positive integer, got {value!r}",
                                 hint=f"set {name} to an integer >= 1")
        for name in ("clip_len", "stride", "frame_step", "size", "resize_short", "ring_size",
                     "dim", "head_hidden", "long_range"):
            positive(name)
        if self.resize_short < self.size:
            raise InputError(f"resize_short ({self.resize_short}) is smaller than the crop size ({self.size})",
                             hint="set resize_short >= size")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InputError("mean and std need 3 values each and std must be positive",
                             hint="use RGB statistics such as the Kinetics ones")
        if len(self.labels) < 2:
            raise InputError("a model needs at least 2 labels", hint="list the class names in labels")
        if self.no_action_label is not None and self.no_action_label not in self.labels:
            raise InputError(f"no_action_label {self.no_action_label!r} is not one of the labels",
                             hint="add it to labels, or leave no_action_label unset (null)")
        if len(self.action_labels) < 2:
            raise InputError("a model needs at least 2 action labels besides its no-action label",
                             hint="list the class names in labels")
        if not 0.0 <= self.select_ratio <= 1.0:
            raise InputError(f"select_ratio must be in [0, 1], got {self.select_ratio}",
                             hint="0 keeps every clip; 1 keeps only the clip(s) with the largest gate")

    # --- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise InputError(f"a ModelSpec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown ModelSpec field(s): {', '.join(unknown)}",
                             hint=f"known fields: {', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"ModelSpec JSON is not valid JSON: {exc}") from exc


def io_shapes(spec: ModelSpec, batch: int = -1) -> dict[str, dict[str, dict[str, list[int]]]]:
    """The tensor shapes of both graphs for ``spec``, the one place they are computed.

    Returns ``{"backbone": {"inputs": {"clip": [B,3,T,H,W]}, "outputs": {"descriptor": [B,D]}},
    "head": {"inputs": {"descriptors": [B,N,D], "mask": [B,N]}, "outputs": {"logits": [B,C],
    "gates": [B,N]}}}`` with ``B = batch`` (-1: dynamic), as the manifest records them.
    """
    b, n = int(batch), spec.ring_size
    return {
        "backbone": {"inputs": {BACKBONE_INPUT: [b, *spec.clip_shape]},
                     "outputs": {BACKBONE_OUTPUT: [b, spec.dim]}},
        "head": {"inputs": {HEAD_INPUTS[0]: [b, n, spec.dim], HEAD_INPUTS[1]: [b, n]},
                 "outputs": {HEAD_OUTPUTS[0]: [b, spec.num_classes], HEAD_OUTPUTS[1]: [b, n]}},
    }
