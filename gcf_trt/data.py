"""The procedural action videos: a deterministic generator of labelled test and training videos.

The labelled-dataset loaders (class folders, annotation files, this set's ``labels.csv``,
splits) are in :mod:`gcf_trt.datasets`.

torch-free (numpy + OpenCV): the demo generates its test video without importing torch.

A video (``W x H`` = 128 x 96, 64-128 frames) shows one *actor* (an arrow-like polygon) over a
textured background that pans, with 1-2 clutter objects doing a random walk, camera noise
and brightness flicker.  The actor performs the labelled action during one contiguous window
covering 25-50 % of the frames (``start``..``end`` inclusive, written to ``labels.csv``), at a
speed independent of the window's length (a translation that leaves the frame re-enters on
the other side; growing / shrinking restarts at the size limit).
Outside the window the actor idles (small jitter) and makes short *bursts* (6-10 frames) of
action-like motion.  The bursts' classes do not depend on the label: each video draws a
*distractor class* uniformly from all classes (the label included) and most bursts use it.
A burst therefore looks, inside one clip, like a piece of some action; what tells the real
action apart is temporal context (it lasts 16+ frames and is one contiguous stretch).  This is
the structure of trimmed-from-untrimmed benchmarks (Kinetics clips of a YouTube video) that
GCF-Net's gates target: some clips are relevant, others look like other classes.

Classes (screen directions; y grows downwards, so clockwise = increasing image angle):
``move_left, move_right, move_up, move_down, rotate_cw, rotate_ccw, grow, shrink, bounce``.

Files: ``make_videos(out, count, seed)`` writes ``video_00000.mp4`` ... (OpenCV ``mp4v``) and
``labels.csv`` (``file,label,label_index,start,end,num_frames,seed``).  Generation is
deterministic: video *i* of seed *s* depends only on ``(s, i)``.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .errors import InputError, VideoError
from .fsutil import atomic_file

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw",
           "grow", "shrink", "bounce")
WIDTH, HEIGHT = 128, 96
FPS = 25.0
LABELS_CSV = "labels.csv"
CSV_FIELDS = ("file", "label", "label_index", "start", "end", "num_frames", "seed")

# The model's centre crop (resize_short 72 of 96 rows, crop 64) sees x in ~[21, 107] and
# y in ~[5, 91]; the actor's centre stays well inside that box.
X_MIN, X_MAX = 34.0, 94.0
Y_MIN, Y_MAX = 20.0, 76.0
S_MIN, S_MAX = 0.55, 1.7
# An action's translation wraps around this range (the object leaves the view and re-enters).
WRAP_X = (8.0, 120.0)
WRAP_Y = (2.0, 94.0)

# Arrow-like polygon (unit radius): elongated and asymmetric, so rotation is visible.
_ARROW = np.array([[1.0, 0.0], [0.1, 0.55], [0.1, 0.22], [-0.9, 0.22], [-0.9, -0.22],
                   [0.1, -0.22], [0.1, -0.55]], np.float64)


@dataclass
class GenConfig:
    """Knobs of the generator (defaults are the documented dataset)."""

    min_frames: int = 64
    max_frames: int = 128
    frame_multiple: int = 8          # lengths are multiples of this (whole clips of 8)
    min_action: float = 0.25         # action length as a fraction of the video
    max_action: float = 0.50
    burst_len: tuple[int, int] = (6, 10)
    burst_rate: float = 0.045        # expected bursts per background frame
    distractor_share: float = 0.75   # share of bursts that use the video's distractor class
    noise_sigma: float = 5.0
    clutter: tuple[int, int] = (1, 2)
    width: int = WIDTH
    height: int = HEIGHT


@dataclass
class ObjectTrack:
    """Per-frame state of one polygon: centre, angle (rad), scale, radius (px), colour."""

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    radius: float
    color: tuple[int, int, int]
    shape: np.ndarray = field(default_factory=lambda: _ARROW.copy())


@dataclass
class VideoPlan:
    """Everything needed to render one video (and its ground truth)."""

    label: int
    start: int
    end: int                    # inclusive
    num_frames: int
    actor: ObjectTrack
    clutter: list[ObjectTrack]
    background: np.ndarray      # large BGR texture
    pan: np.ndarray             # [F, 2] top-left offset of the view in the texture
    noise_seed: int
    bursts: list[tuple[int, int, int]]  # (start, end inclusive, class)
    distractor: int
    config: GenConfig

    @property
    def label_name(self) -> str:
        return CLASSES[self.label]


# ----------------------------------------------------------------------------- planning
def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency coloured noise + a few soft lines and blobs (BGR uint8)."""
    base = rng.uniform(40, 150, 3)
    tex = np.empty((h, w, 3), np.float32)
    for c in range(3):
        small = rng.normal(0, 1, (h // 8 + 1, w // 8 + 1)).astype(np.float32)
        tex[:, :, c] = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]
    tex = base + 22 * tex
    fine = rng.normal(0, 8, (h, w, 1)).astype(np.float32)
    tex += cv2.GaussianBlur(fine, (3, 3), 0)[:, :, None]
    img = np.clip(tex, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(6, 12))):
        color = tuple(int(v) for v in rng.uniform(30, 200, 3))
        p1 = tuple(int(v) for v in (rng.uniform(0, w), rng.uniform(0, h)))
        p2 = tuple(int(v) for v in (rng.uniform(0, w), rng.uniform(0, h)))
        if rng.random() < 0.5:
            cv2.line(img, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.circle(img, p1, int(rng.integers(4, 14)), color, -1, cv2.LINE_AA)
    return img


def _color(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, int, int]:
    for _ in range(20):
        c = rng.uniform(0, 255, 3)
        if c.max() - c.min() > 90 and (avoid is None or np.abs(c - avoid).sum() > 120):
            return tuple(int(v) for v in c)
    return (40, 220, 250)


def _segments_free(num: int, start: int, end: int) -> list[tuple[int, int]]:
    """Background frame ranges (inclusive) around the action window."""
    out = []
    if start > 0:
        out.append((0, start - 1))
    if end < num - 1:
        out.append((end + 1, num - 1))
    return out


def plan_video(seed: int, index: int, label: int | None = None,
               config: GenConfig | None = None) -> VideoPlan:
    """Draw one video deterministically from ``(seed, index)``; ``label`` forces the class."""
    cfg = config or GenConfig()
    rng = np.random.default_rng([int(seed), int(index)])
    k = len(CLASSES)
    lab = int(rng.integers(k)) if label is None else int(label)
    if not 0 <= lab < k:
        raise InputError(f"label index {lab} out of range 0..{k - 1}")
    m = cfg.frame_multiple
    num = int(rng.integers(cfg.min_frames // m, cfg.max_frames // m + 1)) * m
    dur = int(round(num * rng.uniform(cfg.min_action, cfg.max_action)))
    dur = max(dur, 2)
    start = int(rng.integers(0, num - dur + 1))
    end = start + dur - 1
    distractor = int(rng.integers(k))

    # Bursts: short action-like motions in the background parts (none within 4 frames of the
    # action, so the action's boundaries stay the ground truth's).
    bursts: list[tuple[int, int, int]] = []
    for a, b in _segments_free(num, start, end):
        lo, hi = a + (4 if a > 0 else 0), b - (4 if b < num - 1 else 0)
        t = lo + int(rng.integers(0, 6))
        while t <= hi:
            if rng.random() < cfg.burst_rate * 8:
                blen = int(rng.integers(cfg.burst_len[0], cfg.burst_len[1] + 1))
                if t + blen - 1 > hi:
                    break
                cls = distractor if rng.random() < cfg.distractor_share else int(rng.integers(k))
                bursts.append((t, t + blen - 1, cls))
                t += blen + int(rng.integers(6, 14))
            else:
                t += 8

    # Actor: action trajectory first, the idle home positions follow from it.
    radius = float(rng.uniform(10.0, 13.0))
    motion = _motion_params(rng, lab, dur)
    x0, y0, s0, a0 = _action_start(rng, lab, motion)
    x = np.empty(num)
    y = np.empty(num)
    ang = np.empty(num)
    sc = np.empty(num)
    bounce = np.zeros(num)
    # action window
    for t in range(start, end + 1):
        u = t - start
        x[t], y[t], ang[t], sc[t], bounce[t] = _apply(lab, motion, x0, y0, a0, s0, u, wrap=True)
    # idle before (backwards from the start) and after, with bursts
    burst_at = {}
    for bs, be, cls in bursts:
        bp = _motion_params(rng, cls, None)
        for t in range(bs, be + 1):
            burst_at[t] = (cls, bp, bs)
    jitter = rng.normal(0, 0.35, (num, 2))
    jit_ang = rng.normal(0, 0.01, num)

    def idle_walk(frames: Sequence[int], hx: float, hy: float, ha: float, hs: float) -> None:
        cx, cy, ca, cs = hx, hy, ha, hs
        base = None
        for t in frames:
            if t in burst_at:
                cls, bp, bs = burst_at[t]
                if t == bs or base is None or base[4] != bs:
                    base = (cx, cy, ca, cs, bs)
                u = t - bs
                nx, ny, na, ns, nb = _apply(cls, bp, base[0], base[1], base[2], base[3], u)
                cx, cy, ca, cs = nx, ny, na, ns
                x[t], y[t], ang[t], sc[t], bounce[t] = cx, cy, ca, cs, nb
                continue
            base = None
            # pull back to the home pose, plus jitter
            cx += 0.12 * (hx - cx) + jitter[t, 0]
            cy += 0.12 * (hy - cy) + jitter[t, 1]
            ca += 0.12 * _wrap(ha - ca) + jit_ang[t]
            cs += 0.12 * (hs - cs)
            cx, cy = float(np.clip(cx, X_MIN, X_MAX)), float(np.clip(cy, Y_MIN, Y_MAX))
            cs = float(np.clip(cs, S_MIN, S_MAX))
            x[t], y[t], ang[t], sc[t], bounce[t] = cx, cy, ca, cs, 0.0

    # idle before the action (home = the action's first pose) and after it (home = its last
    # pose, brought back into the box if the action wrapped it outside)
    idle_walk(range(0, start), x[start], y[start], ang[start], sc[start])
    idle_walk(range(end + 1, num), float(np.clip(x[end], X_MIN, X_MAX)), float(np.clip(y[end], Y_MIN, Y_MAX)),
              ang[end], sc[end])
    actor = ObjectTrack(x, y + bounce, ang, sc, radius, _color(rng))

    clutter = []
    avoid = np.asarray(actor.color, float)
    for _ in range(int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))):
        cx, cy = np.empty(num), np.empty(num)
        px, py = rng.uniform(10, cfg.width - 10), rng.uniform(10, cfg.height - 10)
        vx, vy = rng.normal(0, 0.8, 2)
        for t in range(num):
            vx = 0.85 * vx + rng.normal(0, 0.6)
            vy = 0.85 * vy + rng.normal(0, 0.6)
            px = float(np.clip(px + vx, 6, cfg.width - 6))
            py = float(np.clip(py + vy, 6, cfg.height - 6))
            cx[t], cy[t] = px, py
        cang = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.05, num))
        csc = np.clip(1 + np.cumsum(rng.normal(0, 0.01, num)), 0.6, 1.4)
        shape = np.array([[1, 0.6], [-1, 0.6], [-1, -0.6], [1, -0.6]], float) if rng.random() < 0.5 else None
        tr = ObjectTrack(cx, cy, cang, csc, float(rng.uniform(5, 8)), _color(rng, avoid))
        if shape is not None:
            tr.shape = shape
        clutter.append(tr)

    tex = _texture(rng, cfg.height * 2, cfg.width * 2)
    pan = np.empty((num, 2))
    px, py = rng.uniform(10, cfg.width - 10), rng.uniform(10, cfg.height - 10)
    vx, vy = rng.normal(0, 0.4, 2)
    for t in range(num):
        vx = float(np.clip(0.95 * vx + rng.normal(0, 0.08), -0.8, 0.8))
        vy = float(np.clip(0.95 * vy + rng.normal(0, 0.08), -0.8, 0.8))
        px = float(np.clip(px + vx, 0, cfg.width - 1))
        py = float(np.clip(py + vy, 0, cfg.height - 1))
        pan[t] = (px, py)
    return VideoPlan(lab, start, end, num, actor, clutter, tex, pan, int(rng.integers(2 ** 31)),
                     bursts, distractor, cfg)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _motion_params(rng: np.random.Generator, cls: int, dur: int | None = None) -> dict:
    """Speed of a motion.  Actions and bursts draw from the same distributions, so one clip
    of a burst looks like one clip of an action (``dur`` is accepted for API stability)."""
    name = CLASSES[cls]
    if name in ("move_left", "move_right"):
        return {"v": rng.uniform(1.8, 3.5)}
    if name in ("move_up", "move_down"):
        return {"v": rng.uniform(1.5, 3.0)}
    if name in ("rotate_cw", "rotate_ccw"):
        return {"w": math.radians(rng.uniform(7.0, 14.0))}
    if name in ("grow", "shrink"):
        return {"rate": rng.uniform(1.04, 1.08)}
    if name == "bounce":
        return {"amp": rng.uniform(9.0, 14.0), "period": rng.uniform(7.0, 11.0)}
    raise AssertionError(name)


