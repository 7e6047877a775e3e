"""What a training run is told and what it leaves behind, and where it can resume from.

:class:`TrainConfig` (the model shape and the recipe, defaults: the committed demo model),
:class:`TrainResult`, and the per-epoch checkpoints with the training state that
``gcf-trt train --resume`` continues from (:class:`Checkpointer`).  The training loops are in
:mod:`gcf_trt.train`.

torch only through :mod:`gcf_trt.compile.model`, imported when a checkpoint is written.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import CLASSES
from .spec import NO_ACTION_LABEL, ModelSpec


TORCHVISION_DIMS = {"r3d_18": 512, "mc3_18": 512, "r2plus1d_18": 512, "s3d": 1024}
MODES = ("scratch", "finetune", "freeze")


@dataclass
class TrainConfig:
    """Model shape and training recipe (defaults: the committed demo model).

    ``mode``: ``"scratch"`` trains the backbone (edge3d) from random weights, then the head;
    ``"finetune"`` does the same starting from ``backbone_weights``; ``"freeze"`` keeps the
    backbone as loaded and trains only the clip classifier and the GCF head on cached
    descriptors (the backbone runs once per clip, and never again on a second run).
    """

    backbone: str = "edge3d"
    backbone_weights: str | None = None   # a state dict file (torchvision's, or an edge3d's)
    mode: str = "scratch"
    width: int = 8
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    clip_len: int = 8
    stride: int = 8
    size: int = 64
    resize_short: int = 72
    ring_size: int = 16
    head_hidden: int = 64
    long_range: int = 2
    select_ratio: float = 0.5
    # backbone stage (in "freeze" mode: the clip classifier on cached descriptors)
    epochs: int = 8
    batch: int = 32
    lr: float = 4e-3
    weight_decay: float = 1e-4
    action_overlap: float = 0.5
    background_weight: float = 0.5
    background_ratio: float = 0.5    # background clips drawn per epoch, x the action clips
    actionness_weight: float = 0.5
    flip: bool = True                # the label-swapping augmentations (see Augment)
    # head stage
    head_epochs: int = 100
    head_batch: int = 64
    head_lr: float = 3e-3
    head_weight_decay: float = 1e-3
    gate_weight: float = 1.0
    descriptor_dropout: float = 0.2
    # A class "no action" (spec.NO_ACTION_LABEL) after the data's labels: the head then trains on
    # every ring a stream presents (each video's prefixes and sliding windows, not only its last
    # ring), with that class where the ring holds under half a clip of the action.  The backbone
    # stage is unchanged (its background clips keep the uniform target).
    no_action_class: bool = False
    stream_ring_batch: int = 256     # head batch on every stream ring (about 10x the last rings)
    # data
    val_fraction: float | None = None  # None: 0.2 for user datasets, 0 for the procedural set
    cache_dir: str | None = None       # descriptor cache ("freeze"); None: beside the checkpoint
    # misc
    seed: int = 0
    threads: int = 1                 # 1 is fastest when other jobs share the cores (OpenMP spin-waits)
    limit: int | None = None
    labels: list[str] = field(default_factory=lambda: list(CLASSES))
    save_interval_s: float = 10.0    # head stage: at most one checkpoint per this many seconds

    @classmethod
    def for_backbone(cls, backbone: str, **overrides) -> "TrainConfig":
        """Defaults for a backbone: torchvision's video models were trained on 16 x 112 x 112
        clips (resize 128), so their presets use that; edge3d keeps the demo model's."""
        base = dict(clip_len=16, stride=16, size=112, resize_short=128, ring_size=8, head_hidden=128) \
            if backbone in TORCHVISION_DIMS else {}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(backbone=backbone, **base)

    @property
    def no_action_index(self) -> int | None:
        """The no-action class's index (after the data's labels), or None without one."""
        return len(self.labels) if self.no_action_class else None

    def spec(self) -> ModelSpec:
        if self.backbone in TORCHVISION_DIMS:
            args: dict[str, Any] = {}
            dim = TORCHVISION_DIMS[self.backbone]
        elif self.backbone == "edge3d":
            args, dim = {"width": self.width, "blocks": list(self.blocks)}, 8 * self.width
        else:
            from .errors import BackboneError
            raise BackboneError(f"unknown backbone {self.backbone!r}; available: edge3d, "
                                f"{', '.join(TORCHVISION_DIMS)}")
        labels = list(self.labels)
        if self.no_action_class:
            if NO_ACTION_LABEL in labels:
                from .errors import InputError
                raise InputError(f"the data has a class named {NO_ACTION_LABEL!r}, the name --no-action-class adds",
                                 hint="rename that class, or train without --no-action-class")
            labels.append(NO_ACTION_LABEL)
        return ModelSpec(backbone=self.backbone, backbone_args=args,
                         clip_len=self.clip_len, stride=self.stride, size=self.size,
                         resize_short=self.resize_short, ring_size=self.ring_size, dim=dim,
                         labels=labels, head_hidden=self.head_hidden,
                         long_range=self.long_range, select_ratio=self.select_ratio,
                         no_action_label=NO_ACTION_LABEL if self.no_action_class else None)


@dataclass
class TrainResult:
    checkpoint: Path
    checkpoint_bytes: int
    seconds: float
    history: dict[str, list[float]]
    validation: dict[str, Any] = field(default_factory=dict)
    data: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: dict[str, Any] | None = None

    @property
    def history_summary(self) -> dict[str, Any]:
        return {k: [round(v[0], 4), round(v[-1], 4)] for k, v in self.history.items() if v}


# ----------------------------------------------------------------------------- checkpoints per epoch
class Checkpointer:
    """Writes the model and the training state to ``out`` at epoch ends, atomically.

    The file is always a loadable gcf-trt checkpoint (the model as trained so far) whose
    ``extra["train_state"]`` says where training stood (stage, epoch, optimizer and scheduler
    state), so ``--resume`` continues from it and Ctrl-C between two writes leaves the last.
    """

    def __init__(self, model, out: Path, extra: dict, history: dict, interval_s: float = 0.0):
        self.model, self.out, self.extra, self.history = model, Path(out), extra, history
        self.interval_s = interval_s
        self.last: tuple[str, int] | None = None
        self._t = 0.0

    def save(self, stage: str, epoch: int, opt=None, sched=None, probe=None, final: bool = True) -> None:
        """``epoch`` = epochs of ``stage`` completed; ``final=False`` saves only past the interval."""
        from .compile.model import save_checkpoint
        if not final and time.time() - self._t < self.interval_s:
            return
        state = {"stage": stage, "epoch": int(epoch),
                 "optimizer": opt.state_dict() if opt is not None else None,
                 "scheduler": sched.state_dict() if sched is not None else None,
                 "probe": probe.state_dict() if probe is not None else None}
        hist = {k: [float(x) for x in v] for k, v in self.history.items()}
        save_checkpoint(self.model, self.out, extra={**self.extra, "train_state": state, "history": hist})
        self.last, self._t = (stage, int(epoch)), time.time()


def resume_point(state: dict | None, stage: str) -> int:
    """Epochs of ``stage`` already done according to a saved train state (0 when none)."""
    if not state:
        return 0
    order = ["clip", "head", "done"]
    if order.index(state["stage"]) > order.index(stage):
        return 10 ** 9                          # the whole stage is done
    return int(state["epoch"]) if state["stage"] == stage else 0


def restore_state(obj, state: dict | None, key: str, stage: str) -> None:
    if state and state["stage"] == stage and state.get(key) is not None and obj is not None:
        obj.load_state_dict(state[key])
