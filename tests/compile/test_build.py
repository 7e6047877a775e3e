"""``gcf-trt build`` on the CPU target: INT8 build, selection trial, agreement gate, manifest, CLI."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402

from tests.conftest import write_video
from gcf_trt.cli import main  # noqa: E402
from gcf_trt.compile import precision as P  # noqa: E402
from gcf_trt.manifest import read_manifest, sha256_file, verify_files  # noqa: E402
from gcf_trt.runtime.backends import available_runtimes  # noqa: E402


class _Built:
    def __init__(self, out: Path, stdout: str):
        self.out, self.stdout = out, stdout
        self.manifest = json.loads((out / "manifest.json").read_text())
        self.summary = [line for line in stdout.splitlines() if not line.startswith("...")]


@pytest.fixture(scope="module")
def int8_build(tiny_checkpoint, calib_dir, tmp_path_factory):
    """``gcf-trt build --target auto --precision int8`` through the CLI: on this box (no TensorRT)
    it falls back to CPU and, with OpenVINO installed, times ORT int8 against OpenVINO int8."""
    import contextlib
    import io
    out = tmp_path_factory.mktemp("built") / "int8"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["build", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--target", "auto",
                   "--precision", "int8", "--calib", str(calib_dir), "--min-agreement", "0.5", "--gate-predictions", "4",
                   "--trial-iterations", "2", "--threads", "1"])
    assert rc == 0, buf.getvalue()
    return _Built(out, buf.getvalue())


def test_int8_build_files_and_qdq(int8_build):
    out, m = int8_build.out, int8_build.manifest
    bb = m["components"]["backbone"]
    assert bb["file"] == "backbone_int8.onnx" and bb["precision"] == "int8"
    assert m["components"]["head"]["precision"] == "fp32"
    # the TensorRT Q/DQ file comes with every INT8 build, so --target trt --from works on it
    assert sorted(p.name for p in out.iterdir()) == ["backbone.onnx", "backbone_int8.onnx", "backbone_int8_trt.onnx",
                                                     "head.npz", "head.onnx", "manifest.json"]
    assert m["sources"] == {"backbone": "backbone.onnx", "head": "head.onnx",
                            "backbone_int8_tensorrt": "backbone_int8_trt.onnx"}
    trt_qdq = onnx.load(str(out / "backbone_int8_trt.onnx"))
    assert P.tensorrt_qdq_problems(trt_qdq) == []
    int32 = {i.name for i in trt_qdq.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    assert not int32.intersection(n.input[0] for n in trt_qdq.graph.node if n.op_type == "DequantizeLinear")
    assert m["calibration"]["quantization_tensorrt"]["tensorrt_qdq_problems"] == []
    model = onnx.load(str(out / "backbone_int8.onnx"))
    ops = P.qdq_op_counts(model)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    stem = P.stem_conv_names(model)
    assert stem and stem[0] not in P.quantized_nodes(model)
    assert {p.key: p.value for p in model.metadata_props}["gcf_trt.precision"] == "int8"


def test_manifest_contents_and_hashes(int8_build, tiny_model):
    from gcf_trt.compile.model import model_hash
    out = int8_build.out
    m = read_manifest(out)
    assert m == int8_build.manifest and m.spec.to_dict() == m["spec"]
    assert m["target"] == "cpu" and m["parity"]["descriptor"] <= 1e-4
    assert m["model_hash"] == model_hash(tiny_model)
    assert m["spec"] == tiny_model.spec.to_dict()
    on_disk = {p.name for p in out.iterdir() if p.name != "manifest.json"}
    assert set(m["files"]) == on_disk
    for name, digest in m["files"].items():
        assert sha256_file(out / name) == digest
    verify_files(out, m)
    for key in ("onnx", "onnxruntime", "torch", "gcf_trt", "numpy"):
        assert key in m["versions"]
    assert m["components"]["backbone"]["inputs"]["clip"] == [-1, *tiny_model.spec.clip_shape]
    cal = m["calibration"]
    assert cal["num_clips"] == 18 and cal["holdout_clips"] + cal["calibration_clips"] == 18
    # whole videos are held out for the gate, disjoint from the calibration videos
    assert sorted(v["file"] for v in cal["videos"] + cal["holdout_videos"]) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert not {v["file"] for v in cal["videos"]} & {v["file"] for v in cal["holdout_videos"]}
    q = cal["quantization"]
    assert q["format"] == "QDQ" and q["method"] == "minmax" and q["excluded_nodes"]
    assert "slower" in q["exclusion_reason"]
    agr = m["agreement"]
    assert 0.5 <= agr["top1_agreement"] <= 1.0 and agr["num_clips"] == cal["holdout_clips"]
    assert agr["cosine_mean"] > 0.9


def test_selection_recorded(int8_build):
    sel = int8_build.manifest["selection"]
    chosen = sel["chosen"]
    comp = int8_build.manifest["components"]["backbone"]
    assert (chosen["runtime"], chosen["precision"]) == (comp["runtime"], "int8")
    names = [(c["runtime"], c["precision"]) for c in sel["candidates"]]
    if available_runtimes()["openvino"] is None:
        assert names == [("onnxruntime", "int8"), ("openvino", "int8")]
        assert sel["mode"] == "measured" and sel["trial"]["iterations"] == 2
        passing = [c for c in sel["candidates"] if c["passed"]]
        assert all(c["median_ms"] > 0 for c in sel["candidates"] if "median_ms" in c)
        fastest = min(passing, key=lambda c: c["median_ms"])
        assert (fastest["runtime"], fastest["precision"]) == (chosen["runtime"], chosen["precision"])
        assert "trial" in " ".join(int8_build.summary)
    for c in sel["candidates"]:
        assert c["agreement"]["num_predictions"] >= 1
    if available_runtimes()["tensorrt"] is not None:
        assert sel["target"]["requested"] == "auto" and sel["target"]["chosen"] == "cpu"
        assert "TensorRT" in sel["target"]["reason"]
        assert any("auto -> cpu" in line for line in int8_build.summary)


def test_int8_engines_load_and_run(int8_build, tiny_model):
    from gcf_trt.runtime.engines import load_engines
    clip = np.random.default_rng(0).standard_normal((1, *tiny_model.spec.clip_shape)).astype(np.float32)
    with load_engines(int8_build.out) as eng:
        assert eng.backbone.precision == "int8"
        assert eng.backbone.infer({"clip": clip})["descriptor"].shape == (1, tiny_model.spec.dim)


def test_int8_build_runs_on_openvino_too(int8_build, tiny_model):
    """The same Q/DQ file, loaded on OpenVINO through the engines API, reports INT8."""
    if available_runtimes()["openvino"] is not None:
        pytest.skip("OpenVINO is not installed")
    from gcf_trt.compile.agreement import agreement
    from gcf_trt.runtime.engines import load_engines
    with load_engines(int8_build.out, runtime="openvino") as ov_eng, load_engines(int8_build.out) as eng:
        assert ov_eng.backbone.precision == "int8" and ov_eng.head.precision == "fp32"
        clips = np.random.default_rng(2).standard_normal((4, *tiny_model.spec.clip_shape)).astype(np.float32)
        assert agreement(eng.backbone, ov_eng.backbone, clips, eng.head)["cosine_min"] > 0.95


def test_explicit_fp32_runtime_runs_no_trial(tiny_engines):
    m = read_manifest(tiny_engines)
    sel = m["selection"]
    assert sel["mode"] == "forced" and sel["trial"] is None
    assert [(c["runtime"], c["precision"]) for c in sel["candidates"]] == [("onnxruntime", "fp32")]
    assert "median_ms" not in sel["candidates"][0]
    assert m["components"]["backbone"]["runtime"] == "onnxruntime"
    assert m["calibration"] is None and m["agreement"] is None
    assert sorted(m["files"]) == ["backbone.onnx", "head.npz", "head.onnx"]


def test_failed_agreement_gate_exits_1_and_keeps_output(tiny_checkpoint, calib_dir, tmp_path, capsys):
    out = tmp_path / "engines"
    out.mkdir()
    (out / "manifest.json").write_text("the previous build")
    # BF16 on OpenVINO where the CPU has it (the INT8 path is covered by int8_build), else ORT INT8.
    reduced = ["--precision", "int8", "--runtime", "onnxruntime"]
    if available_runtimes()["openvino"] is None:
        from gcf_trt.runtime.backends.openvino import supports_bf16
        if supports_bf16():
            reduced = ["--precision", "bf16", "--runtime", "openvino"]
    rc = main(["build", "--checkpoint", str(tiny_checkpoint), "--out", str(out), *reduced,
               "--calib", str(calib_dir), "--gate-predictions", "4", "--min-agreement", "1.0", "--min-cosine", "1.0"])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 1
    assert "error[agreement]" in err and "Traceback" not in err and "hint:" in err
    # an engine never matches FP32 to the last bit, so one of the two thresholds fails, by name
    assert f"{reduced[3]} {reduced[1]}" in err and ("below --min-agreement 100.0%" in err or "below --min-cosine" in err)
    assert f"checking {reduced[3]} {reduced[1]} against FP32" in captured.out  # the gate really ran
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "the previous build"
    assert [p.name for p in tmp_path.iterdir()] == ["engines"]  # no temp dir left behind


def _bad_checkpoints(tmp_path, tiny_model):
    import torch
    from gcf_trt.compile.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    unknown = tmp_path / "unknown_backbone.pt"
    spec = {**tiny_model.spec.to_dict(), "backbone": "nosuchnet"}
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "spec": spec,
                "state_dict": {}, "extra": {}}, unknown)
    return corrupt, unknown


@pytest.mark.parametrize("case", ["missing_ckpt", "corrupt_ckpt", "unknown_backbone", "no_calib_dir",
                                  "no_readable_video", "too_short", "int8_without_calib",
                                  "unwritable_out", "foreign_out_dir", "fp16_on_cpu",
                                  "trt_without_tensorrt"])
def test_cli_bad_inputs(case, tiny_checkpoint, tiny_model, tmp_path, capsys):
    corrupt, unknown = _bad_checkpoints(tmp_path, tiny_model)
    ckpt, out = str(tiny_checkpoint), tmp_path / "out"
    extra: list[str] = []
    kind = {"missing_ckpt": "checkpoint", "corrupt_ckpt": "checkpoint", "unknown_backbone": "backbone",
            "no_calib_dir": "calibration", "no_readable_video": "calibration", "too_short": "calibration",
            "int8_without_calib": "calibration", "unwritable_out": "output", "foreign_out_dir": "output",
            "fp16_on_cpu": "input",
            "trt_without_tensorrt": "backend"}[case]
    if case == "missing_ckpt":
        ckpt = str(tmp_path / "nope.pt")
    elif case == "corrupt_ckpt":
        ckpt = str(corrupt)
    elif case == "unknown_backbone":
        ckpt = str(unknown)
    elif case == "no_calib_dir":
        extra = ["--calib", str(tmp_path / "nocalib")]
    elif case == "no_readable_video":
        d = tmp_path / "calib"
        d.mkdir()
        (d / "x.mp4").write_bytes(b"not a video")
        extra = ["--calib", str(d)]
    elif case == "too_short":
        d = tmp_path / "calib"
        d.mkdir()
        write_video(d / "short.mp4", num_frames=2)
        extra = ["--calib", str(d), "--precision", "int8"]
    elif case == "int8_without_calib":
        extra = ["--precision", "int8"]
    elif case == "unwritable_out":
        blocker = tmp_path / "afile"
        blocker.write_text("x")
        out = blocker / "engines"
    elif case == "foreign_out_dir":
        out = tmp_path / "home"
        out.mkdir()
        (out / "thesis.tex").write_text("precious")
    elif case == "fp16_on_cpu":
        extra = ["--precision", "fp16"]
    elif case == "trt_without_tensorrt":
        if available_runtimes()["tensorrt"] is None:
            pytest.skip("TensorRT is usable here")
        extra = ["--target", "trt"]
    rc = main(["build", "--checkpoint", ckpt, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = [line for line in err.splitlines() if line.startswith(("error[", "hint:"))]
    assert lines[0].startswith(f"error[{kind}]"), err
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert "Traceback" not in err
    if case == "foreign_out_dir":
        assert (out / "thesis.tex").read_text() == "precious" and len(list(out.iterdir())) == 1
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_verbose_shows_traceback(tmp_path, capsys):
    rc = main(["--verbose", "build", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "Traceback" in capsys.readouterr().err


def test_cli_subprocess_one_line_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gcf_trt.cli", "build", "--checkpoint", str(tmp_path / "no.pt"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error[checkpoint]" in proc.stderr and "no.pt" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_summary(int8_build):
    text = int8_build.stdout
    assert f"wrote {int8_build.out}" in text and "backbone_int8.onnx (int8, " in text
    # clips and videos counted apart (it once read "on 256 held-out videos" for 256 clips)
    assert re.search(r"agreement with FP32 on \d+ clips of 1 held-out videos \(not calibrated on\)", text), text
    assert re.search(r"calibration: \d+ clips from 2 video\(s\); gate: \d+ clips of 1 other video", text), text
    assert "... calibrating INT8" in text  # progress lines
    assert int8_build.manifest["components"]["backbone"]["options"]["threads"] == 1


def test_trt_target_delegates_to_trt_build(monkeypatch, tmp_path):
    """--target auto with TensorRT usable -> trt_build.build_trt_engines, with the typed options."""
    import gcf_trt.runtime.backends as backends
    from gcf_trt.compile import trt_build
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import CalibrationOptions, CpuOptions, GateOptions, TensorRTOptions
    from gcf_trt.errors import InputError
    calls = {}

    def fake(checkpoint, out, **kw):
        calls.update(checkpoint=checkpoint, out=out, **kw)
        return "built"
    monkeypatch.setattr(trt_build, "build_trt_engines", fake)
    monkeypatch.setattr(backends, "available_runtimes",
                        lambda: {"onnxruntime": None, "openvino": None, "tensorrt": None})
    calibration, gate = CalibrationOptions(clips=16, method="percentile"), GateOptions(min_agreement=0.9)
    tensorrt = TensorRTOptions(workspace_mb=512)
    result = build_engines("m.pt", tmp_path / "o", target="auto", precision="int8", calib="videos",
                           calibration=calibration, gate=gate, cpu=CpuOptions(threads=1), tensorrt=tensorrt)
    assert result == "built"
    assert calls == dict(checkpoint="m.pt", out=tmp_path / "o", precision="int8", calib="videos", from_dir=None,
                         calibration=calibration, gate=gate, tensorrt=tensorrt, progress=None)
    # --target cpu refuses TensorRT options, --target trt CPU ones, instead of ignoring them.
    with pytest.raises(InputError, match="TensorRT options were given for --target cpu"):
        build_engines("m.pt", tmp_path / "o", target="cpu", tensorrt=tensorrt)
    with pytest.raises(InputError, match="--runtime"):
        build_engines("m.pt", tmp_path / "o", target="trt", runtime="openvino")
    with pytest.raises(InputError, match="exactly one of --checkpoint and --from"):
        build_engines("m.pt", tmp_path / "o", target="trt", from_dir=tmp_path)


def test_impossible_cpu_requests_fail_before_export(tiny_checkpoint, calib_dir, tmp_path, capsys):
    """bf16 on ONNX Runtime is refused before anything is exported or written."""
    rc = main(["build", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--precision", "bf16",
               "--runtime", "onnxruntime", "--calib", str(calib_dir)])
    captured = capsys.readouterr()
    assert rc == 1 and "error[input]" in captured.err and "OpenVINO" in captured.err
    assert "exporting" not in captured.out
    assert list(tmp_path.iterdir()) == []


def test_forced_runtime_that_is_missing(monkeypatch, tiny_checkpoint, tmp_path, capsys):
    import gcf_trt.runtime.backends as backends
    real = backends.available_runtimes
    monkeypatch.setattr(backends, "available_runtimes",
                        lambda: {**real(), "openvino": "OpenVINO cannot be imported: No module named 'openvino'"})
    rc = main(["build", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--runtime", "openvino"])
    err = capsys.readouterr().err
    assert rc == 1 and "error[backend]" in err and "pip install 'gcf-trt[openvino]'" in err
    assert not (tmp_path / "o").exists()


def test_two_concurrent_builds_to_one_out_end_with_one_complete_result(tiny_checkpoint, tmp_path):
    """Two `gcf-trt build` processes to the same --out: both succeed, the result is whole."""
    out = tmp_path / "engines"
    argv = [sys.executable, "-m", "gcf_trt.cli", "build", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
            "--precision", "fp32", "--runtime", "onnxruntime"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    m = read_manifest(out)
    verify_files(out, m)  # every file of the winner present and matching its hash
    assert {p.name for p in out.iterdir()} == set(m["files"]) | {"manifest.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["engines"]  # no temp or old dirs left


def test_bf16_is_not_a_candidate_where_onednn_is_limited_below_it(monkeypatch):
    """Under ONEDNN_MAX_CPU_ISA=AVX2 (how docs/INT8.md imitates an AVX2 CPU) the CPU flags and
    OpenVINO's capability list still say BF16, but a BF16 engine fails at its first inference: the
    build must not try it, and says why."""
    from gcf_trt.compile.cpu_build import _cpu_candidates
    from gcf_trt.runtime.backends import openvino as ov_backend
    monkeypatch.setattr(ov_backend, "supports_bf16", lambda: True)
    monkeypatch.setattr("gcf_trt.runtime.backends.available_runtimes",
                        lambda: {"onnxruntime": None, "openvino": None})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    notes: list[str] = []
    assert ("openvino", "bf16") in {(c.runtime, c.precision) for c in _cpu_candidates("auto", None, True, True, 1, notes)}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    notes = []
    cands = _cpu_candidates("auto", None, True, True, 1, notes)
    assert "bf16" not in {c.precision for c in cands} and {c.precision for c in cands} == {"fp32", "int8"}
    assert notes == ["openvino bf16 not tried: ONEDNN_MAX_CPU_ISA=AVX2 limits OpenVINO's kernels to an ISA without BF16"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert "bf16" in {c.precision for c in _cpu_candidates("auto", None, True, True, 1, [])}


def test_a_candidate_that_loads_but_fails_to_run_is_refused_and_another_is_chosen(
        monkeypatch, tiny_checkpoint, calib_dir, tmp_path):
    """An engine can compile and then fail at inference (OpenVINO BF16 under an ISA limit did:
    "Convolution node ... object is not initialized").  The build records the error line for that
    candidate, leaves it out of the trial, and chooses among the others; forced, it is one error."""
    from gcf_trt.compile import agreement as agreement_module
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import CalibrationOptions, CpuOptions, GateOptions
    from gcf_trt.errors import EngineError
    real = agreement_module.agreement
    opts = {"calibration": CalibrationOptions(gate_predictions=4), "gate": GateOptions(min_agreement=0.5),
            "cpu": CpuOptions(threads=1, trial_iterations=2)}

    def failing_on_int8(reference, backend, *args, **kwargs):
        if "int8" in str(getattr(backend, "path", "")):
            raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:224:\n"
                               "[CPU] Convolution node with name 'node_Conv_1' object is not initialized\n")
        return real(reference, backend, *args, **kwargs)
    monkeypatch.setattr(agreement_module, "agreement", failing_on_int8)
    result = build_engines(tiny_checkpoint, tmp_path / "auto", target="cpu", precision="auto", runtime="onnxruntime",
                           calib=calib_dir, **opts)
    cands = {c["precision"]: c for c in result.manifest["selection"]["candidates"]}
    assert cands["int8"]["passed"] is False and "median_ms" not in cands["int8"]
    assert cands["int8"]["error"] == "failed to run: [CPU] Convolution node with name 'node_Conv_1' object is not initialized"
    assert result.manifest["selection"]["chosen"]["precision"] == "fp32"
    with pytest.raises(EngineError, match="onnxruntime int8 loads but fails to run: .CPU. Convolution node"):
        build_engines(tiny_checkpoint, tmp_path / "forced", target="cpu", precision="int8", runtime="onnxruntime",
                      calib=calib_dir, **opts)
    assert not (tmp_path / "forced").exists()
