"""Train a GCF-Net on a labelled video set (``gcf-trt make-videos``), on the CPU in minutes.

Recipe (see docs/ACCURACY.md):

1. **Clips.**  Every video is decoded and cut into clips with the shared preprocessing
   (:class:`gcf_trt.preprocess.Preprocessor` for the resize + crop, then the spec's
   normalisation; ``tests/test_train.py`` checks the result equals
   :func:`gcf_trt.preprocess.clips_from_frames`).  A clip is an *action clip* when at least
   ``action_overlap`` of its frames lie in the labelled action window, else *background*.
2. **Backbone + clip classifier** on single clips: cross-entropy with the video's label on
   action clips; on background clips a cross-entropy towards the uniform distribution ("no
   class here"), so the clip classifier used by the central-clip and averaging baselines is
   not forced to guess a class from background.  A training-only linear *actionness* probe on
   the descriptor (BCE against the clip's overlap fraction) makes the descriptor carry "is this
   the action" for the gates.  Each epoch takes every action clip and a fresh random subset of
   ``background_ratio`` x as many background clips.  Augmentations (:class:`Augment`):
   horizontal / vertical flips and time reversal with their label swaps, RGB channel
   permutation, brightness gain.
3. **Fusion head** on cached descriptors of whole videos (backbone frozen; original and
   flipped videos): cross-entropy on the video label + ``gate_weight`` x BCE between each
   clip's gate and its overlap fraction (gate supervision, which also makes the gates usable
   for temporal localization, :mod:`gcf_trt.segments`).  Videos are left-padded to
   ``ring_size`` slots with mask 0 exactly like the streaming ring; the cached set holds each
   video once as is and once mirrored and/or reversed.

``threads`` defaults to 1: on a 2-core box shared with other jobs, 2 torch threads made a
training step ~10x slower (OpenMP workers spin-waiting for a core).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import CLASSES, VideoSet, clip_overlap
from .errors import InputError
from .preprocess import Preprocessor, clip_starts
from .spec import ModelSpec

# Label-swapping augmentations: what each class becomes when the clip is mirrored or played
# backwards.  They break the "this video's texture -> this label" shortcut a small backbone
# otherwise learns on a few hundred videos (measured: chance accuracy on held-out videos
# without them): the same background now appears with the mirrored / reversed labels too.
FLIP_PAIRS = (("move_left", "move_right"), ("rotate_cw", "rotate_ccw"))
VFLIP_PAIRS = (("move_up", "move_down"), ("rotate_cw", "rotate_ccw"))
REVERSE_PAIRS = (("move_left", "move_right"), ("move_up", "move_down"), ("rotate_cw", "rotate_ccw"),
                 ("grow", "shrink"))


@dataclass
class TrainConfig:
    """Model shape and training recipe (defaults: the committed demo model)."""

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
    # backbone stage
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
    # misc
    seed: int = 0
    threads: int = 1                 # 1 beats 2 on a shared 2-core box (OpenMP spin-waits); see docs
    limit: int | None = None
    labels: list[str] = field(default_factory=lambda: list(CLASSES))

    def spec(self) -> ModelSpec:
        return ModelSpec(backbone="edge3d", backbone_args={"width": self.width, "blocks": list(self.blocks)},
                         clip_len=self.clip_len, stride=self.stride, size=self.size,
                         resize_short=self.resize_short, ring_size=self.ring_size, dim=8 * self.width,
                         labels=list(self.labels), head_hidden=self.head_hidden,
                         long_range=self.long_range, select_ratio=self.select_ratio)


@dataclass
class TrainResult:
    checkpoint: Path
    checkpoint_bytes: int
    seconds: float
    history: dict[str, list[float]]

    @property
    def history_summary(self) -> dict[str, Any]:
        return {k: [round(v[0], 4), round(v[-1], 4)] for k, v in self.history.items() if v}


# ----------------------------------------------------------------------------- clip data
@dataclass
class VideoClips:
    """One decoded video: resized/cropped frames (uint8) and its clips' bookkeeping."""

    crops: np.ndarray                  # [F', size, size, 3] uint8 BGR, sampled frames
    starts: list[int]                  # clip start indices into crops
    ranges: list[tuple[int, int]]      # source frame range of each clip (inclusive)
    overlap: np.ndarray                # [K] fraction of each clip inside the action
    label: int
    start: int
    end: int


