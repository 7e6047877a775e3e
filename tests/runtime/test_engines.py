"""runtime/engines.py: loading an engines directory, ownership, the contract checks."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gcf_trt.errors import EngineError, InputError
from gcf_trt.manifest import Manifest
from gcf_trt.runtime.engines import Engines, borrow_or_load, check_contract, load_engines


def test_load_engines_returns_typed_manifest_and_timings(tiny_engines):
    with load_engines(tiny_engines, head="engine") as engines:
        assert isinstance(engines.manifest, Manifest) and engines.spec == engines.manifest.spec
        assert engines.model_hash == engines.manifest["model_hash"]
        assert set(engines.load_s) == {"backbone", "head", "total"}
        assert engines.load_s["total"] >= engines.load_s["backbone"] > 0
        clip = np.zeros((2, *engines.spec.clip_shape), np.float32)
        assert engines.backbone.infer({"clip": clip})["descriptor"].shape == (2, engines.spec.dim)


def test_borrowed_engines_stay_open_and_owned_ones_are_closed(tiny_engines):
    loaded = load_engines(tiny_engines)
    try:
        same, owned = borrow_or_load(loaded)
        assert same is loaded and owned is False
        with pytest.raises(InputError, match="runtime/options/head apply") as err:
            borrow_or_load(loaded, options={"threads": 1})
        assert "load_engines" in err.value.hint
        with pytest.raises(EngineError, match="not 0123") as err:
            borrow_or_load(loaded, expect_model_hash="0123")
        assert "rebuild" in err.value.hint
    finally:
        loaded.close()
    fresh, owned = borrow_or_load(tiny_engines, options={"threads": 1})
    assert owned is True and isinstance(fresh, Engines)
    fresh.close()


def test_forcing_a_runtime_on_a_non_onnx_file_is_refused(tiny_engines, tmp_path):
    eng = tmp_path / "eng"
    shutil.copytree(tiny_engines, eng)
    manifest = json.loads((eng / "manifest.json").read_text())
    (eng / "backbone.plan").write_bytes(b"plan")
    manifest["components"]["backbone"].update(file="backbone.plan", runtime="tensorrt")
    from gcf_trt.manifest import sha256_file
    manifest["files"]["backbone.plan"] = sha256_file(eng / "backbone.plan")
    (eng / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="cannot run on onnxruntime"):
        load_engines(eng, runtime="onnxruntime")


def test_contract_check_names_the_missing_inputs(tiny_engines):
    with load_engines(tiny_engines, head="engine") as engines:
        engines.head.input_shapes = {"x": (-1, 4, 32)}
        with pytest.raises(EngineError, match="lack \\['descriptors', 'mask'\\]") as err:
            check_contract(engines)
        assert "rebuild" in err.value.hint
