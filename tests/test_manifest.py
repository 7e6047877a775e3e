"""manifest.py: the typed Manifest, its published JSON schema, and manifests written before it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcf_trt.errors import EngineError
from gcf_trt.manifest import MANIFEST_NAME, Manifest, new_manifest, read_manifest, write_manifest
from gcf_trt.spec import ModelSpec, io_shapes

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs" / "manifest.schema.json"
BEFORE = Path(__file__).parent / "data" / "manifest_v1_before_typed.json"  # written by the dict-era build


def test_a_manifest_written_before_the_typed_manifest_still_loads(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(BEFORE.read_text())
    m = read_manifest(tmp_path)
    assert isinstance(m.spec, ModelSpec) and m.spec.ring_size == 4
    assert m.component("head")["file"] == "head.onnx" and m.max_batch() is None
    assert m == json.loads(BEFORE.read_text())  # the JSON as written, nothing injected
    assert "spec_obj" not in m


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(version=0), "manifest version 0"),
    (lambda d: d.update(version=2), "manifest version 2"),
    (lambda d: d.update(format="other"), "not a gcf-trt manifest"),
    (lambda d: d["components"].pop("head"), "component 'head' is missing"),
    (lambda d: d["spec"].update(ring_size=0), "model spec is invalid"),
    (lambda d: d["spec"].update(colour="red"), "model spec is invalid"),
])
def test_other_or_broken_manifests_are_refused_with_rebuild(tmp_path, change, match):
    data = json.loads(BEFORE.read_text())
    change(data)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EngineError, match=match) as err:
        read_manifest(tmp_path)
    assert "rebuild" in err.value.hint


def test_schema_accepts_real_manifests_and_rejects_broken_ones(tiny_engines):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for data in (json.loads(BEFORE.read_text()), read_manifest(tiny_engines).to_dict()):
        errors = sorted(e.message for e in validator.iter_errors(data))
        assert not errors, errors
    bad = read_manifest(tiny_engines).to_dict()
    bad["components"]["head"]["file"] = "../elsewhere.onnx"
    bad["files"]["x"] = "not-a-hash"
    assert len(list(validator.iter_errors(bad))) == 2


def test_schema_lists_every_model_spec_field():
    """A new ModelSpec field must be published in docs/manifest.schema.json too."""
    import dataclasses
    schema = json.loads(SCHEMA.read_text())
    assert set(schema["$defs"]["spec"]["properties"]) == {f.name for f in dataclasses.fields(ModelSpec)}


def test_new_manifest_round_trip_and_inputs_untouched(tmp_path):
    spec = ModelSpec(clip_len=2, stride=2, size=8, resize_short=8, dim=4, ring_size=3)
    (tmp_path / "backbone.onnx").write_bytes(b"b")
    (tmp_path / "head.onnx").write_bytes(b"h")
    components = {"backbone": {"file": "backbone.onnx", "runtime": "onnxruntime", "precision": "fp32"},
                  "head": {"file": "head.onnx", "runtime": "onnxruntime", "precision": "fp32"}}
    frozen = json.dumps(components, sort_keys=True)
    m = new_manifest(model_hash="abc", spec=spec, target="cpu", components=components, engines_dir=tmp_path,
                     versions={"gcf_trt": "test"}, opset=17, parity={"logits": 0.0})
    assert json.dumps(components, sort_keys=True) == frozen  # the caller's dicts are not mutated
    assert m.component("head")["inputs"] == io_shapes(spec)["head"]["inputs"]
    assert sorted(m.files) == ["backbone.onnx", "head.onnx"]
    write_manifest(tmp_path, m)
    again = read_manifest(tmp_path)
    assert again == m and again.spec == spec and again["parity"] == {"logits": 0.0}
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temp file
    with pytest.raises(TypeError):
        new_manifest(model_hash="abc", spec=spec, target="cpu", components=components, engines_dir=tmp_path,
                     versions={}, opset=17, parity={"x": object()})  # not JSON: fails at build time


def test_max_batch_from_a_tensorrt_profile():
    data = json.loads(BEFORE.read_text())
    data["tensorrt"] = {"builds": {"backbone": {"profile": {"clip": {"max": [6, 3, 4, 32, 32]}}}},
                        "options": {"max_batch": 9}}
    m = Manifest.from_dict(data)
    assert m.max_batch("backbone") == 6 and m.max_batch("head") == 9
    data["components"]["backbone"]["options"]["max_batch"] = 2
    assert Manifest.from_dict(data).max_batch() == 2
