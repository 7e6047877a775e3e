"""The ring of the last N clip descriptors that the fusion head reads every step.

Layout (docs/DESIGN.md, "Ring order"): slot N-1 holds the newest descriptor, slot N-2 the one
before it, and so on; while the ring fills, the empty slots are at the *start* with mask 0.
That is exactly the head's input ``descriptors [1, N, D]`` and ``mask [1, N]``, so the arrays
are handed to the backend as they are, without reordering.

Both arrays are allocated once.  A push shifts the N-1 older rows down by one slot (an O(N*D)
memmove of a few KB) and writes the new row into slot N-1; nothing grows per step.  The shift
is deliberate: a circular write pointer would save the memmove but need a reordering copy of
the same size before every head call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class ClipInfo:
    """Which clip a ring slot holds: its running index and source frame range (inclusive)."""

    clip_index: int
    first_frame: int
    last_frame: int

    @property
    def frame_range(self) -> tuple[int, int]:
        return (self.first_frame, self.last_frame)


class DescriptorRing:
    """Preallocated ring of the last ``size`` clip descriptors of dimension ``dim``.

    Attributes:
        descriptors: ``float32 [1, size, dim]``, oldest first, newest in slot ``size - 1``.
        mask: ``float32 [1, size]``, 1 for a filled slot, 0 for an empty one (empty slots first).
    """

    def __init__(self, size: int, dim: int):
        if int(size) < 1 or int(dim) < 1:
            raise InputError(f"ring size and descriptor dim must be >= 1, got {size} and {dim}")
        self.size, self.dim = int(size), int(dim)
        self.descriptors = np.zeros((1, self.size, self.dim), np.float32)
        self.mask = np.zeros((1, self.size), np.float32)
        self._clips: list[ClipInfo | None] = [None] * self.size
        self.fill = 0

    def push(self, descriptor: np.ndarray, clip: ClipInfo) -> None:
        """Append the newest descriptor (shape ``[dim]`` or ``[1, dim]``), evicting the oldest."""
        row = np.asarray(descriptor, np.float32).reshape(-1)
        if row.shape[0] != self.dim:
            raise InputError(f"descriptor has {row.shape[0]} values, the ring holds {self.dim}",
                             hint="the backbone engine does not match the head engine; rebuild both")
        if self.size > 1:
            # Overlapping slice assignment: numpy detects the overlap and copies correctly.
            self.descriptors[0, :-1] = self.descriptors[0, 1:]
            self.mask[0, :-1] = self.mask[0, 1:]
            self._clips[:-1] = self._clips[1:]
        self.descriptors[0, -1] = row
        self.mask[0, -1] = 1.0
        self._clips[-1] = clip
        self.fill = min(self.fill + 1, self.size)

    def reset(self) -> None:
        """Empty every slot (descriptors zeroed too, so the arrays are reproducible)."""
        self.descriptors.fill(0.0)
        self.mask.fill(0.0)
        self._clips = [None] * self.size
        self.fill = 0

    @property
    def first_valid_slot(self) -> int:
        return self.size - self.fill

    def clips(self) -> list[ClipInfo]:
        """The clips in the filled slots, oldest first."""
        return [c for c in self._clips[self.first_valid_slot:] if c is not None]

    def valid_descriptors(self) -> np.ndarray:
        """A copy of the filled rows ``[fill, dim]``, oldest first."""
        return self.descriptors[0, self.first_valid_slot:].copy()

    def __len__(self) -> int:
        return self.fill

    def __iter__(self) -> Iterator[ClipInfo]:
        return iter(self.clips())

    def __repr__(self) -> str:
        return f"DescriptorRing(size={self.size}, dim={self.dim}, fill={self.fill})"
