"""Quantization-aware fine-tuning of an edge3d GCF-Net so that its INT8 engines hold the gate.

An experiment behind docs/INT8.md ("Quantization-aware fine-tuning"): it writes a new
checkpoint; `gcf-trt build --precision int8` then quantizes it with the product's own recipe and
its gate decides.  The fake quantization mirrors the CPU graph that recipe writes
(``gcf_trt.compile.precision.quantize_int8``): BN folded into the convs; uint8 asymmetric
per-tensor activations at every tensor the Q/DQ graph quantizes (each conv output but the
stem's first, each ReLU and residual Add output); int8 symmetric per-channel weights (8-bit);
ranges by MinMax over calibration clips, recomputed as the weights move.

Loss, on the rings a stream presents (each video's ring prefixes, then its sliding windows; the
FP32 head frozen unless --head-lr): KL(teacher || student INT8) + KL(teacher || student FP32) +
KL(student FP32 || student INT8), so that the student's INT8 and FP32 predictions agree with each
other (what the gate measures) and with the model it started from (accuracy); optionally hinges
on the logit margin (--margin) and on the gates' distance from the selection threshold
(--gate-margin).  Measured variants and results: docs/INT8.md.

    python benchmarks/int8_qat.py --checkpoint gcf_trt/assets/demo.pt --videos TRAIN_DIR --out student.pt
"""
from __future__ import annotations

import argparse
import copy
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gcf_trt.compile.model import Edge3D, load_checkpoint, save_checkpoint
from gcf_trt.data import read_video
from gcf_trt.preprocess import clips_from_frames


def fold(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv + eval-mode BN -> (weight, bias) of one conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale.view(-1, 1, 1, 1, 1)
    b = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias * scale
    return w.detach().clone(), b.detach().clone()


class QConv(nn.Module):
    """A BN-folded conv whose weight is fake-quantized per output channel (symmetric)."""

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d, qmax: int, quantize_weight: bool = True):
        super().__init__()
        w, b = fold(conv, bn)
        self.weight, self.bias = nn.Parameter(w), nn.Parameter(b)
        self.stride, self.padding = conv.stride, conv.padding
        self.qmax, self.quantize_weight = qmax, quantize_weight

    def forward(self, x: torch.Tensor, quant: bool) -> torch.Tensor:
        w = self.weight
        if quant and self.quantize_weight:
            s = w.detach().abs().amax(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-12) / self.qmax
            w = w + (torch.clamp(torch.round(w / s), -self.qmax, self.qmax) * s - w).detach()
        return F.conv3d(x, w, self.bias, self.stride, self.padding)


class ActQuant(nn.Module):
    """uint8 asymmetric per-tensor fake quantization with MinMax ranges set by calibration."""

    def __init__(self):
        super().__init__()
        self.lo, self.hi = 0.0, 0.0
        self.recording = False
        self.noise = False  # training: uniform noise of one quantization step instead of rounding

    def forward(self, x: torch.Tensor, quant: bool) -> torch.Tensor:
        if self.recording:
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
            return x
        if not quant:
            return x
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        s = max(hi - lo, 1e-12) / 255.0
        zp = round(-lo / s)
        xc = torch.clamp(x, lo, hi)
        if self.noise and self.training:
            # The real kernels' rounding differs from any simulation in the last bit, and those
            # flips grow through the layers: train against the noise, not one rounding pattern.
            return xc + (torch.rand_like(xc) - 0.5) * s
        q = (torch.clamp(torch.round(xc / s) + zp, 0, 255) - zp) * s
        return xc + (q - xc).detach()


