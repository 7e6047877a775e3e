"""Training: shared preprocessing, losses, and a tiny run that lowers the loss."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gcf_trt.compile.model import load_checkpoint  # noqa: E402
from gcf_trt.data import CLASSES, make_videos, read_labels, read_video  # noqa: E402
from gcf_trt.preprocess import clips_from_frames  # noqa: E402
from gcf_trt.train import (TrainConfig, flip_map, head_loss, load_video_clips, pad_left, train,  # noqa: E402
                           video_clips_tensor)

TINY = dict(width=4, clip_len=4, stride=4, size=32, resize_short=36, ring_size=32, head_hidden=16,
            epochs=3, batch=16, lr=1e-2, head_epochs=30, head_batch=8)


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    make_videos(out, 6, seed=4)
    return out


def test_training_clips_equal_the_shared_preprocessing(tiny_videos):
    spec = TrainConfig(**TINY).spec()
    rec = read_labels(tiny_videos)[0]
    frames = read_video(rec.path)
    v = load_video_clips(frames, rec, spec, rec.label_index)
    ref, ranges = clips_from_frames(frames, spec)
    np.testing.assert_allclose(video_clips_tensor(v, spec).numpy(), ref, atol=1e-6)
    assert v.ranges == ranges
    inside = [(a, b) for (a, b) in ranges if a >= rec.start and b <= rec.end]
    assert all(v.overlap[ranges.index(r)] == 1 for r in inside)


def test_flip_map_swaps_mirrored_classes():
    fm = flip_map(list(CLASSES))
    idx = {n: i for i, n in enumerate(CLASSES)}
    assert fm[idx["move_left"]] == idx["move_right"] and fm[idx["rotate_cw"]] == idx["rotate_ccw"]
    assert fm[idx["grow"]] == idx["grow"] and sorted(fm) == list(range(len(CLASSES)))


def test_pad_left_is_ring_shaped_and_head_loss_ignores_empty_slots():
    desc = [torch.ones(2, 3), torch.full((3, 3), 2.0)]
    x, mask, ov = pad_left(desc, [np.array([0.5, 1.0]), np.array([0, 0, 1.0])], 4)
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert x[0, :2].abs().sum() == 0 and (x[0, 2:] == 1).all()
    assert ov[0].tolist() == [0, 0, 0.5, 1.0]
    logits = torch.zeros(2, 3)
    gates = torch.tensor([[0.9, 0.9, 0.5, 0.99], [0.3, 0.01, 0.01, 0.99]])
    loss = head_loss(logits, gates, torch.tensor([0, 1]), ov, mask, gate_weight=1.0)
    gates2 = gates.clone()
    gates2[0, :2] = 0.123  # masked slots do not count
    assert loss.item() == pytest.approx(head_loss(logits, gates2, torch.tensor([0, 1]), ov, mask, 1.0).item())


def test_tiny_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tiny_videos, tmp_path):
    cfg = TrainConfig(**TINY)
    result = train(tiny_videos, tmp_path / "tiny.pt", cfg, log=lambda m: None)
    h = result.history
    first, last = np.mean(h["clip_loss"][:3]), np.mean(h["clip_loss"][-3:])
    assert last < first, (first, last)
    assert h["head_loss"][-1] < h["head_loss"][0]
    model = load_checkpoint(result.checkpoint)
    assert model.spec.labels == list(CLASSES) and model.spec.ring_size == 32
