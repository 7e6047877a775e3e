"""spec.py: ModelSpec validation and JSON, the tensor contract and io_shapes."""
from __future__ import annotations

import json

import pytest

from gcf_trt.errors import InputError
from gcf_trt.spec import (BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS, NO_ACTION_LABEL, ModelSpec,
                          io_shapes)


def test_json_round_trip_and_derived_shapes():
    spec = ModelSpec(clip_len=8, stride=4, frame_step=2, size=64, resize_short=72, ring_size=6, dim=32,
                     labels=["a", "b", "c"])
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and isinstance(again.mean, tuple)
    assert spec.clip_shape == (3, 8, 64, 64) and spec.num_classes == 3 and spec.frames_per_clip == 15
    assert json.loads(spec.to_json())["mean"] == list(spec.mean)


@pytest.mark.parametrize("kwargs,match", [
    ({"clip_len": 0}, "clip_len must be a positive integer"),
    ({"ring_size": 2.5}, "ring_size must be a positive integer"),
    ({"size": 112, "resize_short": 100}, "smaller than the crop size"),
    ({"labels": ["only"]}, "at least 2 labels"),
    ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
    ({"select_ratio": 1.5}, "select_ratio must be in"),
])
def test_invalid_specs_are_refused_with_a_hint(kwargs, match):
    with pytest.raises(InputError, match=match) as err:
        ModelSpec(**kwargs)
    assert err.value.hint


def test_unknown_fields_and_bad_json():
    with pytest.raises(InputError, match="unknown ModelSpec field"):
        ModelSpec.from_dict({"colour": "red"})
    with pytest.raises(InputError, match="not valid JSON"):
        ModelSpec.from_json("{")
    with pytest.raises(InputError, match="JSON object"):
        ModelSpec.from_dict([1, 2])


def test_io_shapes_is_the_tensor_contract():
    spec = ModelSpec(clip_len=4, size=32, resize_short=36, ring_size=5, dim=16, labels=["x", "y"])
    shapes = io_shapes(spec)
    assert shapes["backbone"] == {"inputs": {BACKBONE_INPUT: [-1, 3, 4, 32, 32]}, "outputs": {BACKBONE_OUTPUT: [-1, 16]}}
    assert shapes["head"]["inputs"] == {HEAD_INPUTS[0]: [-1, 5, 16], HEAD_INPUTS[1]: [-1, 5]}
    assert shapes["head"]["outputs"] == {HEAD_OUTPUTS[0]: [-1, 2], HEAD_OUTPUTS[1]: [-1, 5]}
    assert io_shapes(spec, batch=3)["backbone"]["inputs"][BACKBONE_INPUT][0] == 3
    assert (BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS) == (
        "clip", "descriptor", ("descriptors", "mask"), ("logits", "gates"))  # names in every built file


def test_exported_graphs_use_the_contract_names(tiny_engines):
    from gcf_trt.runtime.backends import open_backend
    for name, shapes in io_shapes(ModelSpec(**json.loads((tiny_engines / "manifest.json").read_text())["spec"])).items():
        b = open_backend("onnxruntime", tiny_engines / f"{name}.onnx")
        assert set(b.input_shapes) == set(shapes["inputs"]) and set(b.output_shapes) == set(shapes["outputs"])


def test_the_no_action_label_is_one_of_the_labels_and_survives_the_round_trip():
    spec = ModelSpec(labels=["wave", "clap", NO_ACTION_LABEL], no_action_label=NO_ACTION_LABEL)
    assert spec.no_action_index == 2 and spec.action_labels == ["wave", "clap"]
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert ModelSpec(labels=["wave", "clap"]).no_action_index is None   # older specs: no such class
    with pytest.raises(InputError, match="is not one of the labels"):
        ModelSpec(labels=["wave", "clap"], no_action_label=NO_ACTION_LABEL)
    with pytest.raises(InputError, match="2 action labels"):
        ModelSpec(labels=["wave", NO_ACTION_LABEL], no_action_label=NO_ACTION_LABEL)
