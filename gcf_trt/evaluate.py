"""Paper-style evaluation on a labelled held-out set: central clip, average, GCF, engines.

Every video is decoded with OpenCV and cut into clips with
:func:`gcf_trt.preprocess.clips_from_frames` (the offline reference of the stream's clip
assembly), once; the PyTorch model and each engines directory see those same clip arrays.

*Whole-video head.*  The head fuses ``N = spec.ring_size`` slots.  A video of ``K <= N`` clips
is one left-padded ring (mask 0 in the empty slots, exactly as the stream's ring while it
fills), so GCF sees every clip of the video.  The demo model uses ``ring_size = 16`` and
videos of at most 128 frames = 16 clips, so this is the only case in our tables.  For longer
videos (``K > N``) the head runs on windows of N clips with a step of N/2, the last window
ending at the last clip; the video's logits are the mean over windows and a clip's gate the
maximum over the windows that contain it.

Metrics:
    central_clip_top1: the clip classifier on the central clip (the paper's "central clip").
    average_top1: mean of the clip classifier's logits over all clips ("dense clips averaged").
    gcf_top1: the GCF head over all clips (PyTorch FP32).
    diagnostics: gated_average_top1 (clip logits weighted by GCF's gates) and
        oracle_action_average_top1 (clip logits averaged over the true action clips), see
        :func:`diagnostic_predictions`.
    engines: for each engines directory, GCF top-1 through the compiled backbone + head, and
        its agreement with PyTorch; ``int8_top1`` is the one whose components are INT8.
    segment_tiou: mean temporal IoU between the ground-truth action and the best-scoring
        segment :func:`gcf_trt.segments.segments_from_gates` finds in the PyTorch gates.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .datasets import VideoSet, clip_overlap
from .errors import InputError
from .fsutil import atomic_file
from .manifest import write_json_atomic
from .preprocess import clips_from_frames
from .spec import BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS
from .progress import progress_bar
from .segments import Segment, segments_from_gates, temporal_iou

HeadFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
BackboneFn = Callable[[np.ndarray], np.ndarray]


def head_windows(k: int, n: int) -> list[tuple[int, int]]:
    """Clip index windows ``[a, b)`` the head is run on for a video of ``k`` clips."""
    if k <= n:
        return [(0, k)]
    step = max(1, n // 2)
    starts = list(range(0, k - n + 1, step))
    if starts[-1] != k - n:
        starts.append(k - n)
    return [(a, a + n) for a in starts]


def action_class(logits: np.ndarray, no_action_index: int | None = None) -> int:
    """The video's class: the top logit among the actions.  Every video of an evaluation or
    validation set shows an action, so a model's no-action class (``no_action_index``) answers
    "when", not "which": it is left out here."""
    logits = np.asarray(logits, np.float64).reshape(-1).copy()
    if no_action_index is not None:
        logits[no_action_index] = -np.inf
    return int(logits.argmax())


def fuse_video(desc: np.ndarray, n: int, head: HeadFn) -> tuple[np.ndarray, np.ndarray]:
    """GCF over a whole video's descriptors ``[K, D]`` -> (logits ``[C]``, gates ``[K]``)."""
    k, d = desc.shape
    wins = head_windows(k, n)
    x = np.zeros((len(wins), n, d), np.float32)
    mask = np.zeros((len(wins), n), np.float32)
    for w, (a, b) in enumerate(wins):
        x[w, n - (b - a):] = desc[a:b]
        mask[w, n - (b - a):] = 1
    logits, gates = head(x, mask)
    gate = np.zeros(k, np.float32)
    for w, (a, b) in enumerate(wins):
        gate[a:b] = np.maximum(gate[a:b], gates[w, n - (b - a):])
    return logits.mean(0), gate


def batched(fn: BackboneFn, clips: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([fn(clips[i:i + batch]) for i in range(0, len(clips), batch)])


# ----------------------------------------------------------------------------- per video
@dataclass
class VideoResult:
    name: str
    label: int
    start: int
    end: int
    num_frames: int
    ranges: list[tuple[int, int]]
    central: int
    average: int
    gcf: int
    gated_average: int
    oracle_average: int
    gates: np.ndarray
    segments: list[Segment]
    tiou: float | None               # None: the video has no annotated action window
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)


