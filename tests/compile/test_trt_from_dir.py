"""``gcf-trt build --target trt --from DIR``: TensorRT plans from a CPU build's directory, no torch.

The real CLI runs in a fresh process with the recording TensorRT stand-in (tests/trt_standin.py)
in place of ``tensorrt``; the child reports whether anything imported torch.  What TensorRT
would do with the files is the stand-in's record, not a real engine (that is scripts/gpu_check.sh).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from tests import trt_standin
from gcf_trt.manifest import read_manifest, verify_files  # noqa: E402

TRT10, TRT11 = "10.8.0.43", "11.1.0.12"


@pytest.fixture(scope="module")
def cpu_int8(tiny_checkpoint, calib_dir, tmp_path_factory):
    """A CPU build with INT8 calibrated: it ships backbone_int8_trt.onnx for TensorRT."""
    from gcf_trt.compile.build import build_engines
    from gcf_trt.compile.options import CalibrationOptions, GateOptions
    out = tmp_path_factory.mktemp("cpu") / "engines"
    build_engines(tiny_checkpoint, out, target="cpu", precision="int8", runtime="onnxruntime", calib=calib_dir,
                  calibration=CalibrationOptions(clips=8, gate_predictions=4), gate=GateOptions(min_agreement=0.0))
    return out


def _ok(res) -> None:
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.rstrip().endswith("TORCH_LOADED=False"), res.stdout[-500:]


def test_int8_plans_from_a_cpu_build_without_torch(cpu_int8, tmp_path):
    out = tmp_path / "trt"
    res = trt_standin.cli_in_subprocess(["build", "--target", "trt", "--from", str(cpu_int8), "--out", str(out),
                                         "--precision", "int8", "--max-batch", "4", "--no-verify"], TRT10)
    _ok(res)
    assert "built from" in res.stdout and "(no torch)" in res.stdout
    m = read_manifest(out)
    src = read_manifest(cpu_int8)
    assert m["target"] == "trt" and m.model_hash == src.model_hash and m["spec"] == src["spec"]
    assert m["built_from"]["from"] == str(cpu_int8) and m["built_from"]["target"] == "cpu"
    bb = m.component("backbone")
    assert bb["precision"] == "int8" and bb["source_onnx"] == "backbone_int8_trt.onnx"
    plan = trt_standin.read_plan(out / bb["file"])
    assert plan["onnx"]["qdq"] and plan["builder_flags"] == ["INT8", "FP16"]
    assert plan["profiles"][0]["clip"][2][0] == 4
    assert (out / "backbone_int8_trt.onnx").read_bytes() == (cpu_int8 / "backbone_int8_trt.onnx").read_bytes()
    assert m["calibration"]["quantization_tensorrt"]["tensorrt_qdq_problems"] == []
    assert "torch" not in m["versions"] and m["versions"]["tensorrt"] == TRT10
    verify_files(out, m)
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[2] / "docs" / "manifest.schema.json").read_text())
    for manifest in (m, src):  # the TensorRT build's manifest and its CPU source, sources included
        jsonschema.validate(manifest.to_dict(), schema)
    assert src["sources"]["backbone_int8_tensorrt"] == "backbone_int8_trt.onnx"


def test_fp16_plans_on_tensorrt11_from_a_cpu_build_without_torch(cpu_int8, tmp_path):
    out = tmp_path / "trt"
    res = trt_standin.cli_in_subprocess(["build", "--target", "trt", "--from", str(cpu_int8), "--out", str(out),
                                         "--no-verify"], TRT11, gpu="NVIDIA H100 80GB HBM3", cc=(9, 0))
    _ok(res)
    m = read_manifest(out)
    for name in ("backbone", "head"):
        comp = m.component(name)
        assert comp["precision"] == "fp16" and comp["source_onnx"] == f"{name}.fp16.onnx"
        plan = trt_standin.read_plan(out / comp["file"])
        assert plan["strongly_typed"] and plan["onnx"]["precision"] == "fp16"


def test_old_manifest_without_sources_still_builds_fp16_and_says_what_int8_needs(tiny_engines, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_engines, old)
    data = json.loads((old / "manifest.json").read_text())
    data.pop("sources", None)  # as written before the sources section existed
    (old / "manifest.json").write_text(json.dumps(data))
    _ok(trt_standin.cli_in_subprocess(["build", "--target", "trt", "--from", str(old), "--out", str(tmp_path / "a"),
                                       "--no-verify"], TRT10))
    res = trt_standin.cli_in_subprocess(["build", "--target", "trt", "--from", str(old), "--out",
                                         str(tmp_path / "b"), "--precision", "int8", "--no-verify"], TRT10)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith(("error[", "hint:"))]
    assert len(lines) == 2 and lines[0].startswith("error[calibration]: ") and "backbone_int8_trt.onnx" in lines[0]
    assert "--calib" in lines[1]
    assert not (tmp_path / "b").exists()


def test_a_tampered_source_is_refused(cpu_int8, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(cpu_int8, src)
    model = onnx.load(str(src / "head.onnx"))
    model.doc_string = "changed"
    onnx.save(model, str(src / "head.onnx"))
    res = trt_standin.cli_in_subprocess(["build", "--target", "trt", "--from", str(src), "--out", str(tmp_path / "o"),
                                         "--no-verify"], TRT10)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error[engine]: ") and "does not match the hash" in res.stderr
    assert not (tmp_path / "o").exists()


def test_out_must_differ_from_the_source(cpu_int8):
    res = trt_standin.cli_in_subprocess(["build", "--target", "trt", "--from", str(cpu_int8), "--out", str(cpu_int8)],
                                        TRT10)
    assert res.returncode == 1 and res.stderr.startswith("error[input]: --out must differ from --from")


def test_target_trt_passes_the_calibration_flags_on(tiny_checkpoint, calib_dir, tmp_path):
    """--target trt used to drop --calib-clips and --calib-method; they reach the quantizer now."""
    out = tmp_path / "trt"
    res = trt_standin.cli_in_subprocess(["build", "--target", "trt", "--checkpoint", str(tiny_checkpoint),
                                         "--out", str(out), "--precision", "int8", "--calib", str(calib_dir),
                                         "--calib-clips", "5", "--calib-method", "percentile",
                                         "--gate-predictions", "4", "--no-verify"], TRT10)
    assert res.returncode == 0, res.stderr[-3000:]
    cal = read_manifest(out)["calibration"]
    assert cal["quantization_tensorrt"]["method"] == "percentile"
    assert cal["calibration_clips"] == cal["quantization_tensorrt"]["num_calibration_clips"] <= 5