class QEdge3D(nn.Module):
    """Edge3D with BN folded and fake quantization where the CPU Q/DQ graph quantizes."""

    def __init__(self, net: Edge3D, qmax: int):
        super().__init__()
        st = net.stem
        self.stem1 = QConv(st[0], st[1], qmax, quantize_weight=False)  # the FP32 stem conv
        self.stem2 = QConv(st[3], st[4], qmax)
        self.blocks = nn.ModuleList()
        for blk in net.stages:
            body = blk.body
            mods = nn.ModuleDict({"c1": QConv(body[0], body[1], qmax), "c2": QConv(body[3], body[4], qmax)})
            if isinstance(blk.shortcut, nn.Sequential):
                mods["sc"] = QConv(blk.shortcut[0], blk.shortcut[1], qmax)
            self.blocks.append(mods)
        self.points = nn.ModuleList()
        self._next = 0

    def _point(self, t: torch.Tensor, quant: bool) -> torch.Tensor:
        """The next quantization point of this forward pass (created on the first pass)."""
        if self._next == len(self.points):
            self.points.append(ActQuant())
        self._next += 1
        return self.points[self._next - 1](t, quant)

    def forward(self, x: torch.Tensor, quant: bool) -> torch.Tensor:
        self._next = 0
        aq = lambda t: self._point(t, quant)  # noqa: E731
        # ORT's CPU Q/DQ graph drops each ReLU into the uint8 quantization of its input (the
        # range [0, max] clamps as ReLU does), so a conv/Add + ReLU is one quantization point.
        x = aq(F.relu(self.stem1(x, quant)))           # stem conv1 FP32, its ReLU output quantized
        x = aq(F.relu(self.stem2(x, quant)))
        for m in self.blocks:
            y = aq(F.relu(m["c1"](x, quant)))
            y = aq(m["c2"](y, quant))
            sc = aq(m["sc"](x, quant)) if "sc" in m else x
            x = aq(F.relu(y + sc))
        return x.mean(dim=(2, 3, 4))

    def write_back(self, net: Edge3D) -> None:
        """Store the (fine-tuned) folded weights in ``net``: conv = folded weight, BN = identity + bias."""
        def put(conv, bn, q: QConv):
            conv.weight.data.copy_(q.weight.data)
            bn.weight.data.fill_(1.0)
            bn.bias.data.copy_(q.bias.data)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        st = net.stem
        put(st[0], st[1], self.stem1)
        put(st[3], st[4], self.stem2)
        for blk, m in zip(net.stages, self.blocks):
            put(blk.body[0], blk.body[1], m["c1"])
            put(blk.body[3], blk.body[4], m["c2"])
            if "sc" in m:
                put(blk.shortcut[0], blk.shortcut[1], m["sc"])


def calibrate(student: QEdge3D, clips: torch.Tensor) -> None:
    for p in student.points:
        p.lo = p.hi = 0.0
        p.recording = True
    with torch.no_grad():
        for i in range(0, len(clips), 16):
            student(clips[i:i + 16], quant=False)
    for p in student.points:
        p.recording = False