def load_video_clips(frames, record, spec: ModelSpec, label_index: int) -> VideoClips:
    """Resize/crop every sampled frame once (the shared Preprocessor) and index the clips."""
    prep = Preprocessor(spec)
    idx = list(range(0, len(frames), spec.frame_step))
    crops = np.stack([prep.resize_crop(frames[i]) for i in idx])
    starts = clip_starts(len(idx), spec)
    ranges = [(idx[s], idx[s + spec.clip_len - 1]) for s in starts]
    return VideoClips(crops, starts, ranges, clip_overlap(ranges, record.start, record.end),
                      label_index, record.start, record.end)


def normalize(crops: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """uint8 BGR ``[..., T, H, W, 3]`` -> normalised RGB float ``[..., 3, T, H, W]``.

    Same arithmetic as :class:`~gcf_trt.preprocess.Preprocessor` (x * scale + offset, float32).
    """
    std = torch.tensor(spec.std, dtype=torch.float32)
    mean = torch.tensor(spec.mean, dtype=torch.float32)
    scale = (1.0 / (255.0 * std.double())).float()
    offset = (-mean / std)
    x = crops.flip(-1).to(torch.float32) * scale + offset  # BGR -> RGB
    return x.movedim(-1, -4)


def video_clips_tensor(v: VideoClips, spec: ModelSpec, flip: bool = False) -> torch.Tensor:
    """All clips of a video, normalised: ``[K, 3, T, H, W]``."""
    crops = torch.from_numpy(np.stack([v.crops[s:s + spec.clip_len] for s in v.starts]))
    if flip:
        crops = crops.flip(-2)
    return normalize(crops, spec)


def flip_map(labels: list[str], pairs=FLIP_PAIRS) -> list[int]:
    """Label index after a transform swapping ``pairs`` (default: horizontal flip)."""
    index = {name: i for i, name in enumerate(labels)}
    out = list(range(len(labels)))
    for a, b in pairs:
        if a in index and b in index:
            out[index[a]], out[index[b]] = index[b], index[a]
    return out


class Augment:
    """Random label-consistent clip transforms on uint8 ``[B, T, H, W, 3]`` batches.

    Horizontal flip, vertical flip, time reversal (each with its label swap), a random RGB
    channel permutation and a brightness gain (both label-free).
    """

    def __init__(self, labels: list[str], seed: int = 0):
        self.maps = [torch.tensor(flip_map(labels, p)) for p in (FLIP_PAIRS, VFLIP_PAIRS, REVERSE_PAIRS)]
        self.dims = (-2, -3, -4)   # W, H, T
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(x)
        for fmap, dim in zip(self.maps, self.dims):
            sel = torch.from_numpy(self.rng.random(b) < 0.5)
            shape = [b] + [1] * (x.dim() - 1)
            x = torch.where(sel.view(shape), x.flip(dim), x)
            labels = torch.where(sel, fmap[labels], labels)
        perms = torch.from_numpy(np.stack([self.rng.permutation(3) for _ in range(b)]))
        x = torch.gather(x, -1, perms.view(b, 1, 1, 1, 3).expand_as(x))
        gain = torch.from_numpy(self.rng.uniform(0.75, 1.25, b).astype(np.float32)).view(b, 1, 1, 1, 1)
        x = (x.to(torch.float32) * gain).clamp(0, 255).round().to(torch.uint8)
        return x, labels

    def video(self, crops: torch.Tensor, label: int, overlap: np.ndarray, which: tuple[bool, bool, bool]):
        """Transform a whole video's clips ``[K, T, H, W, 3]`` (time reversal also reverses the clip order)."""
        for on, fmap, dim in zip(which, self.maps, self.dims):
            if on:
                crops = crops.flip(dim)
                label = int(fmap[label])
        if which[2]:
            crops, overlap = crops.flip(0), overlap[::-1].copy()
        return crops, label, overlap


def load_set(videos_dirs, spec: ModelSpec, limit: int | None = None, progress: bool = True) -> list[VideoClips]:
    """Decode the labelled videos of one or several directories (``limit``: first N in total)."""
    dirs = [videos_dirs] if isinstance(videos_dirs, (str, Path)) else list(videos_dirs)
    sets = [VideoSet(d) for d in dirs]
    pairs = [(vs, i) for vs in sets for i in range(len(vs))]
    if limit is not None:
        pairs = pairs[:limit]
    label_index = {name: i for i, name in enumerate(spec.labels)}
    out = []
    it = pairs
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="decode", unit="video")
    for vs, i in it:
        frames, rec = vs[i]
        if rec.label not in label_index:
            raise InputError(f"{rec.path.name}: label {rec.label!r} is not one of the model's labels")
        v = load_video_clips(frames, rec, spec, label_index[rec.label])
        if v.starts:
            out.append(v)
    if not out:
        raise InputError(f"no video in {', '.join(map(str, dirs))} is long enough for one clip of {spec.clip_len} frames")
    return out