def _action_start(rng: np.random.Generator, cls: int, p: dict) -> tuple[float, float, float, float]:
    x = rng.uniform(X_MIN + 8, X_MAX - 8)
    y = rng.uniform(Y_MIN + 8, Y_MAX - 8)
    s = rng.uniform(0.8, 1.25)
    a = rng.uniform(-math.pi, math.pi)
    if CLASSES[cls] == "bounce":
        y = rng.uniform(Y_MIN + 14, Y_MAX - 4)
    return float(x), float(y), float(s), float(a)


def _wrap_into(v: float, lo: float, hi: float) -> float:
    return lo + (v - lo) % (hi - lo)


def _apply(cls: int, p: dict, x: float, y: float, a: float, s: float, u: int, wrap: bool = False):
    """Pose ``u`` frames into a motion of class ``cls`` from pose (x, y, a, s).

    ``wrap`` (the action): a translation leaving the frame re-enters on the other side and a
    growth / shrink past the size limits restarts, so a long action keeps its speed.  Without
    it (bursts) the pose is clamped to the allowed box.
    """
    name = CLASSES[cls]
    b = 0.0
    if name == "move_left":
        x = x - p["v"] * u
    elif name == "move_right":
        x = x + p["v"] * u
    elif name == "move_up":
        y = y - p["v"] * u
    elif name == "move_down":
        y = y + p["v"] * u
    elif name == "rotate_cw":
        a = a + p["w"] * u
    elif name == "rotate_ccw":
        a = a - p["w"] * u
    elif name == "grow":
        s = s * p["rate"] ** u
    elif name == "shrink":
        s = s / p["rate"] ** u
    elif name == "bounce":
        b = -p["amp"] * abs(math.sin(math.pi * u / p["period"]))
    if wrap:
        x = _wrap_into(x, WRAP_X[0], WRAP_X[1])
        y = _wrap_into(y, WRAP_Y[0], WRAP_Y[1])
        s = math.exp(_wrap_into(math.log(s), math.log(S_MIN), math.log(S_MAX)))
    else:
        x = float(np.clip(x, X_MIN, X_MAX))
        y = float(np.clip(y, Y_MIN, Y_MAX))
        s = float(np.clip(s, S_MIN, S_MAX))
    return x, y, a, s, b


