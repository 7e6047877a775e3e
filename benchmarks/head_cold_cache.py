"""What makes the numpy head slow inside a streaming step: cold caches, and which ones.

Times ``NumpyHead.infer`` (p50 of ``--repeats``) on a ring of the engines' shapes: in a tight
loop, right after a backbone call, after a 32 MB sweep, after a backbone call and 2 ms of sleep
(no engine thread still spinning), and with the head's weights in one contiguous buffer read
through once right before it (are the weights what is cold?).  Behind docs/BENCHMARKS.md
("The head inside the backbone's graph").

    gcf-trt build --checkpoint gcf_trt/assets/bench_edge3d_w16.pt --out ENG --target cpu --precision fp32 --runtime openvino
    python benchmarks/head_cold_cache.py ENG
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from gcf_trt.runtime.engines import load_engines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engines", help="an engines directory with the numpy head (head.npz)")
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    engines = load_engines(args.engines)
    backbone, head = engines.backbone, engines.head
    if not hasattr(head, "w_f"):
        raise SystemExit(f"{args.engines}: the head is {head}, not the numpy head")
    spec = engines.spec
    clip = np.random.default_rng(0).standard_normal((1, *spec.clip_shape)).astype(np.float32)
    ring = np.random.default_rng(1).standard_normal((1, spec.ring_size, spec.dim)).astype(np.float32)
    mask = np.ones((1, spec.ring_size), np.float32)
    sweep = np.ones(32 << 18, np.float32)  # 32 MB, more than the last-level cache of a 2-core slice

    def timed_head() -> float:
        t = time.perf_counter()
        head.infer({"descriptors": ring, "mask": mask})
        return time.perf_counter() - t

    def step() -> None:
        backbone.infer({"clip": clip})

    res: dict[str, list[float]] = {k: [] for k in ("tight loop", "after a backbone call", "after a 32 MB sweep",
                                                   "after a backbone call + 2 ms sleep")}
    for _ in range(args.repeats):
        timed_head()
        res["tight loop"].append(timed_head())
        step()
        res["after a backbone call"].append(timed_head())
        sweep += 1
        res["after a 32 MB sweep"].append(timed_head())
        step()
        time.sleep(0.002)
        res["after a backbone call + 2 ms sleep"].append(timed_head())
    names = ("w_p", "w_f", "w_a", "w_g", "w_c")
    weights = [getattr(head, n) for n in names]
    buf = np.concatenate([w.ravel() for w in weights])
    offset = 0
    for name, w in zip(names, weights):  # the head now computes from views into one buffer
        setattr(head, name, buf[offset:offset + w.size].reshape(w.shape))
        offset += w.size
    touch, after_touch = [], []
    for _ in range(args.repeats):
        step()
        t = time.perf_counter()
        buf.sum()
        touch.append(time.perf_counter() - t)
        after_touch.append(timed_head())
    res["weights read through, then the head (head only)"] = after_touch
    res["reading the weights through"] = touch
    print(f"{backbone}; {head}: {buf.nbytes / 1024:.0f} KB of weights")
    for name, v in res.items():
        print(f"  {name:52s} p50 {np.median(v) * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
