"""Train a GCF-Net on a user's labelled videos (or the procedural set), on a CPU.

Data: any layout :class:`gcf_trt.datasets.VideoSet` reads (class folders, an annotation file with
optional action windows, ``gcf-trt make-videos`` output), split into train / validation with
the clips of one video on one side (docs/TRAINING.md).

Modes (:class:`TrainConfig` ``mode``): ``scratch`` (edge3d from random weights, the demo
model's recipe below), ``finetune`` (the same, starting from a backbone weights file) and
``freeze`` (the backbone as loaded from the file; stage 2 below trains the clip classifier
on cached descriptors instead of the backbone, then stage 3).

Recipe (see docs/ACCURACY.md):

1. **Clips.**  Every video is decoded and cut into clips with the shared preprocessing
   (:class:`gcf_trt.preprocess.Preprocessor` for the resize + crop, then the spec's
   normalisation; ``tests/test_train.py`` checks the result equals
   :func:`gcf_trt.preprocess.clips_from_frames`).  A clip is an *action clip* when at least
   ``action_overlap`` of its frames lie in the labelled action window (the whole video when
   none is annotated), else *background*.
2. **Backbone + clip classifier** on single clips: cross-entropy with the video's label on
   action clips; on background clips a cross-entropy towards the uniform distribution ("no
   class here"), so the clip classifier used by the central-clip and averaging baselines is
   not forced to guess a class from background.  A training-only linear *actionness* probe on
   the descriptor (BCE against the clip's overlap fraction) makes the descriptor carry "is this
   the action" for the gates.  Each epoch takes every action clip and a fresh random subset of
   ``background_ratio`` x as many background clips.  Augmentations (:class:`Augment`):
   horizontal flip, and for the procedural classes vertical flip and time reversal with their
   label swaps; RGB channel permutation, brightness gain.
3. **Fusion head** on cached descriptors of whole videos (backbone frozen; original and, for
   the procedural set, flipped videos): cross-entropy on the video label + ``gate_weight`` x
   BCE between each clip's gate and its overlap fraction (gate supervision, which also makes
   the gates usable for temporal localization, :mod:`gcf_trt.segments`).  Videos are
   left-padded to ``ring_size`` slots with mask 0 exactly like the streaming ring.

Every epoch ends with an atomic checkpoint that also holds the training state (``--resume``).

This module holds the losses, the training loops and :func:`train`; the configuration and the
per-epoch checkpoints are in :mod:`gcf_trt.train_config`, the clip data and augmentations in
:mod:`gcf_trt.train_clips`.

``threads`` defaults to 1: when other jobs share the cores, 2 torch threads made a training
step ~10x slower (OpenMP workers spin-waiting for a core); on a machine of your own, raise it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import CLASSES
from .datasets import VideoSet, clip_overlap
from .descriptors import DescriptorCache
from .progress import progress_bar
from .errors import InputError
from .train_clips import Augment, VideoClips, load_set, load_video_clips, normalize, video_clips_tensor
from .train_config import MODES, Checkpointer, TrainConfig, TrainResult, restore_state, resume_point


# ----------------------------------------------------------------------------- losses
def clip_loss(logits: torch.Tensor, act_logit: torch.Tensor, labels: torch.Tensor,
              overlap: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """CE on action clips, CE-to-uniform on background clips, BCE actionness probe."""
    is_action = overlap >= cfg.action_overlap
    logp = F.log_softmax(logits, -1)
    zero = logits.sum() * 0
    ce = F.nll_loss(logp[is_action], labels[is_action]) if is_action.any() else zero
    # Towards the uniform distribution, with or without a no-action class: a backbone trained to
    # put background clips in that class came out weaker (docs/INT8.md, "A class for no
    # action"), so only the head learns the class.
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


def stream_rings(desc: list[torch.Tensor], labels: list[int], overlaps: list[np.ndarray], n: int,
                 min_action: float, no_action_index: int):
    """Every ring a stream presents, ``[R, N, D]`` with masks, per-slot overlaps and labels.

    Ring k of a video holds clips ``max(0, k-N+1) .. k`` right-aligned (empty slots first, as
    :func:`pad_left` and the runtime's ring).  Its label is the video's when the ring holds at
    least ``min_action`` clips' worth of the action, else ``no_action_index``: a stream shows
    rings before and after the action, and the head learns to say so.
    """
    d = desc[0].shape[-1]
    total = sum(len(v) for v in desc)
    x, mask, ov = torch.zeros(total, n, d), torch.zeros(total, n), torch.zeros(total, n)
    y = torch.empty(total, dtype=torch.long)
    r = 0
    for dv, label, o in zip(desc, labels, overlaps):
        o = torch.as_tensor(np.asarray(o, np.float32))
        for k in range(len(dv)):
            lo = max(0, k - n + 1)
            m = k + 1 - lo
            x[r, n - m:] = dv[lo:k + 1]
            mask[r, n - m:] = 1
            ov[r, n - m:] = o[lo:k + 1]
            y[r] = label if float(o[lo:k + 1].sum()) >= min_action else no_action_index
            r += 1
    return x, mask, ov, y


def _say(message: str) -> None:
    """Default ``log``: flushed at once, so a redirected log shows each epoch as it ends."""
    print(message, flush=True)


# ----------------------------------------------------------------------------- training
def _epoch_log(log, stage: str, epoch: int, epochs: int, t_stage: float, done_before: int, **stats) -> None:
    """One line per epoch (the bar is hidden when stderr is not a terminal), with the stage's ETA."""
    ran = epoch - done_before
    eta = (time.time() - t_stage) / max(ran, 1) * (epochs - epoch)
    parts = " ".join(f"{k} {v:.3f}" for k, v in stats.items() if v is not None and not math.isnan(v))
    log(f"{stage} epoch {epoch}/{epochs}: {parts}; ETA {eta:.0f} s")


def train_backbone(model, videos: list[VideoClips], cfg: TrainConfig, history: dict,
                   log: Callable[[str], None] = _say, ckpt: Checkpointer | None = None,
                   resume: dict | None = None, progress: bool = True) -> None:
    """Stage 1 on clips: backbone + clip classifier (+ the actionness probe), every epoch saved."""
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
    done = min(resume_point(resume, "clip"), cfg.epochs)
    restore_state(opt, resume, "optimizer", "clip")
    restore_state(sched, resume, "scheduler", "clip")
    restore_state(probe, resume, "probe", "clip")
    model.train()
    t_stage = time.time()
    for epoch in range(done, cfg.epochs):
        # the epoch's draws depend only on (seed, epoch): a resumed run sees the same batches
        rng = np.random.default_rng([cfg.seed, 1, epoch])
        augment.rng = np.random.default_rng([cfg.seed, 2, epoch])
        order = rng.permutation(np.concatenate([action_ids, rng.choice(background_ids, n_bg, replace=False)]))
        run_loss, run_acc, nb = 0.0, 0.0, 0
        with progress_bar(total=steps_per_epoch, desc=f"backbone {epoch + 1}/{cfg.epochs}", unit="batch",
                          enabled=progress) as bar:
            for s in range(steps_per_epoch):
                sel = [items[j] for j in order[s * cfg.batch:(s + 1) * cfg.batch]]
                crops = np.stack([videos[vi].crops[videos[vi].starts[k]:videos[vi].starts[k] + spec.clip_len]
                                  for vi, k in sel])
                labels = torch.tensor([videos[vi].label for vi, _ in sel])
                overlap = torch.tensor([float(videos[vi].overlap[k]) for vi, k in sel])
                x = torch.from_numpy(crops)
                if cfg.flip:
                    x, labels = augment(x, labels)
                desc = model.backbone(normalize(x, spec))
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
                bar.set_postfix_str(f"loss {run_loss / nb:.3f} acc {run_acc / nb:.2f}")
        history["clip_epoch_loss"].append(run_loss / max(nb, 1))
        _epoch_log(log, "backbone", epoch + 1, cfg.epochs, t_stage, done, loss=run_loss / max(nb, 1),
                   acc=run_acc / max(nb, 1))
        if ckpt:
            model.eval()
            ckpt.save("clip", epoch + 1, opt, sched, probe)
            model.train()
    model.eval()


@dataclass
class VideoDescriptors:
    """One video's clip descriptors ``[K, D]`` and its labels (what the head stage needs)."""

    desc: torch.Tensor
    label: int
    overlap: np.ndarray
    ranges: list[tuple[int, int]]
    window: bool = True


def train_clip_classifier(model, videos: list[VideoDescriptors], cfg: TrainConfig, history: dict,
                          log: Callable[[str], None] = _say, ckpt: Checkpointer | None = None,
                          resume: dict | None = None, progress: bool = True) -> None:
    """Stage 1 with a frozen backbone: the clip classifier on cached descriptors (same loss)."""
    desc = torch.cat([v.desc for v in videos])
    labels_all = torch.tensor([v.label for v in videos for _ in range(len(v.desc))])
    overlap_all = torch.from_numpy(np.concatenate([v.overlap for v in videos]).astype(np.float32))
    is_action = overlap_all.numpy() >= cfg.action_overlap
    action_ids, background_ids = np.flatnonzero(is_action), np.flatnonzero(~is_action)
    n_bg = min(len(background_ids), int(round(cfg.background_ratio * max(len(action_ids), 1))))
    clf = model.clip_classifier
    opt = torch.optim.AdamW(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = max(cfg.batch, 64)                     # descriptors are cheap: bigger steps
    steps = math.ceil((len(action_ids) + n_bg) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps * cfg.epochs))
    done = min(resume_point(resume, "clip"), cfg.epochs)
    restore_state(opt, resume, "optimizer", "clip")
    restore_state(sched, resume, "scheduler", "clip")
    t_stage = time.time()
    # no actionness probe on a frozen backbone: it could not change the descriptor
    loss_cfg = replace(cfg, actionness_weight=0.0)
    for epoch in range(done, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, 1, epoch])
        order = rng.permutation(np.concatenate([action_ids, rng.choice(background_ids, n_bg, replace=False)]))
        clf.train()
        run, nb = 0.0, 0
        with progress_bar(range(steps), desc=f"clip classifier {epoch + 1}/{cfg.epochs}", unit="batch",
                          enabled=progress) as bar:
            for s in bar:
                idx = torch.from_numpy(order[s * batch:(s + 1) * batch])
                x = F.dropout(desc[idx], cfg.descriptor_dropout, training=True)
                ov = overlap_all[idx]
                loss, _ = clip_loss(clf(x), torch.zeros(len(idx)), labels_all[idx], ov, loss_cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                run += loss.item()
                nb += 1
        clf.eval()
        history["clip_epoch_loss"].append(run / max(nb, 1))
        _epoch_log(log, "clip classifier", epoch + 1, cfg.epochs, t_stage, done, loss=run / max(nb, 1))
        if ckpt:
            ckpt.save("clip", epoch + 1, opt, sched, final=epoch + 1 == cfg.epochs)


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
               cfg: TrainConfig, history: dict, ckpt: Checkpointer | None = None,
               resume: dict | None = None, progress: bool = True, log: Callable[[str], None] | None = None) -> None:
    """Train ``model.head`` on cached descriptors (the backbone does not change): on each video's
    last ring, or with ``cfg.no_action_class`` on every ring a stream presents (:func:`stream_rings`)."""
    n = model.spec.ring_size
    if cfg.no_action_class:
        x, mask, ov, y = stream_rings(desc, labels, overlaps, n, cfg.action_overlap, cfg.no_action_index)
        batch = cfg.stream_ring_batch
    else:
        x, mask, ov = pad_left(desc, overlaps, n)
        y = torch.tensor(labels)
        batch = cfg.head_batch
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.head_weight_decay)
    steps = math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps * cfg.head_epochs))
    done = min(resume_point(resume, "head"), cfg.head_epochs)
    restore_state(opt, resume, "optimizer", "head")
    restore_state(sched, resume, "scheduler", "head")
    t_stage = time.time()
    with progress_bar(range(done, cfg.head_epochs), desc="head", unit="epoch", total=cfg.head_epochs,
                      initial=done, enabled=progress) as bar:
        for epoch in bar:
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(len(y), generator=gen)
            head.train()
            tot = 0.0
            for s in range(steps):
                idx = perm[s * batch:(s + 1) * batch]
                xb = F.dropout(x[idx], cfg.descriptor_dropout, training=True)
                logits, gates = head(xb, mask[idx])
                loss = head_loss(logits, gates, y[idx], ov[idx], mask[idx], cfg.gate_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item() * len(idx)
            head.eval()
            history["head_loss"].append(tot / len(y))
            bar.set_postfix_str(f"loss {tot / len(y):.3f}")
            last = epoch + 1 == cfg.head_epochs
            if log and (last or (epoch + 1) % max(1, cfg.head_epochs // 10) == 0):
                _epoch_log(log, "head", epoch + 1, cfg.head_epochs, t_stage, done, loss=tot / len(y))
            if ckpt:
                # head epochs take milliseconds; a 100 MB checkpoint each would dominate, so the
                # head stage saves at most once per save_interval_s (and always at its end)
                ckpt.save("head", epoch + 1, opt, sched, final=last)
    head.eval()


# ----------------------------------------------------------------------------- descriptor cache
@torch.no_grad()
def cached_descriptors(model, dataset: VideoSet, cache_dir: str | Path, *, batch: int = 8,
                       progress: bool = True, stats: dict | None = None,
                       log: Callable[[str], None] | None = None) -> list[VideoDescriptors]:
    """Descriptors of every record of ``dataset``, computed once per (backbone, preprocessing,
    video file) and kept in ``cache_dir`` (:class:`DescriptorCache`).

    ``stats`` (optional) receives ``{"hits": n, "misses": m}`` (video files).
    """
    cache = DescriptorCache(model, cache_dir)
    spec = model.spec
    index = {name: i for i, name in enumerate(spec.labels)}
    memo: dict[Path, tuple[torch.Tensor, list[tuple[int, int]]]] = {}
    out = []
    model.eval()
    t0 = t_said = time.time()
    with progress_bar(range(len(dataset)), desc="descriptors", unit="video", enabled=progress) as bar:
        for i in bar:
            if log and i and time.time() - t_said > 30:   # the bar is hidden off a terminal: say it is alive
                eta = (time.time() - t0) / i * (len(dataset) - i)
                log(f"descriptors: {i}/{len(dataset)} videos, ETA {eta:.0f} s")
                t_said = time.time()
            rec = dataset.records[i]
            if rec.path not in memo:
                hit = cache.get(rec.path)
                if hit is not None:
                    memo[rec.path] = (torch.from_numpy(hit[0]), hit[1])
                else:
                    frames, drec = dataset[i]
                    v = load_video_clips(frames, drec, spec, index[rec.label])
                    if not v.starts:
                        memo[rec.path] = (torch.zeros(0, spec.dim), [])
                    else:
                        clips = video_clips_tensor(v, spec)
                        d = torch.cat([model.backbone(clips[j:j + batch]) for j in range(0, len(clips), batch)])
                        memo[rec.path] = (d, list(v.ranges))
                    cache.put(rec.path, memo[rec.path][0].numpy(), memo[rec.path][1])
            d, ranges = memo[rec.path]
            if len(ranges) == 0:
                continue
            out.append(VideoDescriptors(d, index[rec.label], clip_overlap(ranges, rec.start, rec.end), ranges,
                                        rec.window))
    if stats is not None:
        stats["hits"] = stats.get("hits", 0) + cache.hits
        stats["misses"] = stats.get("misses", 0) + cache.misses
    return out


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model, videos: list[VideoDescriptors]) -> dict[str, Any]:
    """Top-1 of GCF, the average of clip logits and the central clip on held-out videos."""
    from .evaluate import action_class, baseline_predictions, fuse_video, torch_fns
    if not videos:
        return {}
    _, head = torch_fns(model)
    y, gcf, avg, cen = [], [], [], []
    for v in videos:
        d = v.desc.numpy().astype(np.float32)
        logits, _ = fuse_video(d, model.spec.ring_size, head)
        c, a = baseline_predictions(model, d)
        y.append(v.label)
        gcf.append(action_class(logits, model.spec.no_action_index))
        avg.append(a)
        cen.append(c)
    y = np.array(y)
    return {"videos": int(len(y)), "gcf_top1": float((np.array(gcf) == y).mean()),
            "average_top1": float((np.array(avg) == y).mean()),
            "central_clip_top1": float((np.array(cen) == y).mean())}


# ----------------------------------------------------------------------------- the whole run
def _open_sets(videos) -> list[VideoSet]:
    """Open one or several datasets with one label list (the procedural classes in their
    canonical order when every set is procedural, else the sorted union)."""
    items = [videos] if isinstance(videos, (str, Path, VideoSet)) else list(videos)
    sets = [v if isinstance(v, VideoSet) else VideoSet(v) for v in items]
    if len(sets) > 1:
        names = sorted({n for vs in sets for n in vs.labels})
        if all(vs.layout == "procedural" for vs in sets) and set(names) <= set(CLASSES):
            names = list(CLASSES)
        if any(vs.labels != names for vs in sets):
            sets = [VideoSet(vs.root, labels=names, layout=vs.layout) for vs in sets]
    return sets


def train(videos, out, cfg: TrainConfig | None = None, log: Callable[[str], None] = _say, *,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Train a GCF-Net on labelled videos and write the checkpoint (atomically, every epoch).

    Args:
        videos: one dataset or several (directories or annotation files; any layout
            :class:`~gcf_trt.datasets.VideoSet` reads).
        out: the checkpoint path; rewritten at each epoch's end with the training state.
        cfg: the recipe; ``cfg.mode`` picks scratch / finetune / freeze (see :class:`TrainConfig`).
        resume: continue from ``out``'s saved training state (same config and data).
        progress: progress bars (drawn only on a terminal); ``log`` gets one line per epoch.

    Raises:
        InputError, CheckpointError, BackboneError: bad data, weights file or resume point.
    """
    from .compile.model import GCFNet, load_checkpoint, load_pretrained_backbone
    from .errors import CheckpointError
    cfg = cfg or TrainConfig()
    if cfg.mode not in MODES:
        raise InputError(f"unknown training mode {cfg.mode!r}", hint=f"use one of {', '.join(MODES)}")
    if cfg.mode == "finetune" and not cfg.backbone_weights and not resume:
        raise InputError("--finetune needs --backbone-weights FILE (the weights to start from)",
                         hint="pass the state dict file, or drop --finetune to train from scratch")
    out = Path(out)
    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    sets = _open_sets(videos)
    cfg.labels = list(sets[0].labels)
    for vs in sets:
        log(vs.summary_text())
    spec = cfg.spec()
    state = None
    if resume:
        model = load_checkpoint(out)
        if model.spec.to_dict() != spec.to_dict():
            diff = [k for k, v in spec.to_dict().items() if model.spec.to_dict().get(k) != v]
            raise CheckpointError(f"{out} was trained with another configuration ({', '.join(diff)} differ)",
                                  hint="resume with the same options and data, or train to a new --out")
        state = torch.load(out, map_location="cpu", weights_only=True)["extra"].get("train_state")
        if not state:
            raise CheckpointError(f"{out} has no training state to resume from",
                                  hint="it was not written by gcf-trt train; train to a new --out")
        log(f"{out} finished training; nothing to resume (validation recomputed)" if state["stage"] == "done"
            else f"resuming {out} after {state['stage']} epoch {state['epoch']}")
    else:
        model = GCFNet(spec)
        if cfg.backbone_weights:
            load_pretrained_backbone(model.backbone, spec.backbone, cfg.backbone_weights)
            log(f"backbone {spec.backbone}: weights from {cfg.backbone_weights}")
    procedural = all(vs.layout == "procedural" for vs in sets)
    val_fraction = cfg.val_fraction if cfg.val_fraction is not None else (0.0 if procedural else 0.2)
    splits = [vs.split(val_fraction, cfg.seed) for vs in sets]
    train_sets = [t for t, _ in splits]
    val_sets = [v for _, v in splits if len(v)]
    if cfg.limit is not None:
        train_sets = [vs.subset(vs.records[:cfg.limit]) for vs in train_sets]
    history: dict[str, list[float]] = {"clip_loss": [], "clip_epoch_loss": [], "head_loss": []}
    if state:
        history.update({k: list(v) for k, v in
                        torch.load(out, map_location="cpu", weights_only=True)["extra"].get("history", {}).items()})
    extra = {"train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
             "videos": [str(vs.root) for vs in sets],
             "data": [vs.summary() for vs in sets],
             "num_train_videos": sum(len(t) for t in train_sets),
             "num_val_videos": sum(len(v) for v in val_sets)}
    ckpt = Checkpointer(model, out, extra, history, cfg.save_interval_s)
    cache_stats: dict[str, int] = {}
    log(f"{extra['num_train_videos']} training videos, {extra['num_val_videos']} validation videos; "
        f"{spec.backbone} backbone, mode {cfg.mode}; {sum(p.numel() for p in model.parameters())} parameters")
    try:
        if cfg.mode == "freeze":
            for p in model.backbone.parameters():
                p.requires_grad_(False)
            cache = Path(cfg.cache_dir) if cfg.cache_dir else out.parent / ".gcf-trt-cache"
            tr = [v for t in train_sets for v in cached_descriptors(model, t, cache, progress=progress,
                                                                     stats=cache_stats, log=log)]
            va = [v for s in val_sets for v in cached_descriptors(model, s, cache, progress=progress,
                                                                   stats=cache_stats, log=log)]
            log(f"descriptor cache {cache}: {cache_stats['hits']} videos reused, {cache_stats['misses']} computed")
            if not tr:
                raise InputError(f"no training video is long enough for one clip of {spec.clip_len} frames",
                                 hint="use longer videos or a smaller --clip-len")
            train_clip_classifier(model, tr, cfg, history, log, ckpt, state, progress)
            desc, labels, overlaps = [v.desc for v in tr], [v.label for v in tr], [v.overlap for v in tr]
        else:
            clips = load_set(train_sets, spec, progress=progress)
            train_backbone(model, clips, cfg, history, log, ckpt, state, progress)
            desc, labels, overlaps = video_descriptors(model, clips)
            if cfg.flip:
                d2, l2, o2 = video_descriptors(model, clips, augment=Augment(spec.labels, cfg.seed + 1),
                                               seed=cfg.seed + 1)
                desc, labels, overlaps = desc + d2, labels + l2, overlaps + o2
            del clips
            va = []
            if val_sets:
                vclips = load_set(val_sets, spec, progress=progress)
                d, l, o = video_descriptors(model, vclips)
                va = [VideoDescriptors(dv, lv, ov, vc.ranges) for dv, lv, ov, vc in zip(d, l, o, vclips)]
        train_head(model, desc, labels, overlaps, cfg, history, ckpt, state, progress, log)
    except KeyboardInterrupt:
        where = f"{ckpt.last[0]} epoch {ckpt.last[1]}" if ckpt.last else "none written yet"
        log(f"interrupted: the last good checkpoint is {out} ({where}); continue with --resume")
        raise
    validation = validate(model, va)
    extra["validation"] = validation
    ckpt.extra = extra
    ckpt.save("done", 0)
    if validation:
        log(f"validation ({validation['videos']} videos): GCF top-1 {100 * validation['gcf_top1']:.1f}%, "
            f"average of clips {100 * validation['average_top1']:.1f}%, "
            f"central clip {100 * validation['central_clip_top1']:.1f}%")
    return TrainResult(out, out.stat().st_size, time.time() - t0, history, validation, extra["data"],
                       {"stage": state["stage"], "epoch": state["epoch"]} if state else None)


_CLI_FIELDS = ("clip_len", "stride", "size", "resize_short", "ring_size", "epochs", "head_epochs", "width",
               "batch", "lr", "seed", "threads", "gate_weight", "limit", "val_fraction", "cache_dir",
               "no_action_class")


def train_from_args(opts: dict[str, Any], log: Callable[[str], None] = _say) -> TrainResult:
    """``gcf-trt train``: the command line's options (argparse names) -> :func:`train`.

    Checks the values here so the messages name the flags (``--epochs must be >= 1``).
    """
    for name in ("clip_len", "stride", "size", "resize_short", "ring_size", "epochs", "head_epochs", "width",
                 "batch", "threads", "limit"):
        v = opts.get(name)
        if v is not None and v < (0 if name in ("epochs", "head_epochs") else 1):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be >= {0 if name in ('epochs', 'head_epochs') else 1}, got {v}")
    vf = opts.get("val_fraction")
    if vf is not None and not 0.0 <= vf < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {vf}", hint="e.g. 0.2 for a fifth of the videos")
    if opts.get("lr") is not None and opts["lr"] <= 0:
        raise InputError(f"--lr must be > 0, got {opts['lr']}")
    backbone = opts.get("backbone") or "edge3d"
    if opts.get("freeze_backbone"):
        mode = "freeze"
    elif opts.get("finetune"):
        mode = "finetune"
    else:
        mode = "finetune" if opts.get("backbone_weights") else "scratch"
    if backbone != "edge3d" and mode == "scratch":
        raise InputError(f"training {backbone} from random weights on a CPU would take days",
                         hint="pass --backbone-weights FILE (e.g. Kinetics-400 weights) with --freeze-backbone "
                              "or --finetune, or use --backbone edge3d")
    cfg = TrainConfig.for_backbone(backbone, **{k: opts.get(k) for k in _CLI_FIELDS})
    if opts.get("stride") is None and opts.get("clip_len") is not None:
        cfg.stride = cfg.clip_len
    if opts.get("resize_short") is None and opts.get("size") is not None:
        cfg.resize_short = max(cfg.resize_short, int(round(cfg.size * 8 / 7)))
    cfg.mode = mode
    cfg.backbone_weights = opts.get("backbone_weights")
    return train(opts["videos"], opts["out"], cfg, log=log, resume=bool(opts.get("resume")))