def ring_prefixes(desc: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rings a stream presents for one video's clip descriptors ``[K, D]`` (K <= N: the
    prefixes, valid slots last; K > N: then the sliding windows)."""
    k, d = desc.shape
    rings, masks = [], []
    for t in range(1, k + 1):
        window = desc[max(0, t - n):t]
        pad = n - window.shape[0]
        rings.append(torch.cat([desc.new_zeros(pad, d), window]))
        masks.append(torch.cat([desc.new_zeros(pad), desc.new_ones(window.shape[0])]))
    return torch.stack(rings), torch.stack(masks)


def distillation_loss(student_int8: torch.Tensor, student_fp32: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student INT8) + KL(teacher || student FP32) + KL(student FP32 || student INT8),
    from ring logits ``[R, C]``.

    The targets are log-probabilities (``log_target``): with the student's FP32 softmax as a
    probability target, a probability that underflows to 0 (a confident width-32 model) gives a
    finite loss and a NaN gradient (d/dt t log t = log t + 1), which made the width-32 run diverge.
    """
    lq, lf, lt = (F.log_softmax(x, 1) for x in (student_int8, student_fp32, teacher))
    return (F.kl_div(lq, lt, reduction="batchmean", log_target=True)
            + F.kl_div(lf, lt, reduction="batchmean", log_target=True)
            + F.kl_div(lq, lf, reduction="batchmean", log_target=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--videos", required=True, help="training videos (not the gate's)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--videos-per-step", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--recalibrate-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.0, help="logit margin of the teacher's class (0 = off)")
    ap.add_argument("--margin-weight", type=float, default=0.1)
    ap.add_argument("--gate-margin", type=float, default=0.0, help="distance of the gates from the selection threshold")
    ap.add_argument("--gate-margin-weight", type=float, default=1.0)
    ap.add_argument("--act-noise", action="store_true", help="uniform noise of one step instead of rounding activations")
    ap.add_argument("--head-lr", type=float, default=0.0, help="fine-tune the head too (0 = frozen)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(2)

    teacher = load_checkpoint(args.checkpoint).eval()
    spec = teacher.spec
    if not isinstance(teacher.backbone, Edge3D):
        raise SystemExit("edge3d backbones only")
    videos = []
    for p in sorted(Path(args.videos).glob("*.mp4")):
        clips, _ = clips_from_frames(read_video(p), spec)
        if len(clips):
            videos.append(torch.from_numpy(clips))
    print(f"{len(videos)} videos, {sum(len(v) for v in videos)} clips")
    with torch.no_grad():
        t_desc = [teacher.backbone(v) for v in videos]
        t_logits = [teacher.head(*ring_prefixes(d, spec.ring_size))[0] for d in t_desc]
    qmax = 127  # the CPU graph's 8-bit weights (7-bit, qmax 63, before 2026-12-04 on CPUs without VNNI)
    student = QEdge3D(teacher.backbone, qmax)
    calib = torch.cat(videos)[torch.randperm(sum(len(v) for v in videos))[:64]]
    student(calib[:1], quant=False)  # creates the quantization points
    calibrate(student, calib)
    for p in student.points:
        p.noise = args.act_noise
    head = copy.deepcopy(teacher.head)  # the student's head: frozen, or fine-tuned with --head-lr
    for p in head.parameters():
        p.requires_grad_(args.head_lr > 0)
    groups = [{"params": list(student.parameters()), "lr": args.lr, "base": args.lr}]
    if args.head_lr > 0:
        groups.append({"params": list(head.parameters()), "lr": args.head_lr, "base": args.head_lr})
    opt = torch.optim.Adam(groups)

    def evaluate() -> tuple[float, float, float]:
        student.eval()
        agree_q = agree_fp = agree_self = total = 0
        with torch.no_grad():
            for v, tl in zip(videos, t_logits):
                lq = head(*ring_prefixes(student(v, quant=True), spec.ring_size))[0].argmax(1)
                lf = head(*ring_prefixes(student(v, quant=False), spec.ring_size))[0].argmax(1)
                tt = tl.argmax(1)
                agree_q += int((lq == tt).sum())
                agree_fp += int((lf == tt).sum())
                agree_self += int((lq == lf).sum())
                total += len(tt)
        student.train()
        return agree_q / total, agree_fp / total, agree_self / total

    print("before: simulated INT8 vs teacher %.4f, student FP32 vs teacher %.4f, INT8 vs FP32 %.4f" % evaluate())
    start = time.perf_counter()
    skipped = 0
    for step in range(1, args.steps + 1):
        decay = 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = g["base"] * decay
        lr = args.lr * decay
        picks = random.sample(range(len(videos)), args.videos_per_step)
        loss = torch.zeros(())
        for i in picks:
            rings_q = ring_prefixes(student(videos[i], quant=True), spec.ring_size)
            rings_f = ring_prefixes(student(videos[i], quant=False), spec.ring_size)
            (lq, gq), (lf, gf) = head(*rings_q), head(*rings_f)
            loss = loss + distillation_loss(lq, lf, t_logits[i])
            if args.margin > 0:  # the teacher's class ahead of the runner-up by a margin, on both paths
                target = t_logits[i].argmax(1)
                for logits in (lq, lf):
                    top = logits.gather(1, target[:, None])[:, 0]
                    rest = logits.scatter(1, target[:, None], float("-inf")).amax(1)
                    loss = loss + args.margin_weight * F.relu(args.margin - (top - rest)).mean()
            if args.gate_margin > 0:  # gates away from the selection threshold, on both paths
                for gates, (_, mask) in ((gq, rings_q), (gf, rings_f)):
                    gap = (gates - head.select_ratio * gates.amax(1, keepdim=True)).abs()
                    valid = (mask > 0) & (gates < gates.amax(1, keepdim=True))  # the top gate is always kept
                    if valid.any():
                        loss = loss + args.gate_margin_weight * F.relu(args.gate_margin - gap[valid]).mean()
        if not torch.isfinite(loss):  # a step that would poison the weights is skipped, and counted
            skipped += 1
            continue
        opt.zero_grad()
        (loss / len(picks)).backward()
        norm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        if not torch.isfinite(norm):  # a finite loss can still have a non-finite gradient
            skipped += 1
            continue
        opt.step()
        if step % args.recalibrate_every == 0:
            calibrate(student, calib)
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}: loss {float(loss.detach()) / len(picks):.4f}, lr {lr:.1e}, {time.perf_counter() - start:.0f} s; "
                  "agreement (sim INT8 / FP32 vs teacher, INT8 vs FP32) %.4f %.4f %.4f" % evaluate(), flush=True)
    out = copy.deepcopy(teacher)
    student.write_back(out.backbone)
    out.head.load_state_dict(head.state_dict())
    with torch.no_grad():  # the written model computes the student's FP32 function
        probe = videos[0][:4]
        diff = float((out.backbone(probe) - student(probe, quant=False)).abs().max())
    save_checkpoint(out, args.out, extra={"qat": {"from": str(args.checkpoint), "steps": args.steps, "lr": args.lr,
                                                  "weight_qmax": qmax, "videos": len(videos)}})
    print(f"wrote {args.out} (max |write-back diff| {diff:.1e}; {skipped} non-finite steps skipped)")


if __name__ == "__main__":
    main()
