"""The clip-descriptor cache shared by ``gcf-trt train --freeze-backbone`` and ``gcf-trt eval``.

A frozen backbone's descriptor of a clip depends only on the backbone's weights, the
preprocessing and the video file, so it is computed once and kept on disk.  No torch import
at module level (the model passed in brings it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CACHE_VERSION = 1


def descriptor_cache_key(model) -> str:
    """sha256 of what a clip descriptor depends on: the backbone's weights and the preprocessing."""
    import hashlib
    spec = model.spec
    digest = hashlib.sha256(json.dumps({
        "version": CACHE_VERSION, "backbone": spec.backbone, "backbone_args": spec.backbone_args,
        "clip_len": spec.clip_len, "stride": spec.stride, "frame_step": spec.frame_step, "size": spec.size,
        "resize_short": spec.resize_short, "mean": list(spec.mean), "std": list(spec.std)}, sort_keys=True).encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class DescriptorCache:
    """Clip descriptors of video files for one backbone + preprocessing, on disk.

    ``DIR/<key>/<file key>.npz`` (``desc [K, D]``, ``ranges [K, 2]``), written atomically.
    ``key`` = :func:`descriptor_cache_key` (backbone weights + preprocessing); a file's key is
    its absolute path, size and modification time, so an edited video is recomputed.
    """

    def __init__(self, model, cache_dir: str | Path):
        self.root = Path(cache_dir) / descriptor_cache_key(model)[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _entry(self, path: Path) -> Path:
        import hashlib
        st = path.stat()
        return self.root / (hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
                            .hexdigest()[:32] + ".npz")

    def get(self, path: Path) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
        entry = self._entry(path)
        if not entry.is_file():
            return None
        with np.load(entry) as z:
            self.hits += 1
            return z["desc"], [tuple(map(int, r)) for r in z["ranges"]]

    def put(self, path: Path, desc: np.ndarray, ranges) -> None:
        from .fsutil import atomic_file
        self.misses += 1
        with atomic_file(self._entry(path)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, desc=np.asarray(desc, np.float32), ranges=np.asarray(ranges, np.int64).reshape(-1, 2))
