"""End to end on a 640x480 30 fps video: the streaming runtime, and what a user would run instead."""
from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any


from ..fixtures import VIDEO_FPS, VIDEO_SIZE


def end_to_end(engines_dir: Path, video: Path, *, max_seconds: float | None = None) -> dict[str, Any]:
    """Frames per second on a video file through :class:`StreamingClassifier`.

    Decoding runs in its own thread (``ThreadedSource`` over ``VideoCaptureSource``, what
    ``open_source(path)`` builds), overlapping preprocessing and inference in the main thread.
    Stage times: ``decode`` timed inside the decode thread around each frame's read;
    ``preprocess``/``backbone``/``head`` from each Prediction's ``latency_ms``; ``wait`` is the
    main thread waiting for a decoded frame.  ``preprocess_share_of_wall`` = preprocess time /
    wall time.
    """
    from ...runtime.sources import Source, ThreadedSource, VideoCaptureSource
    from ...runtime.uris import parse_uri
    from ...runtime.stream import StreamingClassifier

    class TimedSource(Source):
        """Times the inner source's per-frame decode, in the thread that iterates it."""

        def __init__(self, inner: Source):
            super().__init__()
            self.inner, self.uri, self.live, self.stats = inner, inner.uri, inner.live, inner.stats
            self.decode_s = 0.0

        @property
        def fps(self):
            return self.inner.fps

        def __iter__(self):
            it = iter(self.inner)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                self.decode_s += time.perf_counter() - t0
                yield item

        def close(self):
            self.inner.close()

    timed = TimedSource(VideoCaptureSource(parse_uri(str(video))))
    video_fps = timed.fps or VIDEO_FPS
    source = ThreadedSource(timed, queue_size=32, drop="block")
    stages = {"preprocess": 0.0, "backbone": 0.0, "head": 0.0}
    frames = predictions = 0
    wait = 0.0
    with StreamingClassifier(engines_dir) as clf:
        start = time.perf_counter()
        it = iter(source)
        try:
            while True:
                t0 = time.perf_counter()
                item = next(it, None)
                wait += time.perf_counter() - t0
                if item is None:
                    break
                pred = clf.push(item.image, item.index)
                frames += 1
                if pred is not None:
                    predictions += 1
                    for k in stages:
                        stages[k] += pred.latency_ms.get(k, 0.0) / 1e3
                if max_seconds and time.perf_counter() - start > max_seconds:
                    break
        finally:
            wall = time.perf_counter() - start
            source.close()
        engine = {"backbone": repr(clf.engines.backbone), "head": repr(clf.engines.head)}
    if not frames:
        raise RuntimeError(f"no frame decoded from {video}")
    fps = frames / wall
    per_frame = {k: v * 1e3 / frames for k, v in stages.items()}
    per_frame["decode"] = timed.decode_s * 1e3 / frames
    per_frame["wait_for_decode"] = wait * 1e3 / frames
    share = {k: v / (wall * 1e3 / frames) for k, v in per_frame.items()}
    return {"pipeline": "StreamingClassifier + ThreadedSource(VideoCaptureSource) decode thread",
            "video": {"file": video.name, "fps": video_fps, "size": list(VIDEO_SIZE)},
            "frames": frames, "predictions": predictions, "wall_s": wall, "fps": fps,
            "realtime_factor": fps / video_fps, "stage_ms_per_frame": per_frame,
            "stage_share_of_wall": share, "preprocess_share_of_wall": share["preprocess"], "engines": engine}


def naive_torch_pipeline(model, video: Path, *, max_seconds: float | None = None) -> dict[str, Any]:
    """What a user would write instead: decode, the same preprocessing, torch eager, one clip at a time.

    One thread: ``cv2.VideoCapture.read``, the shared :class:`~gcf_trt.preprocess.Preprocessor`
    on each sampled frame, a clip every ``stride`` sampled frames, ``model.backbone`` on it
    (B=1, ``torch.inference_mode``) and ``model.head`` over the last N descriptors (empty slots
    masked, as the runtime's ring) - the same predictions the streaming runtime makes, without
    its engines, decode thread or preallocated buffers.
    """
    import cv2
    import torch
    from ...preprocess import Preprocessor, stack_clip
    spec = model.spec
    prep = Preprocessor(spec)
    frames: collections.deque = collections.deque(maxlen=spec.clip_len)
    descriptors: collections.deque = collections.deque(maxlen=spec.ring_size)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {video}")
    count = sampled = predictions = 0
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                count += 1
                if (count - 1) % spec.frame_step:
                    continue
                j, sampled = sampled, sampled + 1
                frames.append(prep(frame))
                if j < spec.clip_len - 1 or (j - spec.clip_len + 1) % spec.stride:
                    continue
                clip = torch.from_numpy(stack_clip(list(frames))[None])
                descriptors.append(model.backbone(clip)[0])
                k = len(descriptors)
                ring = torch.zeros(1, spec.ring_size, spec.dim)
                mask = torch.zeros(1, spec.ring_size)
                ring[0, spec.ring_size - k:] = torch.stack(list(descriptors))
                mask[0, spec.ring_size - k:] = 1.0
                model.head(ring, mask)
                predictions += 1
                if max_seconds and time.perf_counter() - start > max_seconds:
                    break
    finally:
        wall = time.perf_counter() - start
        cap.release()
    fps = count / wall
    return {"pipeline": "one thread: cv2.VideoCapture.read -> Preprocessor -> torch eager backbone (B=1) "
                        "-> torch head over the last N descriptors",
            "frames": count, "predictions": predictions, "wall_s": wall, "fps": fps,
            "realtime_factor": fps / VIDEO_FPS, "threads": torch.get_num_threads()}


def section(ctx) -> dict[str, Any]:
    """Both pipelines on the same video; ``e2e_vs_naive_torch_pipeline`` = fps ratio."""
    video = ctx.video()
    budget = ctx.deadline.cap(None, 0.5)
    out = end_to_end(ctx.engines_dir, video, max_seconds=budget)
    out["engines_dir"] = "the default CPU build"
    ctx.say("end to end: the naive torch pipeline on the same video")
    naive = naive_torch_pipeline(ctx.model, video, max_seconds=ctx.deadline.cap(None, 0.9))
    out["naive_torch_pipeline"] = naive
    out["e2e_vs_naive_torch_pipeline"] = out["fps"] / naive["fps"]
    return out