# ----------------------------------------------------------------------------- rendering
def _polygon(track: ObjectTrack, t: int) -> np.ndarray:
    c, s = math.cos(track.angle[t]), math.sin(track.angle[t])
    rot = np.array([[c, -s], [s, c]])
    pts = track.shape @ rot.T * (track.radius * track.scale[t]) + (track.x[t], track.y[t])
    return np.round(pts * 16).astype(np.int32)  # 4 fractional bits: sub-pixel positions


def render_frame(plan: VideoPlan, t: int, *, background: bool = True, clutter: bool = True,
                 noise: bool = True) -> np.ndarray:
    """Frame ``t`` of ``plan`` as ``H x W x 3`` BGR uint8 (the switches are for tests)."""
    cfg = plan.config
    if background:
        px, py = plan.pan[t]
        centre = (float(px + cfg.width / 2), float(py + cfg.height / 2))
        frame = cv2.getRectSubPix(plan.background, (cfg.width, cfg.height), centre)
    else:
        frame = np.full((cfg.height, cfg.width, 3), 0, np.uint8)
    if clutter:
        for tr in plan.clutter:
            cv2.fillPoly(frame, [_polygon(tr, t)], tr.color, cv2.LINE_AA, shift=4)
    a = plan.actor
    poly = _polygon(a, t)
    cv2.fillPoly(frame, [poly], a.color, cv2.LINE_AA, shift=4)
    # a dark tip dot makes the orientation readable at low resolution
    tip = poly[0]
    cv2.circle(frame, (int(tip[0]), int(tip[1])), int(2.5 * 16), (20, 20, 20), -1, cv2.LINE_AA, shift=4)
    if noise:
        rng = np.random.default_rng([plan.noise_seed, t])
        gain = 1.0 + rng.normal(0, 0.03)
        f = frame.astype(np.float32) * gain + rng.normal(0, cfg.noise_sigma, frame.shape).astype(np.float32)
        frame = np.clip(f, 0, 255).astype(np.uint8)
    return frame


