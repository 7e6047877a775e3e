"""torchvision backbones for real (``pytest -m torchvision`` in the [torchvision] venv).

For r3d_18, mc3_18, r2plus1d_18 and s3d: weights loaded from a saved state dict file through
``gcf-trt train --backbone-weights`` (real weights cannot be downloaded here, so the file
holds a seeded random torchvision initialisation: the loading path is the same), ONNX export
and parity with PyTorch, a CPU INT8 build through the agreement gate, and streaming equal to
offline on a short video.  Tiny clips (8 x 64 x 64) keep it to minutes on 2 cores.

Where torchvision does not import these tests are skipped with the reason; scripts/ci_torchvision.sh
runs them in a venv where it does.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gcf_trt.compile.model import load_checkpoint, torchvision_status  # noqa: E402
from gcf_trt.data import CLASSES, plan_video, render_video, write_video  # noqa: E402
from gcf_trt.preprocess import clips_from_frames  # noqa: E402

pytestmark = [pytest.mark.torchvision,
              pytest.mark.skipif(torchvision_status() is not None,
                                 reason=f"torchvision: {torchvision_status()} (run scripts/ci_torchvision.sh)")]

BACKBONES = ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")
LABELS = ("move_left", "grow")
SHAPE = ["--clip-len", "8", "--size", "64", "--resize-short", "72", "--ring-size", "4"]


def _cli(cwd, *args, ok=True, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"gcf-trt {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Class folders (2 classes x 2 generated videos) and a calibration dir of 2 more."""
    root = tmp_path_factory.mktemp("tv")
    for i in range(6):
        label = LABELS[i % 2]
        frames = render_video(plan_video(seed=9, index=i, label=CLASSES.index(label)))[:48]
        sub = root / "ds" / label if i < 4 else root / "calib"
        sub.mkdir(parents=True, exist_ok=True)
        write_video(sub / f"v{i}.mp4", frames)
    return root


def _find(tree, key):
    """Every value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        return ([tree[key]] if key in tree else []) + [v for x in tree.values() for v in _find(x, key)]
    if isinstance(tree, list):
        return [v for x in tree for v in _find(x, key)]
    return []


@pytest.mark.parametrize("name", BACKBONES)
def test_torchvision_backbone_end_to_end(name, data, tmp_path):
    import onnxruntime as ort
    from torchvision.models import video as tvv
    from gcf_trt.compile.export import check_parity
    from gcf_trt.runtime import StreamingClassifier
    from gcf_trt.runtime.engines import load_engines
    from gcf_trt.train import train_from_args

    torch.manual_seed(0)
    net = getattr(tvv, name)(weights=None)          # the layout of torchvision's Kinetics files, fc included
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    # gcf-trt train --backbone NAME --backbone-weights FILE --freeze-backbone (in-process: same code path,
    # without paying another torch + torchvision import on 2 cores)
    opts = dict(videos=[str(data / "ds")], out=str(tmp_path / "m.pt"), backbone=name,
                backbone_weights=str(tmp_path / "weights.pt"), freeze_backbone=True, clip_len=8, size=64,
                resize_short=72, ring_size=4, epochs=2, head_epochs=20, val_fraction=0.0,
                cache_dir=str(tmp_path / "cache"))
    train_from_args(opts, log=lambda m: None)
    model = load_checkpoint(tmp_path / "m.pt")
    theirs = {k: v for k, v in net.state_dict().items() if not k.startswith(("fc.", "classifier."))}
    ours = model.backbone.net.state_dict()
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        torch.testing.assert_close(ours[k], v, msg=k)

    # CPU INT8 through the agreement gate (real CLI); the dir also holds the FP32 ONNX export
    _cli(data, "build", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "int8"),
         "--precision", "int8", "--runtime", "onnxruntime", "--calib", "calib", "--calib-clips", "16",
         "--gate-predictions", "4")
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["components"]["backbone"]["precision"] == "int8"
    agreement = _find(manifest, "top1_agreement")
    assert agreement and min(agreement) >= 0.99, agreement    # the gate's default threshold

    # ONNX export parity with PyTorch: random inputs (check_parity) and real clips
    frames = render_video(plan_video(seed=9, index=20, label=0))[:48]
    clips, _ = clips_from_frames(frames, model.spec)
    with torch.no_grad():
        desc = model.backbone(torch.from_numpy(clips)).numpy()
    onnx_dir = tmp_path / "int8"
    diffs = check_parity(model, onnx_dir / "backbone.onnx", onnx_dir / "head.onnx")
    assert diffs["logits"] < 1e-3 and diffs["gates"] < 1e-4, diffs
    sess = ort.InferenceSession(str(onnx_dir / "backbone.onnx"), providers=["CPUExecutionProvider"])
    (onnx_desc,) = sess.run(None, {"clip": np.ascontiguousarray(clips[:2])})
    np.testing.assert_allclose(onnx_desc, desc[:2], atol=1e-4 * max(1.0, float(np.abs(desc).max())), rtol=0)

    # streaming == offline on the INT8 engines (6 clips through a ring of 4: it wraps)
    eng = load_engines(onnx_dir)
    try:
        e_desc = np.concatenate([eng.backbone.infer({"clip": np.ascontiguousarray(clips[i:i + 1])})["descriptor"]
                                 for i in range(len(clips))])
        n, offline = model.spec.ring_size, []
        for k in range(len(clips)):
            lo = max(0, k - n + 1)
            ring = np.zeros((1, n, model.spec.dim), np.float32)
            mask = np.zeros((1, n), np.float32)
            ring[0, n - (k - lo + 1):] = e_desc[lo:k + 1]
            mask[0, n - (k - lo + 1):] = 1
            out = eng.head.infer({"descriptors": ring, "mask": mask})
            offline.append((out["logits"][0], out["gates"][0, n - (k - lo + 1):]))
    finally:
        eng.close()
    with StreamingClassifier(onnx_dir) as clf:
        preds = clf.run_frames(list(frames))
    assert len(preds) == len(offline) == 6
    for k, (p, (logits, gates)) in enumerate(zip(preds, offline)):
        np.testing.assert_allclose(p.logits, logits, atol=1e-4 * max(1.0, float(np.abs(logits).max())), rtol=0,
                                   err_msg=f"clip {k}")
        np.testing.assert_allclose(p.gate_values, gates, atol=1e-4, rtol=0, err_msg=f"clip {k}")
