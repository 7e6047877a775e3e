"""The PyTorch model: shapes, the mask, the head's equations, the baselines, checkpoints."""
from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")

from gcf_trt.compile.model import (GCFHead, build_backbone, load_checkpoint,  # noqa: E402
                                   model_hash, save_checkpoint)
from gcf_trt.errors import BackboneError, CheckpointError  # noqa: E402
from gcf_trt.spec import ModelSpec  # noqa: E402


def test_shapes(tiny_model):
    spec = tiny_model.spec
    clips = torch.randn(2, 5, *spec.clip_shape)
    with torch.no_grad():
        logits, gates = tiny_model(clips)
        desc = tiny_model.descriptors(clips)
    assert logits.shape == (2, spec.num_classes)
    assert gates.shape == (2, 5)
    assert desc.shape == (2, 5, spec.dim)
    assert ((gates > 0) & (gates < 1)).all()


def test_masked_slots_are_like_absent_clips(tiny_model):
    """k valid clips left-padded to N give the same logits as the k clips alone."""
    torch.manual_seed(1)
    spec = tiny_model.spec
    desc = torch.randn(1, 3, spec.dim)
    padded = torch.cat([torch.randn(1, 5, spec.dim) * 100, desc], 1)  # garbage in masked slots
    mask = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    with torch.no_grad():
        ref_logits, ref_gates = tiny_model.head(desc, torch.ones(1, 3))
        logits, gates = tiny_model.head(padded, mask)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gates[:, 5:], ref_gates, atol=1e-6, rtol=1e-6)
    assert (gates[:, :5] == 0).all()


def test_fusion_is_bidirectional_and_long_range():
    """Changing clip j changes fused clip i exactly when |i - j| is 0, 1 or d."""
    torch.manual_seed(0)
    head = GCFHead(dim=6, hidden=8, num_classes=3, long_range=3).eval()
    x = torch.randn(1, 9, 6)
    mask = torch.ones(1, 9)
    base = head.fused(x, mask)
    for j in range(9):
        y = x.clone()
        y[0, j] += 5.0
        changed = (head.fused(y, mask) - base).abs().sum(-1)[0] > 1e-6
        expected = {i for i in range(9) if abs(i - j) in (0, 1, 3)}
        assert {i for i in range(9) if changed[i]} <= expected
        assert changed[j]


def test_selection_ignores_low_gate_clips():
    """With select_ratio=1 only the top-gated clip forms the video descriptor."""
    torch.manual_seed(0)
    head = GCFHead(dim=4, hidden=8, num_classes=2, long_range=2, select_ratio=1.0).eval()
    x, mask = torch.randn(1, 5, 4), torch.ones(1, 5)
    f = head.fused(x, mask)
    logits, gates = head(x, mask)
    top = gates.argmax()
    torch.testing.assert_close(logits, head.classifier(f[:, top] * gates[0, top] / (gates[0, top] + 1e-6)))


def test_baselines(tiny_model):
    spec = tiny_model.spec
    desc = torch.randn(1, 4, spec.dim)
    mask = torch.tensor([[0, 1, 1, 1]], dtype=torch.float32)
    clip_logits = tiny_model.clip_logits(desc)
    torch.testing.assert_close(tiny_model.central_clip_logits(desc, mask), clip_logits[:, 2])
    torch.testing.assert_close(tiny_model.average_logits(desc, mask), clip_logits[:, 1:].mean(1))


def test_unknown_backbone():
    with pytest.raises(BackboneError, match="unknown backbone 'nope'"):
        build_backbone("nope")


def test_checkpoint_round_trip(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "m.pt")
    loaded = load_checkpoint(path)
    assert loaded.spec == tiny_model.spec
    assert model_hash(loaded) == model_hash(tiny_model)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind


class _Exploit:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path('PWNED').touch()",))


def test_checkpoint_with_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"format": "gcf-trt-checkpoint", "payload": _Exploit()}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(bad)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content, match", [(None, "does not exist"), (b"", "empty"),
                                             (b"not a zip at all", "cannot be read")])
def test_bad_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "c.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a gcf-trt checkpoint"):
        load_checkpoint(path)


def test_spec_json_round_trip(tiny_model):
    spec = tiny_model.spec
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


# ----------------------------------------------------------------------------- the CLI's one-line errors
def _cli(tmp_path, *args, env_extra=None):
    """Run the real CLI in a fresh process (what a user sees, nothing mocked in-process)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "gcf_trt.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_one_line_error(proc, kind, *fragments):
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error[")]
    hint_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("hint: ")]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(err_lines) == 1 and len(hint_lines) == 1, proc.stderr
    assert err_lines[0].startswith(f"error[{kind}]: ")
    for fragment in fragments:
        assert fragment in err_lines[0] + hint_lines[0]


def test_cli_build_on_a_text_file_is_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("meeting notes, not a checkpoint\n" * 20)
    proc = _cli(tmp_path, "build", "--checkpoint", "notes.txt", "--out", "e")
    _assert_one_line_error(proc, "checkpoint", "notes.txt", "not a torch checkpoint")
    assert not (tmp_path / "e").exists()


def test_cli_backbones_with_a_torchvision_that_does_not_import(tmp_path):
    # A torchvision built for another torch raises RuntimeError at import, not ImportError;
    # this package on PYTHONPATH fails exactly like that.
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    proc = _cli(tmp_path, "backbones", env_extra={"PYTHONPATH": str(tmp_path / "site")})
    _assert_one_line_error(proc, "backbone", "torchvision is installed but does not import",
                           "operator torchvision::nms does not exist", "gcf-trt[torchvision]")


def test_backbone_weights_file_mismatch_names_the_first_keys(tmp_path):
    from gcf_trt.compile.model import load_pretrained_backbone
    net = build_backbone("edge3d", width=4, blocks=(1, 1, 1, 1))
    other = build_backbone("edge3d", width=8, blocks=(1, 1, 1, 1))
    torch.save(other.state_dict(), tmp_path / "w8.pt")
    with pytest.raises(CheckpointError, match=r"of another shape \(first: stem\.0\.weight"):
        load_pretrained_backbone(net, "edge3d", tmp_path / "w8.pt")
    state = net.state_dict()
    state.pop("stem.1.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \(first: stem\.1\.weight\).*1 unexpected"):
        load_pretrained_backbone(net, "edge3d", tmp_path / "partial.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read as torch weights"):
        load_pretrained_backbone(net, "edge3d", tmp_path / "notes.txt")


def test_backbone_weights_file_loads_wrapped_and_prefixed_state_dicts(tmp_path):
    from gcf_trt.compile.model import load_pretrained_backbone
    torch.manual_seed(3)
    src = build_backbone("edge3d", width=4, blocks=(1, 1, 1, 1))
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pt")
    dst = build_backbone("edge3d", width=4, blocks=(1, 1, 1, 1))
    load_pretrained_backbone(dst, "edge3d", tmp_path / "w.pt")
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)
