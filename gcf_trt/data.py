"""Labelled video datasets in the layouts users have, and the procedural action videos.

:class:`VideoSet` (:func:`open_dataset`) reads class-per-folder sets, annotation files (CSV /
JSON lines: ``path,label[,start_s,end_s][,split]``) and the procedural set below, with one
record type, a summary and a train / validation split that keeps each video on one side.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .errors import InputError, VideoError

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
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise VideoError(f"OpenCV cannot write {path} with codec {fourcc}",
                         hint="use an .avi path (MJPG) or an OpenCV build with FFMPEG")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()
    os.replace(tmp, path)
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


# ----------------------------------------------------------------------------- dataset files
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
    tmp = out / f".{LABELS_CSV}.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for r in records:
            w.writerow([r.path.name, r.label, r.label_index, r.start, r.end, r.num_frames, r.seed])
    os.replace(tmp, out / LABELS_CSV)
    return records


def read_labels(videos_dir: str | os.PathLike) -> list[VideoRecord]:
    """Read ``labels.csv`` of a generated set (paths resolved against the directory)."""
    videos_dir = Path(videos_dir)
    path = videos_dir / LABELS_CSV
    if not path.is_file():
        raise InputError(f"{videos_dir} has no {LABELS_CSV}",
                         hint="generate a labelled set with: gcf-trt make-videos --out DIR --count N")
    records = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(CSV_FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
        for row in reader:
            records.append(VideoRecord(videos_dir / row["file"], row["label"], int(row["label_index"]),
                                       int(row["start"]), int(row["end"]), int(row["num_frames"]),
                                       int(row["seed"])))
    if not records:
        raise InputError(f"{path} lists no videos")
    return records


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
# Annotation-file column names and the aliases other tools write (Kinetics: time_start, ...).
_COLUMNS = {"path": ("path", "file", "video", "filename", "youtube_id"), "label": ("label", "class", "category"),
            "start_s": ("start_s", "start", "time_start", "start_time"),
            "end_s": ("end_s", "end", "time_end", "end_time"), "split": ("split", "subset")}
TRAIN_SPLITS = ("train", "training")
VAL_SPLITS = ("val", "valid", "validation")


@dataclass(frozen=True)
class VideoProbe:
    """What opening a video without decoding it all tells (frame count and rate)."""

    num_frames: int
    fps: float

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Open a video, decode its first frame and read its frame count and rate.

    Raises:
        VideoError: missing, not openable, or no decodable frame.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open it")
        ok, _ = cap.read()
        if not ok:
            raise VideoError(f"{path}: no decodable frame")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return VideoProbe(max(count, 1), fps if 0 < fps < 1000 else FPS)


class VideoSet:
    """A labelled video dataset in one of the layouts users have, decoded on demand.

    Layouts (``layout="auto"`` tells them apart):

    * ``procedural``: a directory written by ``gcf-trt make-videos`` (``labels.csv``);
    * ``folders``: class-per-folder, UCF101 / HMDB style: ``ROOT/<label>/<video>``;
    * ``annotations``: a CSV or JSON-lines file with ``path,label[,start_s,end_s][,split]``
      (Kinetics-style lists; ``start_s``..``end_s`` is the action window, which also gives the
      gates their supervision and ``gcf-trt eval`` its tIoU).  Paths are relative to the file.

    Every video is probed when the set is opened; unreadable ones are skipped and listed in
    ``skipped`` with the reason (:meth:`summary`).  ``labels`` forces the class list (a
    model's); a video with another label is an error.

    Raises:
        InputError: unknown layout, malformed annotation rows, unknown labels, a class folder
            without a readable video, or no readable video at all.
    """

    def __init__(self, root: str | os.PathLike, *, labels: Sequence[str] | None = None,
                 layout: str = "auto"):
        self.root = Path(root)
        self.layout = _detect_layout(self.root) if layout == "auto" else layout
        if self.layout == "annotations_dir":     # a directory whose labels.csv is a user's list
            self.root, self.layout = self.root / LABELS_CSV, "annotations"
        self.dir = self.root if self.root.is_dir() else self.root.parent
        self.skipped: list[tuple[str, str]] = []
        if self.layout == "procedural":
            rows = [(r.path, r.label, r) for r in read_labels(self.root)]
            self.labels = list(labels) if labels is not None else _procedural_labels({r[1] for r in rows})
        elif self.layout == "folders":
            rows = self._folder_rows()
        elif self.layout == "annotations":
            rows = self._annotation_rows()
        else:
            raise InputError(f"unknown dataset layout {layout!r}", hint="use auto, procedural, folders or annotations")
        if self.layout != "procedural":
            found = sorted({r[1] for r in rows})
            self.labels = list(labels) if labels is not None else found
        unknown = sorted({r[1] for r in rows} - set(self.labels))
        if unknown:
            raise InputError(f"{self.root}: label(s) {', '.join(map(repr, unknown[:5]))} are not among the "
                             f"model's labels ({', '.join(self.labels)})",
                             hint="evaluate / resume with the dataset the model was trained on, or train a new model")
        index = {name: i for i, name in enumerate(self.labels)}
        self.records: list[VideoRecord] = []
        probes: dict[Path, VideoProbe | None] = {}
        for path, label, extra in rows:
            if isinstance(extra, VideoRecord):          # procedural: labels.csv is the truth
                self.records.append(extra)
                continue
            if path not in probes:
                try:
                    probes[path] = probe_video(path)
                except VideoError as exc:
                    probes[path] = None
                    self.skipped.append((str(path), exc.message.split(": ", 1)[-1]))
            probe = probes[path]
            if probe is None:
                continue
            rec = _record(path, label, index[label], probe, **extra)
            if rec is None:
                self.skipped.append((str(path), f"action window {extra.get('start_s')}-{extra.get('end_s')} s "
                                                f"lies outside the video ({probe.seconds:.1f} s)"))
                continue
            self.records.append(rec)
        if self.layout == "folders":
            empty = [c for c in self.labels if not any(r.label == c for r in self.records)]
            if empty:
                raise InputError(f"{self.root}: class folder(s) {', '.join(map(repr, empty))} contain no readable video"
                                 + (f" ({len(self.skipped)} skipped: {self.skipped[0][0]}: {self.skipped[0][1]})"
                                    if self.skipped else ""),
                                 hint="add videos to those folders or remove them")
        if not self.records:
            why = f"; first skipped: {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise InputError(f"{self.root} has no readable labelled video{why}",
                             hint="check the paths and that OpenCV can decode the files")
        if labels is None and len(self.labels) < 2:
            raise InputError(f"{self.root} has only one class ({self.labels[0]!r}); a classifier needs two or more",
                             hint="add a folder (or annotation rows) for another class")

    # --- layouts ---------------------------------------------------------------------
    def _folder_rows(self) -> list:
        rows = []
        classes = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        for cdir in classes:
            for f in sorted(cdir.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in VIDEO_EXTENSIONS:
                    rows.append((f, cdir.name, {}))
        if not classes:
            raise InputError(f"{self.root} has no class folders", hint="lay the videos out as ROOT/<label>/<video>")
        empty = [c.name for c in classes if not any(r[1] == c.name for r in rows)]
        if empty:
            raise InputError(f"{self.root}: class folder(s) {', '.join(map(repr, empty))} contain no video files "
                             f"({', '.join(VIDEO_EXTENSIONS[:4])}, ...)",
                             hint="add videos to those folders or remove them")
        return rows

    def _annotation_rows(self) -> list:
        rows = []
        for n, row in _read_annotation_file(self.root):
            where = f"{self.root}:{n}"
            path, label = row.get("path"), row.get("label")
            if not path or not label:
                raise InputError(f"{where}: a row needs a path and a label, got {row}",
                                 hint="columns: path,label[,start_s,end_s][,split]")
            extra: dict = {"split": (row.get("split") or None)}
            if extra["split"]:
                extra["split"] = str(extra["split"]).strip().lower()
            if row.get("start_s") not in (None, "") or row.get("end_s") not in (None, ""):
                try:
                    extra["start_s"], extra["end_s"] = float(row["start_s"]), float(row["end_s"])
                except (KeyError, TypeError, ValueError):
                    raise InputError(f"{where}: start_s and end_s must both be numbers (seconds), got "
                                     f"{row.get('start_s')!r}, {row.get('end_s')!r}",
                                     hint="leave both empty for a label of the whole video") from None
                if not 0 <= extra["start_s"] < extra["end_s"]:
                    raise InputError(f"{where}: action window {extra['start_s']}-{extra['end_s']} s is empty or negative",
                                     hint="start_s must be >= 0 and < end_s")
            p = Path(str(path))
            if p.suffix == "" and not (self.dir / p).exists():   # Kinetics lists omit the extension
                for ext in VIDEO_EXTENSIONS:
                    if (self.dir / p.with_suffix(ext)).exists():
                        p = p.with_suffix(ext)
                        break
            rows.append((p if p.is_absolute() else self.dir / p, str(label).strip(), extra))
        if not rows:
            raise InputError(f"{self.root} lists no videos", hint="one row per video: path,label[,start_s,end_s][,split]")
        return rows

    # --- access ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[list[np.ndarray], VideoRecord]:
        """Decoded frames and the record, its window clipped to the frames that decoded."""
        rec = self.records[i]
        frames = read_video(rec.path)
        n = len(frames)
        if rec.window and rec.start_s is None:       # procedural: frame indices are exact
            return frames, rec
        end = n - 1 if not rec.window else min(rec.end, n - 1)
        return frames, replace(rec, num_frames=n, start=min(rec.start, end), end=end)

    def __iter__(self) -> Iterator[tuple[list[np.ndarray], VideoRecord]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def has_windows(self) -> bool:
        """True when every record has an annotated action window (then tIoU is meaningful)."""
        return all(r.window for r in self.records)

    def subset(self, records: Sequence[VideoRecord]) -> "VideoSet":
        """The same dataset restricted to ``records`` (labels and skipped list kept)."""
        out = object.__new__(VideoSet)
        out.__dict__.update(self.__dict__)
        out.records = list(records)
        return out

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple["VideoSet", "VideoSet"]:
        """(train, validation): by the ``split`` column when the file has one, else a seeded
        fraction per class.  Records are grouped by video file first, so the clips (and the
        annotated windows) of one video are never on both sides.
        """
        if any(r.split for r in self.records):
            train = [r for r in self.records if r.split in TRAIN_SPLITS]
            val = [r for r in self.records if r.split in VAL_SPLITS]
            if not val:
                val = [r for r in self.records if r.split == "test"]
            if not train:
                raise InputError(f"{self.root}: the split column names no 'train' rows",
                                 hint="mark training rows with split=train (validation: val)")
            return self.subset(train), self.subset(val)
        if not 0.0 <= val_fraction < 1.0:
            raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}", hint="e.g. 0.2")
        groups: dict[str, list[VideoRecord]] = {}
        for r in self.records:
            groups.setdefault(r.source, []).append(r)
        rng = np.random.default_rng([int(seed), 77])
        val_sources: set[str] = set()
        for label in self.labels:
            keys = sorted(k for k, g in groups.items() if g[0].label == label)
            k = int(round(val_fraction * len(keys)))
            if val_fraction > 0 and len(keys) >= 2:
                k = min(max(k, 1), len(keys) - 1)
            val_sources.update(keys[j] for j in rng.permutation(len(keys))[:k])
        return (self.subset([r for r in self.records if r.source not in val_sources]),
                self.subset([r for r in self.records if r.source in val_sources]))

    def summary(self) -> dict:
        """Videos and seconds per class, totals, and the skipped files with the reason."""
        per_class = {name: {"videos": 0, "seconds": 0.0} for name in self.labels}
        for r in self.records:
            per_class[r.label]["videos"] += 1
            per_class[r.label]["seconds"] += (r.num_frames / r.fps) if r.fps else 0.0
        return {"root": str(self.root), "layout": self.layout, "videos": len(self.records),
                "files": len({r.source for r in self.records}),
                "seconds": round(sum(c["seconds"] for c in per_class.values()), 1),
                "classes": {k: {"videos": v["videos"], "seconds": round(v["seconds"], 1)} for k, v in per_class.items()},
                "windows": sum(r.window for r in self.records),
                "skipped": [{"file": f, "reason": why} for f, why in self.skipped]}

    def summary_text(self) -> str:
        """:meth:`summary` as a few lines for the terminal."""
        s = self.summary()
        lines = [f"{s['root']} ({s['layout']}): {s['videos']} videos, {s['seconds'] / 60:.1f} min, "
                 f"{len(self.labels)} classes, {s['windows']} with an action window"]
        lines.append("  " + ", ".join(f"{k}: {v['videos']}" for k, v in s["classes"].items()))
        for item in s["skipped"][:10]:
            lines.append(f"  skipped {item['file']}: {item['reason']}")
        if len(s["skipped"]) > 10:
            lines.append(f"  ... and {len(s['skipped']) - 10} more skipped")
        return "\n".join(lines)


def open_dataset(root: str | os.PathLike, *, labels: Sequence[str] | None = None, layout: str = "auto") -> VideoSet:
    """Open a labelled video dataset in any supported layout (see :class:`VideoSet`)."""
    return VideoSet(root, labels=labels, layout=layout)


def _procedural_labels(found: set[str]) -> list[str]:
    return list(CLASSES) if found <= set(CLASSES) else sorted(found)


def _detect_layout(root: Path) -> str:
    if root.is_file():
        if root.suffix.lower() in (".csv", ".jsonl", ".json", ".ndjson", ".txt"):
            return "annotations"
        raise InputError(f"{root} is a file but not an annotation list (.csv or .jsonl)",
                         hint="pass a directory (ROOT/<label>/<video> or make-videos output) or a .csv / .jsonl list")
    if not root.is_dir():
        raise InputError(f"dataset {root} does not exist", hint="pass a directory or an annotation file")
    if (root / LABELS_CSV).is_file():
        with open(root / LABELS_CSV, newline="") as fh:
            header = next(csv.reader(fh), [])
        if set(CSV_FIELDS) <= set(header):
            return "procedural"
        return "annotations_dir"
    if any(d.is_dir() for d in root.iterdir()):
        return "folders"
    raise InputError(f"{root} is neither a class-per-folder dataset nor a make-videos directory",
                     hint="lay the videos out as ROOT/<label>/<video>, or pass an annotation file (.csv / .jsonl)")


def _canonical(row: dict) -> dict:
    out = {}
    lower = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for name, aliases in _COLUMNS.items():
        for a in aliases:
            if a in lower:
                out[name] = lower[a]
                break
    return out


def _read_annotation_file(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row with canonical keys) of a CSV (header optional) or JSON-lines file."""
    import json
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if first.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not a JSON object ({exc.msg})",
                                 hint='one object per line: {"path": ..., "label": ..., "start_s": ..., "end_s": ...}') from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: not a JSON object", hint="one object per line")
            yield n, _canonical(row)
        return
    reader = csv.reader(text.splitlines())
    rows = list(reader)
    header = [c.strip().lower() for c in rows[0]] if rows else []
    named = any(h in _COLUMNS["path"] for h in header) and any(h in _COLUMNS["label"] for h in header)
    if named:
        for n, values in enumerate(rows[1:], 2):
            if any(v.strip() for v in values):
                yield n, _canonical(dict(zip(header, (v.strip() for v in values))))
        return
    for n, values in enumerate(rows, 1):       # no header: path,label[,start_s,end_s][,split]
        values = [v.strip() for v in values]
        if not any(values):
            continue
        if len(values) == 3:                    # path,label,split
            values = values[:2] + ["", ""] + values[2:]
        yield n, dict(zip(("path", "label", "start_s", "end_s", "split"), values))


def _record(path: Path, label: str, label_index: int, probe: VideoProbe, split: str | None = None,
            start_s: float | None = None, end_s: float | None = None) -> VideoRecord | None:
    n = probe.num_frames
    if start_s is None:
        return VideoRecord(path, label, label_index, 0, n - 1, n, None, split, False, probe.fps)
    start = int(math.floor(start_s * probe.fps))
    end = min(int(math.ceil(end_s * probe.fps)) - 1, n - 1)
    if start > n - 1 or end < start:
        return None
    return VideoRecord(path, label, label_index, start, end, n, None, split, True, probe.fps, start_s, end_s)


def clip_overlap(ranges: Sequence[tuple[int, int]], start: int, end: int) -> np.ndarray:
    """Fraction of each clip's frames ``(first, last)`` inside the action ``[start, end]``."""
    out = np.zeros(len(ranges), np.float32)
    for k, (a, b) in enumerate(ranges):
        inter = min(b, end) - max(a, start) + 1
        out[k] = max(0, inter) / (b - a + 1)
    return out