# ----------------------------------------------------------------------------- losses
def clip_loss(logits: torch.Tensor, act_logit: torch.Tensor, labels: torch.Tensor,
              overlap: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """CE on action clips, CE-to-uniform on background clips, BCE actionness probe."""
    is_action = overlap >= cfg.action_overlap
    logp = F.log_softmax(logits, -1)
    zero = logits.sum() * 0
    ce = F.nll_loss(logp[is_action], labels[is_action]) if is_action.any() else zero
    bg = (-logp[~is_action].mean(-1)).mean() if (~is_action).any() else zero
    act = F.binary_cross_entropy_with_logits(act_logit, overlap)
    loss = ce + cfg.background_weight * bg + cfg.actionness_weight * act
    acc = (logits[is_action].argmax(-1) == labels[is_action]).float().mean().item() if is_action.any() else float("nan")
    return loss, {"loss": loss.item(), "ce": ce.item(), "acc": acc}


def head_loss(logits: torch.Tensor, gates: torch.Tensor, labels: torch.Tensor, overlap: torch.Tensor,
              mask: torch.Tensor, gate_weight: float) -> torch.Tensor:
    """Video CE + gate supervision (BCE of each valid clip's gate vs its overlap fraction)."""
    ce = F.cross_entropy(logits, labels)
    g = gates.clamp(1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(g, overlap, reduction="none")
    bce = (bce * mask).sum() / mask.sum().clamp(min=1)
    return ce + gate_weight * bce


def pad_left(desc: list[torch.Tensor], overlaps: list[np.ndarray], n: int):
    """Stack videos into ring-shaped ``[B, N, D]`` with empty slots first (mask 0)."""
    d = desc[0].shape[-1]
    x = torch.zeros(len(desc), n, d)
    mask = torch.zeros(len(desc), n)
    ov = torch.zeros(len(desc), n)
    for b, (dv, o) in enumerate(zip(desc, overlaps)):
        k = min(len(dv), n)
        x[b, n - k:] = dv[-k:]
        mask[b, n - k:] = 1
        ov[b, n - k:] = torch.as_tensor(o[-k:])
    return x, mask, ov


# ----------------------------------------------------------------------------- training
def train_backbone(model, videos: list[VideoClips], cfg: TrainConfig, history: dict,
                   log: Callable[[str], None] = print) -> None:
    from tqdm import tqdm
    spec = model.spec
    augment = Augment(spec.labels, cfg.seed)
    items = [(vi, k) for vi, v in enumerate(videos) for k in range(len(v.starts))]
    is_action = np.array([videos[vi].overlap[k] >= cfg.action_overlap for vi, k in items])
    action_ids, background_ids = np.flatnonzero(is_action), np.flatnonzero(~is_action)
    n_bg = min(len(background_ids), int(round(cfg.background_ratio * max(len(action_ids), 1))))
    probe = nn.Linear(spec.dim, 1)
    params = list(model.backbone.parameters()) + list(model.clip_classifier.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil((len(action_ids) + n_bg) / cfg.batch)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.15)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    bar = tqdm(total=total, desc="backbone", unit="batch")
    for epoch in range(cfg.epochs):
        # every action clip, a fresh random subset of the (more numerous) background clips
        order = rng.permutation(np.concatenate([action_ids, rng.choice(background_ids, n_bg, replace=False)]))
        run_loss, run_acc, nb = 0.0, 0.0, 0
        for s in range(steps_per_epoch):
            sel = [items[j] for j in order[s * cfg.batch:(s + 1) * cfg.batch]]
            crops = np.stack([videos[vi].crops[videos[vi].starts[k]:videos[vi].starts[k] + spec.clip_len]
                              for vi, k in sel])
            labels = torch.tensor([videos[vi].label for vi, _ in sel])
            overlap = torch.tensor([float(videos[vi].overlap[k]) for vi, k in sel])
            x = torch.from_numpy(crops)
            if cfg.flip:
                x, labels = augment(x, labels)
            clips = normalize(x, spec)
            desc = model.backbone(clips)
            loss, stats = clip_loss(model.clip_classifier(desc), probe(desc).squeeze(-1), labels, overlap, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            history["clip_loss"].append(stats["loss"])
            run_loss += stats["loss"]
            run_acc += 0 if math.isnan(stats["acc"]) else stats["acc"]
            nb += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{run_loss / nb:.3f}", acc=f"{run_acc / nb:.2f}")
        history["clip_epoch_loss"].append(run_loss / max(nb, 1))
    bar.close()
    model.eval()


@torch.no_grad()
def video_descriptors(model, videos: list[VideoClips], batch: int = 64, augment: "Augment | None" = None,
                      seed: int = 0):
    """Backbone descriptors ``[K, D]`` of every video (eval mode), with labels and overlaps.

    With ``augment``, each video gets one random non-identity mirror / reversal combination.
    """
    rng = np.random.default_rng(seed)
    descs, labels, overlaps = [], [], []
    for v in videos:
        crops = torch.from_numpy(np.stack([v.crops[s:s + model.spec.clip_len] for s in v.starts]))
        label, overlap = v.label, v.overlap
        if augment is not None:
            code = int(rng.integers(1, 8))
            crops, label, overlap = augment.video(crops, label, overlap, tuple(bool(code >> b & 1) for b in range(3)))
        clips = normalize(crops, model.spec)
        descs.append(torch.cat([model.backbone(clips[i:i + batch]) for i in range(0, len(clips), batch)]))
        labels.append(label)
        overlaps.append(overlap)
    return descs, labels, overlaps


def train_head(model, desc: list[torch.Tensor], labels: list[int], overlaps: list[np.ndarray],
               cfg: TrainConfig, history: dict) -> None:
    """Train ``model.head`` on cached descriptors (the backbone does not change)."""
    from tqdm import tqdm
    n = model.spec.ring_size
    x, mask, ov = pad_left(desc, overlaps, n)
    y = torch.tensor(labels)
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.head_weight_decay)
    steps = math.ceil(len(y) / cfg.head_batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps * cfg.head_epochs))
    gen = torch.Generator().manual_seed(cfg.seed)
    head.train()
    for _ in tqdm(range(cfg.head_epochs), desc="head", unit="epoch"):
        perm = torch.randperm(len(y), generator=gen)
        tot = 0.0
        for s in range(steps):
            idx = perm[s * cfg.head_batch:(s + 1) * cfg.head_batch]
            xb = F.dropout(x[idx], cfg.descriptor_dropout, training=True)
            logits, gates = head(xb, mask[idx])
            loss = head_loss(logits, gates, y[idx], ov[idx], mask[idx], cfg.gate_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        history["head_loss"].append(tot / len(y))
    head.eval()


def train(videos_dir, out, cfg: TrainConfig | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train both stages and write the checkpoint (atomic); returns where and the loss history."""
    from .compile.model import GCFNet, save_checkpoint
    cfg = cfg or TrainConfig()
    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    spec = cfg.spec()
    model = GCFNet(spec)
    videos = load_set(videos_dir, spec, cfg.limit)
    history: dict[str, list[float]] = {"clip_loss": [], "clip_epoch_loss": [], "head_loss": []}
    n_clips = sum(len(v.starts) for v in videos)
    log(f"{len(videos)} videos, {n_clips} clips; model {sum(p.numel() for p in model.parameters())} parameters")
    train_backbone(model, videos, cfg, history, log)
    desc, labels, overlaps = video_descriptors(model, videos)
    if cfg.flip:
        d2, l2, o2 = video_descriptors(model, videos, augment=Augment(spec.labels, cfg.seed + 1), seed=cfg.seed + 1)
        desc, labels, overlaps = desc + d2, labels + l2, overlaps + o2
    train_head(model, desc, labels, overlaps, cfg, history)
    extra = {"train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
             "videos": [str(d) for d in ([videos_dir] if isinstance(videos_dir, (str, Path)) else videos_dir)], "num_videos": len(videos), "num_clips": n_clips,
             "history": {k: [float(v[0]), float(v[-1])] for k, v in history.items() if v}}
    path = save_checkpoint(model, out, extra=extra)
    return TrainResult(path, path.stat().st_size, time.time() - t0, history)