def torch_fns(model) -> tuple[BackboneFn, HeadFn]:
    import torch

    @torch.no_grad()
    def backbone(clips: np.ndarray) -> np.ndarray:
        return model.backbone(torch.from_numpy(clips)).numpy()

    @torch.no_grad()
    def head(x: np.ndarray, mask: np.ndarray):
        logits, gates = model.head(torch.from_numpy(x), torch.from_numpy(mask))
        return logits.numpy(), gates.numpy()

    return backbone, head


def engine_fns(engines) -> tuple[BackboneFn, HeadFn]:
    def backbone(clips: np.ndarray) -> np.ndarray:
        return engines.backbone.infer({BACKBONE_INPUT: np.ascontiguousarray(clips, np.float32)})[BACKBONE_OUTPUT]

    def head(x: np.ndarray, mask: np.ndarray):
        out = engines.head.infer({HEAD_INPUTS[0]: x, HEAD_INPUTS[1]: mask})
        return out[HEAD_OUTPUTS[0]], out[HEAD_OUTPUTS[1]]

    return backbone, head


def baseline_predictions(model, desc: np.ndarray) -> tuple[int, int]:
    """(central clip, average of clip logits) predictions of one video's descriptors ``[K, D]``."""
    import torch
    with torch.no_grad():
        d = torch.from_numpy(desc)[None]
        mask = torch.ones(1, len(desc))
        central = action_class(model.central_clip_logits(d, mask).numpy(), model.spec.no_action_index)
        average = action_class(model.average_logits(d, mask).numpy(), model.spec.no_action_index)
    return central, average


def diagnostic_predictions(model, desc: np.ndarray, gates: np.ndarray, overlap: np.ndarray) -> tuple[int, int]:
    """Two diagnostics that split GCF's gain into "which clips" and "how they are fused".

    gated average: the clip classifier's logits averaged with GCF's gates as weights (GCF's
    clip selection, the baselines' classifier).  oracle average: the clip classifier's logits
    averaged over the ground-truth action clips (overlap >= 0.5; all clips when none is) -
    what averaging reaches with a perfect selector.
    """
    import torch
    with torch.no_grad():
        clip_logits = model.clip_logits(torch.from_numpy(desc)).numpy()
    w = gates.astype(np.float64)
    skip = model.spec.no_action_index
    gated = action_class((clip_logits * w[:, None]).sum(0) if w.sum() > 0 else clip_logits.mean(0), skip)
    sel = overlap >= 0.5
    oracle = action_class(clip_logits[sel if sel.any() else slice(None)].mean(0), skip)
    return gated, oracle


def best_segment_tiou(segments: Sequence[Segment], start: int, end: int) -> float:
    """tIoU of the highest-scoring segment with the ground truth (0 when there is none)."""
    if not segments:
        return 0.0
    best = max(segments, key=lambda s: s.score)
    return temporal_iou((best.start, best.end), (start, end))


