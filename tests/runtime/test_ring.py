"""DescriptorRing: oldest-first order, newest in slot N-1, left-padded mask, no growth."""
from __future__ import annotations

import numpy as np
import pytest

from gcf_trt.errors import InputError
from gcf_trt.runtime.ring import ClipInfo, DescriptorRing


def info(k: int) -> ClipInfo:
    return ClipInfo(k, 4 * k, 4 * k + 3)


def test_fill_order_and_mask():
    ring = DescriptorRing(4, 3)
    ring.push(np.full(3, 1.0), info(0))
    assert ring.fill == 1
    np.testing.assert_array_equal(ring.mask, [[0, 0, 0, 1]])
    np.testing.assert_array_equal(ring.descriptors[0, -1], [1, 1, 1])
    np.testing.assert_array_equal(ring.descriptors[0, :3], 0)
    ring.push(np.full((1, 3), 2.0), info(1))
    np.testing.assert_array_equal(ring.mask, [[0, 0, 1, 1]])
    np.testing.assert_array_equal(ring.descriptors[0, :, 0], [0, 0, 1, 2])
    assert [c.clip_index for c in ring.clips()] == [0, 1]
    assert ring.first_valid_slot == 2


def test_wraps_over_many_pushes_without_reallocating():
    ring = DescriptorRing(3, 2)
    descriptors, mask = ring.descriptors, ring.mask
    for k in range(50):
        ring.push(np.array([k, -k], np.float32), info(k))
        expected = list(range(max(0, k - 2), k + 1))
        np.testing.assert_array_equal(ring.valid_descriptors()[:, 0], expected)
        assert [c.clip_index for c in ring] == expected
        assert len(ring) == min(k + 1, 3)
    assert ring.descriptors is descriptors and ring.mask is mask  # preallocated, reused
    np.testing.assert_array_equal(ring.mask, [[1, 1, 1]])
    assert ring.clips()[-1].frame_range == (196, 199)


def test_reset_and_size_one():
    ring = DescriptorRing(1, 2)
    ring.push(np.ones(2), info(0))
    ring.push(np.full(2, 5.0), info(1))
    np.testing.assert_array_equal(ring.descriptors, [[[5, 5]]])
    assert [c.clip_index for c in ring] == [1]
    ring.reset()
    assert ring.fill == 0 and ring.clips() == []
    np.testing.assert_array_equal(ring.mask, [[0]])
    np.testing.assert_array_equal(ring.descriptors, 0)


def test_rejects_wrong_descriptor_size():
    ring = DescriptorRing(2, 4)
    with pytest.raises(InputError, match="3 values, the ring holds 4"):
        ring.push(np.ones(3), info(0))
    with pytest.raises(InputError):
        DescriptorRing(0, 4)
