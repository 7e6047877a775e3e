"""Labelled video datasets in the layouts users have.

:class:`VideoSet` (:func:`open_dataset`) reads class-per-folder sets, annotation files (CSV /
JSON lines: ``path,label[,start_s,end_s][,split]``) and the procedural set of
:mod:`gcf_trt.data` (:func:`read_labels`), with one record type (:class:`~gcf_trt.data.VideoRecord`),
a summary and a train / validation split that keeps each video on one side.
:func:`clip_overlap` turns a record's action window into per-clip relevance.

torch-free (numpy + OpenCV).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .data import CLASSES, CSV_FIELDS, FPS, LABELS_CSV, VideoRecord, read_video
from .errors import InputError, VideoError


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
