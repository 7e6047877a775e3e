"""Bring your own videos: class folders + an annotation file -> train (frozen backbone from a
state dict file) -> eval -> CPU engines -> stream, every step through the real CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from gcf_trt.data import CLASSES, FPS, plan_video, render_video, write_video  # noqa: E402

LABELS = ("move_left", "move_right", "grow")   # the generator's classes, stored as a user would
SMALL = ["--width", "4", "--clip-len", "4", "--size", "32", "--resize-short", "36", "--ring-size", "16",
         "--epochs", "4", "--head-epochs", "30"]


def _cli(cwd, *args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"gcf-trt {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    rows = ["path,label,start_s,end_s,split"]
    for i in range(12):
        label = LABELS[i % 3]
        plan = plan_video(seed=5, index=i, label=CLASSES.index(label))
        frames = render_video(plan)
        if i < 6:                                           # class-per-folder
            (root / "folders" / label).mkdir(parents=True, exist_ok=True)
            write_video(root / "folders" / label / f"clip{i}.mp4", frames)
        else:                                               # annotation file with action windows
            (root / "listed").mkdir(exist_ok=True)
            write_video(root / "listed" / f"v{i}.avi", frames)
            rows.append(f"v{i}.avi,{label},{plan.start / FPS:.3f},{(plan.end + 1) / FPS:.3f},"
                        f"{'val' if i >= 9 else 'train'}")
    (root / "listed" / "list.csv").write_text("\n".join(rows) + "\n")
    from gcf_trt.compile.model import build_backbone
    torch.manual_seed(0)
    torch.save(build_backbone("edge3d", width=4, blocks=(1, 1, 1, 1)).state_dict(), root / "backbone.pt")
    return root


def test_bring_your_own_videos_end_to_end(user_data):
    root = user_data
    train = _cli(root, "train", "--videos", "folders", "listed/list.csv", "--out", "model.pt",
                 "--backbone-weights", "backbone.pt", "--freeze-backbone", *SMALL)
    out = train.stdout
    assert "folders (folders): 6 videos" in out and "list.csv (annotations): 6 videos" in out
    assert "mode freeze" in out and "validation (" in out
    summary = json.loads(out.strip().splitlines()[-1])

    ev = _cli(root, "eval", "--checkpoint", "model.pt", "--videos", "listed/list.csv", "--split", "val",
              "--out-json", "acc.json", "--out-md", "acc.md")
    report = json.loads((root / "acc.json").read_text())
    assert report["num_videos"] == 3 and report["layout"] == "annotations"
    assert report["segment_videos"] == 3 and 0.0 <= report["segment_tiou"] <= 1.0
    assert "GCF fusion" in ev.stdout
    bare = _cli(root, "eval", "--checkpoint", "model.pt", "--videos", "listed/list.csv", "--limit", "1")
    assert "GCF fusion" in bare.stdout and "wrote" not in bare.stdout   # files only when asked for
    assert not (root / "benchmarks").exists()
    _cli(root, "eval", "--checkpoint", "model.pt", "--videos", "folders", "--split", "val",
         "--out-json", "acc_f.json", "--out-md", "acc_f.md")   # the split's fraction and seed from the checkpoint
    folder_val = json.loads((root / "acc_f.json").read_text())
    assert folder_val["num_videos"] == 3 and folder_val["segment_tiou"] is None   # no windows in folders
    assert summary["validation"]["videos"] == 3 + 3

    _cli(root, "build", "--checkpoint", "model.pt", "--out", "engines", "--precision", "fp32",
         "--runtime", "onnxruntime")
    manifest = json.loads((root / "engines" / "manifest.json").read_text())
    assert manifest["spec"]["labels"] == sorted(LABELS)
    ev2 = _cli(root, "eval", "--checkpoint", "model.pt", "--videos", "folders", "--engines", "engines",
               "--out-json", "acc2.json", "--out-md", "acc2.md")
    row = json.loads((root / "acc2.json").read_text())["engines"]["engines"]
    assert row["agreement_with_pytorch"] == 1.0, ev2.stdout  # FP32 engines = the PyTorch model

    _cli(root, "run", "listed/v6.avi", "--engines", "engines", "--jsonl", "preds.jsonl")
    lines = [json.loads(ln) for ln in (root / "preds.jsonl").read_text().splitlines() if ln.strip()]
    preds = [ln for ln in lines if "label" in ln]
    assert preds and all(p["label"] in LABELS for p in preds)
