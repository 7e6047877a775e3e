"""ONNX export: validity, parity with PyTorch, opset, and TensorRT-supported operators only."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402

from gcf_trt.compile.export import (OPSET, TENSORRT_SUPPORTED_OPS, check_parity,  # noqa: E402
                                    export_backbone, export_head, graph_op_types)


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return export_backbone(tiny_model, d / "backbone.onnx"), export_head(tiny_model, d / "head.onnx")


def test_parity_with_pytorch(tiny_model, exported):
    diffs = check_parity(tiny_model, *exported)
    assert max(diffs.values()) <= 1e-4, diffs


def test_graphs_are_valid_opset17_with_named_io(exported):
    bb, hd = (onnx.load(str(p)) for p in exported)
    for proto in (bb, hd):
        onnx.checker.check_model(proto, full_check=True)
        assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    assert [i.name for i in bb.graph.input] == ["clip"]
    assert [o.name for o in bb.graph.output] == ["descriptor"]
    assert [i.name for i in hd.graph.input] == ["descriptors", "mask"]
    assert [o.name for o in hd.graph.output] == ["logits", "gates"]
    batch_dim = bb.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch


def test_only_tensorrt_supported_operators(exported):
    for path in exported:
        unsupported = graph_op_types(path) - TENSORRT_SUPPORTED_OPS
        assert not unsupported, f"{path.name} uses ops TensorRT's parser lacks: {unsupported}"
