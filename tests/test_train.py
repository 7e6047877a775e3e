"""Training: shared preprocessing, losses, and a tiny run that lowers the loss."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gcf_trt.compile.model import load_checkpoint  # noqa: E402
from gcf_trt.data import CLASSES, make_videos, read_video  # noqa: E402
from gcf_trt.datasets import read_labels  # noqa: E402
from gcf_trt.preprocess import clips_from_frames  # noqa: E402
from gcf_trt.train import head_loss, pad_left, train  # noqa: E402
from gcf_trt.train_clips import flip_map, load_video_clips, video_clips_tensor  # noqa: E402
from gcf_trt.train_config import TrainConfig  # noqa: E402

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


# ----------------------------------------------------------------------------- user data, frozen backbone, resume
from tests.conftest import write_video as _write_clip

FROZEN = dict(width=4, clip_len=4, stride=4, size=32, resize_short=36, ring_size=8, head_hidden=16,
              epochs=3, head_epochs=12, descriptor_dropout=0.0, save_interval_s=0.0, mode="freeze")


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for c, label in enumerate(("clap", "wave")):
        (root / label).mkdir()
        for i in range(4):
            _write_clip(root / label / f"{i}.mp4", num_frames=24 + 4 * i, size=(48, 40), seed=10 * c + i)
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    from gcf_trt.compile.model import build_backbone
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("w") / "edge3d_w4.pt"
    torch.save(build_backbone("edge3d", width=4, blocks=(1, 1, 1, 1)).state_dict(), path)
    return path


def test_frozen_backbone_from_a_state_dict_file_and_the_descriptor_cache(folder_set, weights_file, tmp_path):
    cfg = TrainConfig(backbone_weights=str(weights_file), **FROZEN)
    logs = []
    result = train(folder_set, tmp_path / "m.pt", cfg, log=logs.append, progress=False)
    model = load_checkpoint(result.checkpoint)
    saved = torch.load(weights_file, weights_only=True)
    for k, v in model.backbone.state_dict().items():          # frozen: exactly the file's weights
        torch.testing.assert_close(v, saved[k])
    assert model.spec.labels == ["clap", "wave"]
    assert result.validation["videos"] == 2                   # 0.2 of 4 per class, at least 1
    assert "descriptor cache" in "\n".join(logs) and "8 computed" in "\n".join(logs)
    logs.clear()
    again = train(folder_set, tmp_path / "m2.pt", TrainConfig(backbone_weights=str(weights_file), **FROZEN),
                  log=logs.append, progress=False)
    assert "8 videos reused, 0 computed" in "\n".join(logs)
    assert again.validation == result.validation
    other = TrainConfig(backbone_weights=str(weights_file), **{**FROZEN, "size": 40, "resize_short": 44})
    logs.clear()
    train(folder_set, tmp_path / "m3.pt", other, log=logs.append, progress=False)
    assert "0 videos reused, 8 computed" in "\n".join(logs)    # another preprocessing: recomputed


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_finishes_identically(folder_set, weights_file, tmp_path):
    cfg = dict(backbone_weights=str(weights_file), cache_dir=str(tmp_path / "cache"), **FROZEN)
    ref = train(folder_set, tmp_path / "ref.pt", TrainConfig(**cfg), log=lambda m: None, progress=False)

    def interrupt(msg):
        if msg.startswith("head epoch 6/"):
            raise KeyboardInterrupt
    out = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train(folder_set, out, TrainConfig(**cfg), log=interrupt, progress=False)
    state = torch.load(out, weights_only=True)["extra"]["train_state"]
    assert (state["stage"], state["epoch"]) == ("head", 5)   # the last finished epoch, loadable
    load_checkpoint(out)
    resumed = train(folder_set, out, TrainConfig(**cfg), log=lambda m: None, resume=True, progress=False)
    assert resumed.resumed_from == {"stage": "head", "epoch": 5}
    a, b = load_checkpoint(ref.checkpoint).state_dict(), load_checkpoint(out).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert len(resumed.history["head_loss"]) == FROZEN["head_epochs"]


def test_train_cli_flag_errors_name_the_flag(folder_set, tmp_path):
    import subprocess
    import sys
    for args, fragment in [(["--epochs", "-1"], "--epochs must be >= 0"),
                           (["--val-fraction", "20"], "--val-fraction must be in [0, 1)"),
                           (["--backbone", "r3d_18"], "r3d_18 from random weights"),
                           (["--backbone-weights", str(tmp_path / "missing.pt")], "does not exist"),
                           (["--resume"], "does not exist"),
                           (["--finetune"], "--finetune needs --backbone-weights")]:
        proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", "train", "--videos", str(folder_set),
                               "--out", str(tmp_path / "x.pt"), *args], capture_output=True, text=True, timeout=120)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error[")]
        assert proc.returncode == 1 and len(errors) == 1 and fragment in errors[0], proc.stderr
        assert sum(ln.startswith("hint: ") for ln in proc.stderr.splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_finetune_starts_from_the_file_and_trains_the_backbone(folder_set, weights_file, tmp_path):
    cfg = TrainConfig(backbone_weights=str(weights_file), **{**FROZEN, "mode": "finetune", "epochs": 1,
                                                              "head_epochs": 2, "batch": 8})
    result = train(folder_set, tmp_path / "ft.pt", cfg, log=lambda m: None, progress=False)
    model = load_checkpoint(result.checkpoint)
    saved = torch.load(weights_file, weights_only=True)
    changed = [k for k, v in model.backbone.state_dict().items() if k.endswith("weight") and
               not torch.equal(v, saved[k])]
    assert changed                                             # the whole network trained
    state = torch.load(result.checkpoint, weights_only=True)["extra"]
    assert state["train_state"]["stage"] == "done" and state["train_config"]["mode"] == "finetune"


def test_real_ctrl_c_on_the_cli_keeps_a_loadable_checkpoint_and_resume_finishes(folder_set, weights_file, tmp_path):
    import signal
    import subprocess
    import sys
    import time as _time
    out = tmp_path / "sig.pt"
    base = [sys.executable, "-m", "gcf_trt.cli", "train", "--videos", str(folder_set), "--out", str(out),
            "--backbone-weights", str(weights_file), "--freeze-backbone", "--width", "4", "--clip-len", "4",
            "--size", "32", "--resize-short", "36", "--ring-size", "8", "--epochs", "2"]
    # The child gets SIGINT's default disposition, as from a terminal: a test run started in the
    # background (`cmd &`, nohup) inherits SIGINT ignored, and Python then keeps ignoring it, so
    # Ctrl-C never arrives (the hang of 2026-12-04, found with the faulthandler dump below).
    # PYTHONFAULTHANDLER: should the child hang after SIGINT, SIGABRT prints every thread's stack.
    proc = subprocess.Popen(base + ["--head-epochs", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = _time.time() + 120
        while not out.exists() and _time.time() < deadline and proc.poll() is None:
            _time.sleep(0.2)
        assert out.exists(), "no checkpoint was written"
        _time.sleep(1.0)                               # inside the head stage, likely mid-write of the next one
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            stdout, stderr = proc.communicate(timeout=30)
            pytest.fail(f"no exit 60 s after SIGINT; the child's threads at SIGABRT:\n{stderr[-6000:]}\n"
                        f"its last output:\n{stdout[-1500:]}")
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "the last good checkpoint is" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    load_checkpoint(out)                               # whole, loadable
    assert not list(tmp_path.glob(".sig.tmp*"))        # no temp file left behind
    state = torch.load(out, weights_only=True)["extra"]["train_state"]
    assert state["stage"] in ("clip", "head")
    done = subprocess.run(base + ["--head-epochs", "1", "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert torch.load(out, weights_only=True)["extra"]["train_state"]["stage"] == "done"


# ----------------------------------------------------------------------------- the no-action class
def test_stream_rings_are_every_ring_a_stream_presents_with_no_action_where_the_action_is_not():
    """Ring k holds clips max(0, k-N+1)..k right-aligned (as the runtime's ring); a ring with
    under half a clip of the action is labelled with the no-action class."""
    from gcf_trt.train import stream_rings
    desc = [torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 2)]
    overlap = [np.array([0.0, 0.2, 1.0, 0.0, 0.0], np.float32)]
    x, mask, ov, y = stream_rings(desc, [3], overlap, 3, 0.5, 9)
    assert mask.tolist() == [[0, 0, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    assert x[:, :, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert ov[1].tolist() == pytest.approx([0, 0, 0.2])
    assert y.tolist() == [9, 9, 3, 3, 3]   # 0, 0.2 of a clip: no action; 1.2, 1.2, 1.0: the video's


def test_training_with_a_no_action_class(tiny_videos, tmp_path):
    """`--no-action-class` adds the label, trains the head on every stream ring towards it where
    the ring holds no action, and keeps the video-level class among the actions."""
    from gcf_trt.evaluate import action_class
    from gcf_trt.spec import NO_ACTION_LABEL
    cfg = TrainConfig(**{**TINY, "ring_size": 4}, no_action_class=True)
    result = train(tiny_videos, tmp_path / "na.pt", cfg, log=lambda m: None)
    assert result.history["head_loss"][-1] < result.history["head_loss"][0]
    model = load_checkpoint(result.checkpoint)
    spec = model.spec
    assert spec.labels == [*CLASSES, NO_ACTION_LABEL] and spec.no_action_label == NO_ACTION_LABEL
    assert spec.no_action_index == len(CLASSES) and spec.action_labels == list(CLASSES)
    assert model.head.classifier.out_features == model.clip_classifier.out_features == len(CLASSES) + 1
    logits = np.zeros(len(CLASSES) + 1, np.float32)
    logits[spec.no_action_index], logits[2] = 5.0, 1.0
    assert action_class(logits, spec.no_action_index) == 2 and action_class(logits) == spec.no_action_index
    with pytest.raises(Exception, match="the name --no-action-class adds"):
        TrainConfig(labels=["a", NO_ACTION_LABEL], no_action_class=True).spec()
