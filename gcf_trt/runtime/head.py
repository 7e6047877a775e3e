"""The GCF fusion head in numpy: the same equations as ``compile.model.GCFHead`` and head.onnx.

Why: the head is ~1 MFLOP, so through an inference engine its cost is per-call overhead
(argument checks, thread wake-ups, output copies), several percent of a backbone call.  In
numpy the ring of N x D descriptors is five small matmuls; measured against the engines in
``benchmarks`` / docs/STREAMING.md.  The ONNX head stays what TensorRT and Triton run, and
tests/runtime/test_head.py holds the three (PyTorch, head.onnx, this) equal on full and filling rings.

Weights travel as ``head.npz`` beside ``head.onnx`` (written by the build with
:func:`save_head_weights`, hashed in the manifest like every file); torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import EngineError, InputError
from ..fsutil import atomic_file
from ..spec import HEAD_INPUTS, HEAD_OUTPUTS, ModelSpec
from .backends.base import Backend

HEAD_WEIGHTS_FILE = "head.npz"
# GCFHead.state_dict() names (torch Linear: weight [out, in]).
WEIGHT_NAMES = ("proj.weight", "proj.bias", "fuse.weight", "fuse_bias", "gate.0.weight", "gate.0.bias",
                "gate.2.weight", "gate.2.bias", "classifier.weight", "classifier.bias")
_META = ("long_range", "select_ratio", "ring_size")


def save_head_weights(path: str | os.PathLike, weights: Mapping[str, np.ndarray], spec: ModelSpec) -> Path:
    """Write the head's weights (``GCFHead.state_dict()`` as numpy arrays), its two
    hyper-parameters and the ring size it was exported for to ``path`` (``.npz``), atomically.

    The equations work for any N; the recorded N lets ``load_engines`` refuse a manifest of
    another model beside this file, as it does for head.onnx."""
    path = Path(path)
    missing = [n for n in WEIGHT_NAMES if n not in weights]
    if missing:
        raise InputError(f"head weights lack {missing}", hint="pass GCFHead.state_dict() converted to numpy")
    arrays = {n: np.asarray(weights[n], np.float32) for n in WEIGHT_NAMES}
    arrays.update(long_range=np.asarray(spec.long_range), select_ratio=np.asarray(spec.select_ratio, np.float64),
                  ring_size=np.asarray(spec.ring_size))
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


class NumpyHead(Backend):
    """The fusion head evaluated with numpy (float32), behind the backend interface.

    Inputs ``descriptors [B, N, D]`` and ``mask [B, N]``; outputs ``logits [B, C]`` and
    ``gates [B, N]``, as head.onnx.  The weights are pre-transposed once at load.
    """

    runtime = "numpy"

    def __init__(self, path: Path, spec: ModelSpec | None = None, **options: Any):
        super().__init__(path, **options)
        try:
            with np.load(str(path), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, BadZipFile, EOFError ...
            raise EngineError(f"cannot read head weights {path}: {exc}",
                              hint="rebuild the engines: gcf-trt build --checkpoint CKPT --out DIR") from exc
        missing = [n for n in (*WEIGHT_NAMES, *_META) if n not in arrays]
        if missing:
            raise EngineError(f"{path} lacks {missing}", hint="rebuild the engines: gcf-trt build ...")
        f32 = {n: np.ascontiguousarray(arrays[n], np.float32) for n in WEIGHT_NAMES}
        self.long_range = int(arrays["long_range"])
        self.select_ratio = float(arrays["select_ratio"])
        self.w_p, self.b_p = f32["proj.weight"].T.copy(), f32["proj.bias"]
        self.hidden = self.b_p.shape[0]
        self.w_f = f32["fuse.weight"].T.copy()              # [E, 5E]: the five W_o side by side
        self.b_f = f32["fuse_bias"]
        self.w_a, self.b_a = f32["gate.0.weight"].T.copy(), f32["gate.0.bias"]
        self.w_g, self.b_g = f32["gate.2.weight"].T.copy(), f32["gate.2.bias"]
        self.w_c, self.b_c = f32["classifier.weight"].T.copy(), f32["classifier.bias"]
        dim, classes = self.w_p.shape[0], self.b_c.shape[0]
        n = int(arrays["ring_size"])
        if spec is not None and (spec.dim, spec.num_classes, spec.head_hidden) != (dim, classes, self.hidden):
            raise EngineError(f"{path} holds a head for D={dim}, C={classes}, E={self.hidden}, the manifest's "
                              f"model has D={spec.dim}, C={spec.num_classes}, E={spec.head_hidden}",
                              hint="rebuild the engines: gcf-trt build ...")
        self.input_shapes = {HEAD_INPUTS[0]: (-1, n, dim), HEAD_INPUTS[1]: (-1, n)}
        self.output_shapes = {HEAD_OUTPUTS[0]: (-1, classes), HEAD_OUTPUTS[1]: (-1, n)}
        # shift amounts of the five blocks of w_f: h_{i-shift} (GCFHead.offsets)
        d = self.long_range
        self._shifts = (0, 1, -1, d, -d)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(feeds[HEAD_INPUTS[0]], np.float32)
        mask = np.asarray(feeds[HEAD_INPUTS[1]], np.float32)
        if x.ndim != 3 or mask.shape != x.shape[:2] or x.shape[2] != self.w_p.shape[0]:
            raise InputError(f"head inputs {list(x.shape)} / {list(mask.shape)} do not match "
                             f"[B, N, {self.w_p.shape[0]}] / [B, N]")
        if x.shape[0] == 1:
            n = x.shape[1]
            k = int(mask[0].sum())
            if k and np.array_equal(mask[0, n - k:], np.ones(k, np.float32)):  # the ring layout
                return self._ring_step(x[0, n - k:], n)
        return self._masked(x, mask)

    def _ring_step(self, x: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """One ring whose k valid slots are its last k (the streaming case): the head on those
        k clips alone, which equals the masked head (masked slots act as the zero padding at
        the sequence edge) at half the numpy calls.  ``x [k, D]``."""
        k, e = x.shape[0], self.hidden
        h = x @ self.w_p
        h += self.b_p
        np.maximum(h, 0.0, out=h)
        z = h @ self.w_f                                                # [k, 5E]
        mixed = z[:, :e] + self.b_f
        for j, s in enumerate(self._shifts[1:], 1):
            block = z[:, j * e:(j + 1) * e]
            if 0 < s < k:
                mixed[s:] += block[:k - s]
            elif 0 < -s < k:
                mixed[:k + s] += block[-s:]
        np.maximum(mixed, 0.0, out=mixed)
        mixed += h                                                      # f [k, E]
        a = mixed @ self.w_a
        a += self.b_a
        np.maximum(a, 0.0, out=a)
        g = (a @ self.w_g)[:, 0] + self.b_g
        g = 1.0 / (1.0 + np.exp(-g))
        w = g * (g >= self.select_ratio * g.max())
        logits = (w @ mixed) / (w.sum() + 1e-6) @ self.w_c + self.b_c
        gates = np.zeros((1, n), np.float32)
        gates[0, n - k:] = g
        return {HEAD_OUTPUTS[0]: logits.astype(np.float32)[None], HEAD_OUTPUTS[1]: gates}

    def _masked(self, x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Any batch and mask: the equations as written (head.onnx's graph)."""
        b, n, _ = x.shape
        e = self.hidden
        m = mask[..., None]
        h = np.maximum(x @ self.w_p + self.b_p, 0.0) * m                # [B, N, E]
        z = (h @ self.w_f).reshape(b, n, 5, e)                          # [B, N, 5, E]
        mixed = np.broadcast_to(self.b_f, (b, n, e)).copy()
        for k, s in enumerate(self._shifts):                            # zero padding at the edges
            if s == 0:
                mixed += z[:, :, k]
            elif s > 0:
                if s < n:
                    mixed[:, s:] += z[:, :n - s, k]
            elif -s < n:
                mixed[:, :n + s] += z[:, -s:, k]
        f = (h + np.maximum(mixed, 0.0)) * m                            # [B, N, E]
        a = np.maximum(f @ self.w_a + self.b_a, 0.0) @ self.w_g + self.b_g  # [B, N, 1]
        gates = (1.0 / (1.0 + np.exp(-a[..., 0]))) * mask               # [B, N]
        top = gates.max(axis=1, keepdims=True)
        weights = gates * (gates >= self.select_ratio * top) * mask
        video = (weights[..., None] * f).sum(1) / (weights.sum(1, keepdims=True) + 1e-6)
        logits = video @ self.w_c + self.b_c
        return {HEAD_OUTPUTS[0]: logits.astype(np.float32), HEAD_OUTPUTS[1]: gates.astype(np.float32)}
