"""Triton model repository: configs parsed with Triton's own schema, the ring head checked with ORT."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from gcf_trt.errors import EngineError
from gcf_trt.manifest import read_manifest, sha256_file, write_json_atomic
from tests.conftest import read_frames
from gcf_trt.triton import (RING_CHECK_ATOL, build_ring_head, check_ring_head, export_triton, load_model_config_pb2,
                            parse_config, validate_repository)


def _onnx_io(path: Path) -> dict[str, tuple[int, list[int]]]:
    graph = onnx.load(str(path)).graph
    return {v.name: (v.type.tensor_type.elem_type,
                     [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
            for v in list(graph.input) + list(graph.output)}


@pytest.fixture(scope="module")
def repo(tiny_engines, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    result = export_triton(tiny_engines, out, max_batch=8, max_cameras=16)
    return out, result


def test_every_config_parses_with_tritons_schema_and_matches_engines(repo, tiny_engines):
    out, result = repo
    pb2 = load_model_config_pb2()
    manifest = read_manifest(tiny_engines)
    spec = manifest.spec
    configs = {p.parent.name: parse_config(p) for p in sorted(out.glob("*/config.pbtxt"))}
    assert set(configs) == {"gcf_backbone", "gcf_head", "gcf_ring_head", "gcf_stream"} == set(result.models)
    fp32 = pb2.DataType.Value("TYPE_FP32")

    # backbone and head: tensor names, dtypes and dims (batch dropped) == manifest == ONNX graph
    for cname in ("backbone", "head"):
        cfg = configs[f"gcf_{cname}"]
        comp = manifest["components"][cname]
        assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
        assert cfg.WhichOneof("scheduling_choice") == "dynamic_batching"
        assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4, 8]
        model_file = out / f"gcf_{cname}" / "1" / "model.onnx"
        assert sha256_file(model_file) == manifest["files"][comp["file"]]  # shipped unchanged
        graph_io = _onnx_io(model_file)
        for tensors, wanted in ((cfg.input, comp["inputs"]), (cfg.output, comp["outputs"])):
            assert [t.name for t in tensors] == list(wanted)
            for t in tensors:
                assert list(t.dims) == wanted[t.name][1:] == graph_io[t.name][1][1:]
                assert t.data_type == fp32 and graph_io[t.name][0] == onnx.TensorProto.FLOAT
        assert configs["gcf_backbone"].input[0].dims == list(spec.clip_shape)
    logits = next(o for o in configs["gcf_head"].output if o.name == "logits")
    assert (out / "gcf_head" / logits.label_filename).read_text().split() == spec.labels

    # ring head: one input, implicit state matching the ONNX graph's state inputs/outputs
    ring = configs["gcf_ring_head"]
    rio = _onnx_io(out / "gcf_ring_head" / "1" / "model.onnx")
    assert set(rio) == {"descriptor", "ring_in", "mask_in", "logits", "gates", "ring_out", "mask_out"}
    assert [(t.name, list(t.dims)) for t in ring.input] == [("descriptor", [spec.dim])]
    assert [(t.name, list(t.dims)) for t in ring.output] == [("logits", [spec.num_classes]), ("gates", [spec.ring_size])]
    sb = ring.sequence_batching
    assert ring.WhichOneof("scheduling_choice") == "sequence_batching"
    assert sb.WhichOneof("strategy_choice") == "oldest" and sb.oldest.max_candidate_sequences == 16
    states = {s.input_name: s for s in sb.state}
    assert set(states) == {"ring_in", "mask_in"}
    for name, out_name in (("ring_in", "ring_out"), ("mask_in", "mask_out")):
        s = states[name]
        assert s.output_name == out_name
        assert list(s.dims) == rio[name][1][1:] == rio[out_name][1][1:]
        assert s.data_type == fp32 and rio[name][0] == onnx.TensorProto.FLOAT
        (init,) = s.initial_state
        assert init.zero_data and list(init.dims) == list(s.dims)
    assert list(states["ring_in"].dims) == [spec.ring_size, spec.dim]
    assert ring.instance_group[0].kind == pb2.ModelInstanceGroup.Kind.Value("KIND_CPU")

    # ensemble: clip -> backbone -> ring head
    ens = configs["gcf_stream"]
    assert ens.platform == "ensemble" and ens.max_batch_size == 8
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["gcf_backbone", "gcf_ring_head"]
    assert [t.name for t in ens.input] == ["clip"] and [t.name for t in ens.output] == ["logits", "gates"]
    info = json.loads((out / "gcf_stream" / "gcf_trt.json").read_text())
    assert info["model_hash"] == manifest["model_hash"]
    assert set(validate_repository(out)) == set(configs)


def test_ring_head_equals_head_fed_the_ring(repo, tiny_engines):
    out, result = repo
    spec = read_manifest(tiny_engines).spec
    assert result.ring_check is not None and result.ring_check <= RING_CHECK_ATOL
    # Re-check the file actually shipped, on another seed and a longer stream.
    diff = check_ring_head(out / "gcf_ring_head" / "1" / "model.onnx", tiny_engines / "head.onnx",
                           spec.ring_size, spec.dim, batch=2, steps=3 * spec.ring_size, seed=7)
    assert diff <= RING_CHECK_ATOL


def test_ring_check_catches_a_wrong_ring_order(tiny_engines):
    """The check is not vacuous: a ring head that puts the newest clip first must fail it."""
    spec = read_manifest(tiny_engines).spec
    head = onnx.load(str(tiny_engines / "head.onnx"))
    broken = build_ring_head(head, spec.ring_size, spec.dim)
    cat = next(n for n in broken.graph.node if n.name == "gcf_ring/ring_cat")
    cat.input[:] = list(reversed(cat.input))  # newest first
    assert check_ring_head(broken, head, spec.ring_size, spec.dim) > RING_CHECK_ATOL


def test_ring_head_streams_real_clips_like_the_head(repo, tiny_engines, video_file):
    """Backbone descriptors of a real video, streamed through the ring head with its state fed back."""
    import onnxruntime as ort
    from gcf_trt.preprocess import clips_from_frames
    out, _ = repo
    spec = read_manifest(tiny_engines).spec
    frames = read_frames(video_file)
    clips, _ = clips_from_frames(frames, spec)
    assert len(clips) >= spec.ring_size + 1
    bb = ort.InferenceSession(str(out / "gcf_backbone" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    hd = ort.InferenceSession(str(tiny_engines / "head.onnx"), providers=["CPUExecutionProvider"])
    rh = ort.InferenceSession(str(out / "gcf_ring_head" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (desc,) = bb.run(None, {"clip": clips})
    ring = np.zeros((1, spec.ring_size, spec.dim), np.float32)   # Triton's zero initial_state
    mask = np.zeros((1, spec.ring_size), np.float32)
    for k in range(len(desc)):
        logits, gates, ring, mask = rh.run(["logits", "gates", "ring_out", "mask_out"],
                                           {"descriptor": desc[k:k + 1], "ring_in": ring, "mask_in": mask})
        recent = desc[max(0, k + 1 - spec.ring_size):k + 1]
        ref_ring = np.zeros_like(ring)
        ref_ring[0, spec.ring_size - len(recent):] = recent
        ref_mask = (np.arange(spec.ring_size) >= spec.ring_size - len(recent)).astype(np.float32)[None]
        ref_logits, ref_gates = hd.run(["logits", "gates"], {"descriptors": ref_ring, "mask": ref_mask})
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        np.testing.assert_allclose(gates, ref_gates, atol=1e-5)


def _fake_trt_engines(tiny_engines: Path, dst: Path, with_head_onnx: bool) -> Path:
    """A manifest that says the components are TensorRT plans.

    The "plans" are opaque bytes (no TensorRT here): this exercises what the exporter does with a
    TensorRT manifest (platform, file name, profile clamp, KIND_GPU); it does not run a plan.
    """
    shutil.copytree(tiny_engines, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    builds = {}
    for cname in ("backbone", "head"):
        (dst / f"{cname}.plan").write_bytes(b"opaque engine bytes for " + cname.encode())
        comp = manifest["components"][cname]
        # the layout gcf_trt.compile.trt_build writes: source_onnx + tensorrt.builds[c].profile
        comp.update(file=f"{cname}.plan", runtime="tensorrt", precision="fp16",
                    options={"built_for": {"tensorrt": "10.8", "sm": "87"}}, source_onnx=f"{cname}.onnx")
        builds[cname] = {"profile": {t: {"min": [1, *s[1:]], "opt": [1, *s[1:]], "max": [4, *s[1:]]}
                                     for t, s in comp["inputs"].items()}}
    if not with_head_onnx:
        (dst / "head.onnx").unlink()
        (dst / "backbone.onnx").unlink()
    manifest["tensorrt"] = {"version": "10.8.0", "options": {"max_batch": 4}, "builds": builds}
    manifest["target"] = "trt"
    manifest["files"] = {p.name: sha256_file(p) for p in dst.iterdir() if p.name != "manifest.json"}
    write_json_atomic(dst / "manifest.json", manifest)
    return dst


def test_tensorrt_manifest_ships_plans_clamped_to_the_profile(tiny_engines, tmp_path):
    engines = _fake_trt_engines(tiny_engines, tmp_path / "trt", with_head_onnx=True)
    result = export_triton(engines, tmp_path / "repo", max_batch=16)
    configs = validate_repository(tmp_path / "repo")
    pb2 = load_model_config_pb2()
    for cname in ("backbone", "head"):
        cfg = configs[f"gcf_{cname}"]
        assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4  # the profile's max
        assert (tmp_path / "repo" / f"gcf_{cname}" / "1" / "model.plan").read_bytes() == (engines / f"{cname}.plan").read_bytes()
    assert configs["gcf_backbone"].instance_group[0].kind == pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    assert configs["gcf_stream"].max_batch_size == 4
    assert any("profile" in line for line in result.summary)


def test_stateful_export_needs_the_head_onnx(tiny_engines, tmp_path):
    engines = _fake_trt_engines(tiny_engines, tmp_path / "trt", with_head_onnx=False)
    with pytest.raises(EngineError, match="no ONNX graph of the head"):
        export_triton(engines, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()  # nothing half-written
    result = export_triton(engines, tmp_path / "repo", head_onnx=tiny_engines / "head.onnx")
    assert "gcf_ring_head" in result.models
    export_triton(engines, tmp_path / "stateless", stateful=False)
    assert set(validate_repository(tmp_path / "stateless")) == {"gcf_backbone", "gcf_head"}


def test_failed_export_leaves_the_old_repository(tiny_engines, tmp_path):
    out = tmp_path / "repo"
    export_triton(tiny_engines, out, verify=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_engines, corrupt)
    with open(corrupt / "head.onnx", "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(EngineError, match="does not match the hash"):
        export_triton(corrupt, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_cli_export_triton(tiny_engines, tmp_path, capsys):
    from gcf_trt.cli import main
    rc = main(["export-triton", "--engines", str(tiny_engines), "--out", str(tmp_path / "r"),
               "--name", "cam", "--max-batch", "4", "--cpu-backend", "openvino", "--cpu-threads", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "4 config.pbtxt written through Triton's model_config schema and read back" in text
    cfg = validate_repository(tmp_path / "r")["cam_backbone"]
    assert cfg.backend == "openvino" and cfg.default_model_filename == "model.onnx"
    assert cfg.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    assert main(["export-triton", "--engines", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert main(["export-triton", "--engines", str(tiny_engines), "--out", str(tmp_path / "y"), "--name", "a b"]) == 1
    assert "model name prefix" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_backbone_batcher_preserves_request_order(repo):
    out, _ = repo
    cfg = parse_config(out / "gcf_backbone" / "config.pbtxt")
    assert cfg.dynamic_batching.preserve_ordering is True


def test_configs_are_written_through_tritons_schema():
    """A field Triton does not know fails when the config is written, not when Triton loads it."""
    from gcf_trt.triton import to_pbtxt
    text = to_pbtxt({"name": "m", "platform": "onnxruntime_onnx", "max_batch_size": 2,
                     "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
                     "parameters": {"intra_op_thread_count": {"string_value": "1"}}})
    assert 'kind: KIND_CPU' in text and 'key: "intra_op_thread_count"' in text
    with pytest.raises(EngineError, match="does not fit Triton's schema"):
        to_pbtxt({"name": "m", "max_batch_sizes": 2})
    with pytest.raises(EngineError, match="does not fit Triton's schema"):
        to_pbtxt({"name": "m", "instance_group": [{"kind": "KIND_TPU"}]})


def test_without_tritonclient_export_fails_first_naming_the_extra(tiny_engines, tmp_path):
    code = ("import sys; sys.modules['tritonclient'] = None\n"
            "import importlib.util as u; real = u.find_spec\n"
            "u.find_spec = lambda n, *a: None if n == 'tritonclient' else real(n, *a)\n"
            "from gcf_trt.cli import main\n"
            f"sys.exit(main(['export-triton', '--engines', {str(tiny_engines)!r}, '--out', {str(tmp_path / 'r')!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith(("error[", "hint:"))]
    assert lines[0].startswith("error[backend]: export-triton writes its configs through Triton's model_config")
    assert lines[1] == "hint: pip install 'gcf-trt[triton]' (tritonclient + protobuf)"
    assert not (tmp_path / "r").exists()


def test_triton_modules_do_not_import_torch():
    code = ("import sys, gcf_trt.triton, gcf_trt.commands.triton; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_example_client_sends_the_offline_clips(repo, video_file):
    """examples/triton_client.py: the spec it reads and the clips it sends (no server needed)."""
    import importlib.util
    from gcf_trt.preprocess import clips_from_frames
    path = Path(__file__).resolve().parents[1] / "examples" / "triton_client.py"
    mspec = importlib.util.spec_from_file_location("triton_client_example", path)
    example = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(example)
    out, _ = repo
    spec = example.load_spec(out / "gcf_stream" / "gcf_trt.json")
    cfg = parse_config(out / "gcf_stream" / "config.pbtxt")
    sent = list(example.camera_clips(str(video_file), spec))
    frames = read_frames(video_file)
    clips, ranges = clips_from_frames(frames, spec)
    assert [r for _, r in sent] == ranges
    for (clip, _), ref in zip(sent, clips):
        assert list(clip.shape[1:]) == list(cfg.input[0].dims)  # what the ensemble accepts
        np.testing.assert_allclose(clip[0], ref, atol=1e-6)


def test_bf16_openvino_backbone_keeps_its_precision_on_tritons_openvino_backend(tiny_engines, tmp_path):
    engines = tmp_path / "ov"
    shutil.copytree(tiny_engines, engines)
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["components"]["backbone"].update(runtime="openvino", precision="bf16")
    write_json_atomic(engines / "manifest.json", manifest)
    export_triton(engines, tmp_path / "ort", verify=False)
    export_triton(engines, tmp_path / "ov_repo", cpu_backend="openvino", verify=False)
    ort_cfg = validate_repository(tmp_path / "ort")["gcf_backbone"]
    ov_cfg = validate_repository(tmp_path / "ov_repo")["gcf_backbone"]
    assert ort_cfg.platform == "onnxruntime_onnx" and "HINT_BF16" not in ort_cfg.parameters
    assert ov_cfg.backend == "openvino" and ov_cfg.parameters["HINT_BF16"].string_value == "YES"


def test_export_of_a_real_tensorrt_build_manifest(monkeypatch, tiny_engines, tmp_path):
    """The manifest gcf_trt.compile.trt_build writes (built against the project's recording
    TensorRT stand-in, tests/trt_standin.py: the plan files are the stand-in's, not engines)."""
    from tests import trt_standin
    from gcf_trt.compile import trt_build
    from gcf_trt.compile.options import TensorRTOptions
    trt_standin.install(monkeypatch, "10.8.0.43", gpu="Orin", cc=(8, 7))
    engines = tmp_path / "engines"
    # from the CPU engines' ONNX files (--from), as on a Jetson
    trt_build.build_trt_engines(None, engines, from_dir=tiny_engines, precision="fp16",
                                tensorrt=TensorRTOptions(max_batch=4, verify=False))
    manifest = read_manifest(engines)
    result = export_triton(engines, tmp_path / "repo", max_batch=8)
    configs = validate_repository(tmp_path / "repo")
    for cname in ("backbone", "head"):
        cfg = configs[f"gcf_{cname}"]
        assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4  # trt_build's profile max
        shipped = tmp_path / "repo" / f"gcf_{cname}" / "1" / "model.plan"
        assert sha256_file(shipped) == manifest["files"][manifest["components"][cname]["file"]]
    assert result.ring_check is not None and result.ring_check <= RING_CHECK_ATOL
    info = json.loads((tmp_path / "repo" / "gcf_stream" / "gcf_trt.json").read_text())
    assert info["engines_versions"]["tensorrt"] == "10.8.0.43"
