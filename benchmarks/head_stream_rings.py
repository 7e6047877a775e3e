"""Experiment: refit a checkpoint's GCF head on every ring a stream presents, or on each video's
last ring only (what ``gcf_trt.train.train_head`` fits without ``--no-action-class``), with the
backbone frozen.

The rings are those of :func:`gcf_trt.compile.agreement.rings` (every prefix while the ring
fills, then every sliding window).  Class loss: cross-entropy with the video's label on rings
holding at least ``--min-action`` clips' worth of the labelled action; on the other rings none,
or with ``--background-weight`` a cross-entropy towards the uniform distribution, or with
``--background-class`` towards a class "no action" added to the checkpoint's (the head-only
form of ``gcf-trt train --no-action-class``).  Gate loss: BCE
of every valid slot's gate against its clip's overlap with the action.  Writes a whole checkpoint,
so ``benchmarks/int8_flips.py --checkpoint OUT`` measures it.  Behind docs/INT8.md ("What the
gate's predictions hold").  Prints the video top-1 of the refit head on ``--test`` videos.

    python benchmarks/head_stream_rings.py --checkpoint gcf_trt/assets/demo.pt --videos TRAIN \\
        --test TEST --rings stream --seed 1 --out /tmp/stream1.pt
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from gcf_trt.compile.agreement import rings
from gcf_trt.compile.model import load_checkpoint, save_checkpoint
from gcf_trt.data import read_video
from gcf_trt.datasets import clip_overlap, read_labels
from gcf_trt.evaluate import action_class, fuse_video
from gcf_trt.preprocess import clips_from_frames


@torch.no_grad()
def video_descriptors(model, videos_dir: str) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """(descriptors [K, D], label, per-clip overlap with the action) of every video."""
    out = []
    for rec in read_labels(videos_dir):
        clips, ranges = clips_from_frames(read_video(rec.path), model.spec)
        if len(clips):
            out.append((model.backbone(torch.from_numpy(clips)).numpy(), rec.label_index,
                        clip_overlap(ranges, rec.start, rec.end)))
    return out


def training_rings(videos, ring_size: int, which: str):
    """Stacked rings ``[R, N, D]``, masks, per-slot overlaps and labels."""
    xs, ms, ovs, ys = [], [], [], []
    for desc, label, overlap in videos:
        x, m = rings(desc, ring_size)
        ov = rings(overlap[:, None].astype(np.float32), ring_size)[0][..., 0]
        if which == "last":
            x, m, ov = x[-1:], m[-1:], ov[-1:]
        xs.append(x), ms.append(m), ovs.append(ov), ys.append(np.full(len(m), label))
    return (torch.from_numpy(np.concatenate(a)) for a in (xs, ms, ovs, ys))


def _one_more_output(layer: torch.nn.Linear) -> torch.nn.Linear:
    grown = torch.nn.Linear(layer.in_features, layer.out_features + 1)
    with torch.no_grad():
        grown.weight[:-1] = layer.weight
        grown.bias[:-1] = layer.bias
    return grown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--videos", required=True, help="training videos (make-videos output with labels.csv)")
    ap.add_argument("--test", help="videos for the video top-1 line")
    ap.add_argument("--rings", choices=("stream", "last"), default="stream")
    ap.add_argument("--min-action", type=float, default=0.5, help="clips' worth of action for the class loss")
    ap.add_argument("--background-weight", type=float, default=0.0)
    ap.add_argument("--background-class", action="store_true",
                    help="add a class 'no action' and train the rings without the class loss towards it")
    ap.add_argument("--fine-tune", action="store_true", help="start from the checkpoint's head (else re-initialise)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=None, help="default 256 for stream rings, 64 for last rings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = load_checkpoint(args.checkpoint).eval()
    x, mask, overlap, y = training_rings(video_descriptors(model, args.videos), model.spec.ring_size, args.rings)
    y = y.long()
    labelled = (overlap * mask).sum(1) >= args.min_action if args.rings == "stream" else torch.ones(len(y), dtype=torch.bool)
    print(f"{len(y)} rings, {labelled.float().mean():.2f} of them with the class loss")
    head = model.head
    if args.background_class:
        # One more output, "no action": the rings a stream shows before and after the action get
        # a target of their own instead of none (or the uniform one, which makes them near-ties).
        old = head.classifier
        head.classifier = _one_more_output(old)
        model.clip_classifier = _one_more_output(model.clip_classifier)  # the spec's class count
        model.spec.labels = [*model.spec.labels, "no action"]
        y = torch.where(labelled, y, torch.full_like(y, old.out_features))
        labelled = torch.ones_like(labelled)
    if not args.fine_tune:
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    batch = args.batch or (256 if args.rings == "stream" else 64)
    steps = math.ceil(len(y) / batch)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * args.epochs)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch + 1000 * args.seed))
        head.train()
        for s in range(steps):
            i = perm[s * batch:(s + 1) * batch]
            logits, gates = head(F.dropout(x[i], 0.2, training=True), mask[i])
            logp = F.log_softmax(logits, -1)
            on = labelled[i]
            zero = logits.sum() * 0
            ce = F.nll_loss(logp[on], y[i][on]) if on.any() else zero
            uniform = (-logp[~on].mean(-1)).mean() if (~on).any() else zero
            bce = F.binary_cross_entropy(gates.clamp(1e-6, 1 - 1e-6), overlap[i], reduction="none")
            loss = ce + args.background_weight * uniform + (bce * mask[i]).sum() / mask[i].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    head.eval()
    save_checkpoint(model, args.out, {"refit_head": vars(args)})
    print(f"wrote {args.out}")
    if args.test:
        def run_head(d, m):
            with torch.no_grad():
                logits, gates = head(torch.from_numpy(d), torch.from_numpy(m))
            return logits.numpy(), gates.numpy()
        right = [action_class(fuse_video(desc, model.spec.ring_size, run_head)[0], model.spec.no_action_index) == label
                 for desc, label, _ in video_descriptors(model, args.test)]
        print(f"video top-1 on {len(right)} test videos: {np.mean(right):.4f}")


if __name__ == "__main__":
    main()