def render_video(plan: VideoPlan, **switches) -> np.ndarray:
    """All frames ``[F, H, W, 3]`` BGR uint8."""
    return np.stack([render_frame(plan, t, **switches) for t in range(plan.num_frames)])


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray, fps: float = FPS) -> Path:
    """Write frames with OpenCV (``.mp4`` -> mp4v, ``.avi`` -> MJPG), atomically."""
    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    with atomic_file(path) as tmp:  # the temp name keeps the suffix, which picks the container
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            raise VideoError(f"OpenCV cannot write {path} with codec {fourcc}",
                             hint="use an .avi path (MJPG) or an OpenCV build with FFMPEG")
        try:
            for frame in frames:
                writer.write(np.ascontiguousarray(frame))
        finally:
            writer.release()
    return path


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    """Decode every frame (BGR uint8) with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"cannot open video {path}")
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise VideoError(f"video {path} has no decodable frames")
    return frames


# ----------------------------------------------------------------------------- records, the generated set
@dataclass(frozen=True)
class VideoRecord:
    """One labelled video (or one annotated window of a video) of a dataset.

    ``start``..``end`` (inclusive, source frames) is the action window: the whole video when
    the layout has none (``window`` False: class folders, annotation rows without times).
    ``label_index`` indexes the dataset's ``labels``.  ``source`` groups the records of one
    video file, so a train / validation split never puts clips of one video on both sides.
    """

    path: Path
    label: str
    label_index: int
    start: int
    end: int
    num_frames: int
    seed: int | None = None
    split: str | None = None
    window: bool = True
    fps: float = FPS
    start_s: float | None = None
    end_s: float | None = None

    @property
    def source(self) -> str:
        return str(self.path)


def make_videos(out: str | os.PathLike, count: int, seed: int = 0, *, ext: str = "mp4",
                config: GenConfig | None = None, progress=None) -> list[VideoRecord]:
    """Generate ``count`` videos into ``out`` plus ``labels.csv``; returns the records.

    Classes are balanced (video i has class ``i % len(CLASSES)`` before a seeded shuffle).
    """
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([int(seed), 10 ** 6]).permutation(count) % len(CLASSES)
    records = []
    for i in range(count):
        plan = plan_video(seed, i, label=int(order[i]), config=config)
        name = f"video_{i:05d}.{ext}"
        write_video(out / name, render_video(plan))
        records.append(VideoRecord(out / name, plan.label_name, plan.label, plan.start, plan.end,
                                   plan.num_frames, int(seed)))
        if progress:
            progress(i + 1, count)
    with atomic_file(out / LABELS_CSV) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for r in records:
            w.writerow([r.path.name, r.label, r.label_index, r.start, r.end, r.num_frames, r.seed])
    return records