def evaluate(checkpoint: str | os.PathLike, videos_dir: str | os.PathLike,
             engines_dirs: Sequence[str | os.PathLike] = (), *, limit: int | None = None,
             threads: int = 1, progress: bool = True, segment_options: dict | None = None,
             split: str = "all", val_fraction: float | None = None, seed: int | None = None,
             cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (and optionally engines) on a labelled dataset.

    ``videos_dir`` is any layout :class:`~gcf_trt.datasets.VideoSet` reads (class folders, an
    annotation file, a make-videos directory).  ``split``: ``"all"`` videos, or the ``"val"`` /
    ``"train"`` side of the split ``gcf-trt train`` made (the split column, else
    ``val_fraction`` and ``seed``; None takes the training run's from the checkpoint).  Segment tIoU is
    computed over the videos with an annotated action window (None when there is none).
    ``cache_dir``: the descriptor cache of ``gcf-trt train`` (:class:`gcf_trt.descriptors.DescriptorCache`,
    keyed by the backbone's weights, so only this model's entries match): PyTorch descriptors
    found there are not recomputed (engines always run on freshly decoded clips).  ``"auto"``:
    ``.gcf-trt-cache`` beside the checkpoint when it exists (training's default place).

    Returns the report dict (see the module docstring); ``report["videos"]`` has per-video rows.
    """
    import torch
    from .compile.model import load_checkpoint, model_hash
    from .runtime.engines import load_engines

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint)
    spec = model.spec
    label_index = {name: i for i, name in enumerate(spec.labels)}
    vs = VideoSet(videos_dir, labels=spec.labels)
    if split != "all":
        if split not in ("train", "val"):
            raise InputError(f"--split must be all, train or val, got {split!r}")
        trained = _train_config(checkpoint)
        if val_fraction is None:
            val_fraction = trained.get("val_fraction")
            if val_fraction is None:    # train's default: 0.2 for user data, 0 for make-videos sets
                val_fraction = 0.0 if vs.layout == "procedural" else 0.2
        seed = trained.get("seed", 0) if seed is None else seed
        vs = vs.split(val_fraction, seed)[0 if split == "train" else 1]
        if not len(vs):
            raise InputError(f"{videos_dir}: the {split} split is empty",
                             hint="use --split all, or the --val-fraction the model was trained with")
    n_videos = len(vs) if limit is None else min(limit, len(vs))
    seg_opts = dict(segment_options or {})
    t_backbone, t_head = torch_fns(model)
    engines = []
    for path in engines_dirs:
        eng = load_engines(path, expect_model_hash=model_hash(model))
        if eng.spec.to_dict() != spec.to_dict():
            raise InputError(f"{path} was built with another spec than {checkpoint}")
        engines.append((str(path), eng, *engine_fns(eng)))
    results: list[VideoResult] = []
    cache = None
    if cache_dir == "auto":           # where gcf-trt train puts it by default, if it is there
        auto = Path(checkpoint).parent / ".gcf-trt-cache"
        cache_dir = auto if auto.is_dir() else None
    if cache_dir is not None:
        from .descriptors import DescriptorCache
        cache = DescriptorCache(model, cache_dir)
    t0 = time.time()
    bar = progress_bar(range(n_videos), desc="eval", unit="video", enabled=progress)
    try:
        for i in bar:
            hit = cache.get(vs.records[i].path) if cache is not None and not engines else None
            if hit is not None:        # PyTorch descriptors from the training cache: no decode
                rec, (desc, ranges) = vs.records[i], hit
                n_frames = rec.num_frames
                if len(ranges) == 0:
                    continue
            else:
                frames, rec = vs[i]
                n_frames = len(frames)
                clips, ranges = clips_from_frames(frames, spec)
                if len(clips) == 0:
                    continue
                desc = batched(t_backbone, clips)
                if cache is not None:
                    cache.put(rec.path, desc, ranges)
            central, average = baseline_predictions(model, desc)
            logits, gates = fuse_video(desc, spec.ring_size, t_head)
            gated, oracle = diagnostic_predictions(model, desc, gates, clip_overlap(ranges, rec.start, rec.end))
            segs = segments_from_gates(gates, ranges, **seg_opts)
            r = VideoResult(rec.path.name, label_index[rec.label], rec.start, rec.end, n_frames, ranges,
                            central, average, action_class(logits, spec.no_action_index), gated, oracle, gates, segs,
                            best_segment_tiou(segs, rec.start, rec.end) if rec.window else None)
            for name, _, e_backbone, e_head in engines:
                e_desc = batched(e_backbone, clips)
                e_logits, e_gates = fuse_video(e_desc, spec.ring_size, e_head)
                r.engines[name] = {"pred": action_class(e_logits, spec.no_action_index), "gates": e_gates}
            results.append(r)
    finally:
        bar.close()
        for _, eng, *_ in engines:
            eng.close()
    if not results:
        raise InputError(f"no video in {videos_dir} is long enough for one clip")
    report = summarize(results, spec.labels)
    report.update({
        "checkpoint": str(checkpoint), "model_hash": model_hash(model), "videos_dir": str(videos_dir),
        "seed": _seed_of(vs), "layout": vs.layout, "split": split, "num_videos": len(results), "num_clips": int(sum(len(r.ranges) for r in results)),
        "ring_size": spec.ring_size, "max_clips_per_video": int(max(len(r.ranges) for r in results)),
        "seconds": round(time.time() - t0, 1),
        "descriptor_cache": None if cache is None else {"dir": str(cache_dir), "hits": cache.hits,
                                                        "computed": cache.misses},
    })
    eng_rows = {}
    for name, eng, *_ in engines:
        comps = eng.manifest.get("components", {})
        precision = comps.get("backbone", {}).get("precision", "?")
        preds = np.array([r.engines[name]["pred"] for r in results])
        labels = np.array([r.label for r in results])
        torch_preds = np.array([r.gcf for r in results])
        eng_rows[name] = {"precision": precision, "backbone_precision": precision,
                          "head_precision": comps.get("head", {}).get("precision", "?"),
                          "runtime": comps.get("backbone", {}).get("runtime", "?"),
                          "top1": float((preds == labels).mean()),
                          "agreement_with_pytorch": float((preds == torch_preds).mean()),
                          "max_gate_diff": float(max(np.abs(r.engines[name]["gates"] - r.gates).max()
                                                     for r in results))}
    report["engines"] = eng_rows
    int8 = [row for row in eng_rows.values() if row["precision"] == "int8"]
    fp32 = [row for row in eng_rows.values() if row["precision"] == "fp32"]
    report["int8_top1"] = int8[0]["top1"] if int8 else None
    report["fp32_engine_top1"] = fp32[0]["top1"] if fp32 else None
    if not int8:
        report["int8_note"] = "no INT8 engines directory was evaluated (pass --engines DIR of an int8 build)"
    report["videos"] = [{"file": r.name, "label": spec.labels[r.label], "start": r.start, "end": r.end,
                         "central": spec.labels[r.central], "average": spec.labels[r.average],
                         "gcf": spec.labels[r.gcf], "tiou": None if r.tiou is None else round(r.tiou, 4),
                         "gates": [round(float(g), 4) for g in r.gates],
                         "segments": [s.to_dict() for s in r.segments]} for r in results]
    return report


def _train_config(checkpoint) -> dict[str, Any]:
    """The ``train_config`` gcf-trt train stored in the checkpoint ({} for other checkpoints)."""
    import torch
    try:
        extra = torch.load(checkpoint, map_location="cpu", weights_only=True).get("extra", {})
    except Exception:  # noqa: BLE001 - load_checkpoint already accepted the file; extra is optional
        return {}
    cfg = extra.get("train_config") if isinstance(extra, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def _seed_of(vs: VideoSet):
    seeds = sorted({r.seed for r in vs.records if r.seed is not None})
    if not seeds:
        return None                    # a user's dataset: no generator seed
    return seeds[0] if len(seeds) == 1 else seeds


def summarize(results: Sequence[VideoResult], labels: Sequence[str]) -> dict[str, Any]:
    """Top-1 of each method, per-class GCF accuracy and mean tIoU over ``results``."""
    y = np.array([r.label for r in results])
    tious = [r.tiou for r in results if r.tiou is not None]
    out = {
        "central_clip_top1": float((np.array([r.central for r in results]) == y).mean()),
        "average_top1": float((np.array([r.average for r in results]) == y).mean()),
        "gcf_top1": float((np.array([r.gcf for r in results]) == y).mean()),
        "diagnostics": {
            "gated_average_top1": float((np.array([r.gated_average for r in results]) == y).mean()),
            "oracle_action_average_top1": float((np.array([r.oracle_average for r in results]) == y).mean()),
        },
        # only videos with an annotated window have a ground truth to localize
        "segment_tiou": float(np.mean(tious)) if tious else None,
        "segment_recall_at_0.5": float(np.mean([t >= 0.5 for t in tious])) if tious else None,
        "segment_videos": len(tious),
    }
    per_class = {}
    for c, name in enumerate(labels):
        sel = y == c
        if sel.any():
            per_class[name] = {"n": int(sel.sum()),
                               "central": float((np.array([r.central for r in results])[sel] == c).mean()),
                               "average": float((np.array([r.average for r in results])[sel] == c).mean()),
                               "gcf": float((np.array([r.gcf for r in results])[sel] == c).mean())}
    out["per_class"] = per_class
    return out


# ----------------------------------------------------------------------------- outputs
def markdown_table(report: dict[str, Any]) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"
    lines = [
        (f"# Accuracy on {report['num_videos']} held-out videos (seed {report['seed']})"
         if report.get("seed") is not None else
         f"# Accuracy on {report['num_videos']} videos ({report.get('layout', 'dataset')}, split {report.get('split', 'all')})"), "",
        f"Checkpoint `{report['checkpoint']}` (model {report['model_hash']}); videos `{report['videos_dir']}`; "
        f"{report['num_clips']} clips, ring of {report['ring_size']} slots (max {report['max_clips_per_video']} "
        f"clips per video: " + ("the head sees every clip)." if report['max_clips_per_video'] <= report['ring_size']
                                else "longer videos are fused in windows of the ring's size, logits averaged)."), "",
        f"Command: `{report.get('command', '')}`", "",
        "| method | top-1 (%) |", "|---|---|",
        f"| central clip | {pct(report['central_clip_top1'])} |",
        f"| average of clip logits (all clips) | {pct(report['average_top1'])} |",
        f"| GCF fusion (PyTorch FP32) | {pct(report['gcf_top1'])} |",
    ]
    for name, row in report.get("engines", {}).items():
        lines.append(f"| GCF engines {row['precision']} ({row['runtime']}, `{name}`) | {pct(row['top1'])} "
                     f"(agrees with PyTorch on {pct(row['agreement_with_pytorch'])} %) |")
    if report.get("int8_top1") is None:
        lines.append(f"| GCF INT8 engines | n/a: {report.get('int8_note', '')} |")
    diag = report.get("diagnostics", {})
    if diag:
        lines += [f"| *diagnostic:* clip logits averaged with GCF's gates as weights | "
                  f"{pct(diag['gated_average_top1'])} |",
                  f"| *diagnostic:* clip logits averaged over the ground-truth action clips (oracle) | "
                  f"{pct(diag['oracle_action_average_top1'])} |"]
    lines += ["", f"GCF - average: {100 * (report['gcf_top1'] - report['average_top1']):+.2f} points; "
              f"GCF - central clip: {100 * (report['gcf_top1'] - report['central_clip_top1']):+.2f} points.", "",
              (f"Temporal localization from the gates: mean tIoU {report['segment_tiou']:.3f} "
               f"(best-scoring segment vs ground truth, {report.get('segment_videos', report['num_videos'])} videos "
               f"with an annotated window); tIoU >= 0.5 on {pct(report['segment_recall_at_0.5'])} % of them."
               if report.get("segment_tiou") is not None else
               "Temporal localization: n/a (no video has an annotated action window; add start_s,end_s "
               "to the annotation file)"), "",
              "| class | n | central | average | GCF |", "|---|---|---|---|---|"]
    for name, row in report["per_class"].items():
        lines.append(f"| {name} | {row['n']} | {pct(row['central'])} | {pct(row['average'])} | {pct(row['gcf'])} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], json_path: str | os.PathLike | None,
                 md_path: str | os.PathLike | None, per_video_path: str | os.PathLike | None = None) -> None:
    """Write what is asked for, atomically: the summary JSON (no per-video rows), the markdown
    table and the per-video rows; ``None`` skips that file."""
    if json_path:
        summary = {k: v for k, v in report.items() if k != "videos"}
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(json_path), summary)
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(md_path) as tmp:
            tmp.write_text(markdown_table(report))
    if per_video_path:
        write_json_atomic(Path(per_video_path), report["videos"])


def command_line() -> str:
    return " ".join(["gcf-trt", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("gcf-trt") else " ".join(sys.argv)
