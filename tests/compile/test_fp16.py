"""FP16 ONNX conversion (the TensorRT 11 FP16 path), verified on ONNX Runtime's CPU provider.

ORT runs float16 graphs on the CPU (inserting casts where it lacks an fp16 kernel), so the
converted graph's numerics can be checked here without a GPU.  What TensorRT 11 does with the
same file is covered by tests/runtime/backends/test_trt_gpu.py (skipped without a GPU).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto  # noqa: E402

from gcf_trt.compile.export import TENSORRT_SUPPORTED_OPS, export_backbone, export_head, graph_op_types  # noqa: E402
from gcf_trt.compile.fp16 import DEFAULT_FP32_OPS, METADATA_KEY, convert_to_fp16  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("fp16")
    bb, hd = export_backbone(tiny_model, d / "backbone.onnx"), export_head(tiny_model, d / "head.onnx")
    out = {}
    for src in (bb, hd):
        dst = d / src.name.replace(".onnx", ".fp16.onnx")
        out[src.stem] = (src, dst, convert_to_fp16(src, dst, use_modelopt=False))
    return out


def _run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds), sess


def _float_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


def test_backbone_fp16_matches_fp32_on_ort(graphs, tiny_model):
    src, dst, summary = graphs["backbone"]
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((3, *tiny_model.spec.clip_shape)).astype(np.float32)
    (ref,), _ = _run(src, {"clip": clip})
    (got,), sess = _run(dst, {"clip": clip})
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-2
    # relative to the descriptor's scale too (the tiny model's descriptors are small)
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max() + 1e-4
    assert summary["fp16_nodes"] > summary["fp32_nodes"]


def test_head_fp16_matches_fp32_on_ort(graphs, tiny_model):
    src, dst, _ = graphs["head"]
    spec = tiny_model.spec
    rng = np.random.default_rng(1)
    desc = rng.standard_normal((5, spec.ring_size, spec.dim)).astype(np.float32)
    mask = np.ones((5, spec.ring_size), np.float32)
    mask[0, :2] = 0
    mask[1, :-1] = 0  # one valid clip
    ref, _ = _run(src, {"descriptors": desc, "mask": mask})
    got, _ = _run(dst, {"descriptors": desc, "mask": mask})
    for r, g in zip(ref, got):
        assert g.dtype == np.float32
        assert np.abs(g - r).max() <= 1e-2, np.abs(g - r).max()
    assert (np.argmax(ref[0], 1) == np.argmax(got[0], 1)).all()


def test_graph_really_computes_in_fp16_with_fp32_io(graphs):
    for name, (src, dst, _) in graphs.items():
        proto = onnx.load(str(dst))
        onnx.checker.check_model(proto, full_check=True)
        assert {i.type.tensor_type.elem_type for i in proto.graph.input} == {TensorProto.FLOAT}
        assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {TensorProto.FLOAT}
        assert [i.name for i in proto.graph.input] == [i.name for i in onnx.load(str(src)).graph.input]
        assert [o.name for o in proto.graph.output] == [o.name for o in onnx.load(str(src)).graph.output]
        types = _float_types(proto)
        # every weight of a Conv/Gemm/MatMul is float16, and those ops output float16
        heavy = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        assert heavy, name
        for node in heavy:
            assert all(types[i] == TensorProto.FLOAT16 for i in node.input if i), (name, node.name)
            assert types[node.output[0]] == TensorProto.FLOAT16
        # numerically sensitive ops stay float32
        for node in proto.graph.node:
            if node.op_type in DEFAULT_FP32_OPS:
                floats = [types[i] for i in node.input
                          if i and types.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
                assert floats and set(floats) == {TensorProto.FLOAT}, node.name
        assert {p.key: p.value for p in proto.metadata_props}[METADATA_KEY] == "fp16"


def test_fp16_graph_uses_only_tensorrt_supported_ops(graphs):
    for _, dst, _ in graphs.values():
        assert graph_op_types(dst) <= TENSORRT_SUPPORTED_OPS


def test_large_weights_are_clamped_not_inf(tmp_path):
    from onnx import helper, numpy_helper
    w = numpy_helper.from_array(np.array([[1e6, -1e6], [1.0, 2.0]], np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    convert_to_fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx", use_modelopt=False)
    (y,), _ = _run(tmp_path / "m16.onnx", {"x": np.array([[0.0, 1.0]], np.float32)})
    assert np.isfinite(y).all() and np.allclose(y, [[1.0, 2.0]])


def test_modelopt_autocast_gets_the_kept_ops_and_the_record_says_what_it_kept(graphs, monkeypatch, tmp_path):
    """With ModelOpt installed, AutoCast receives our FP32 op list (op_types_to_exclude) and the
    summary reports what the converted graph really computes in FP32, not the request."""
    import sys
    import types
    from gcf_trt.compile.fp16 import convert_model_to_fp16, fp32_compute
    calls = {}

    def convert_to_mixed_precision(**kwargs):
        calls.update(kwargs)
        # stand-in for AutoCast: keeps our ops, plus every Add (as its data_max rule might)
        model, _ = convert_model_to_fp16(onnx.load(kwargs["onnx_path"]),
                                         set(kwargs["op_types_to_exclude"]) | {"Add"})
        return model
    autocast = types.ModuleType("modelopt.onnx.autocast")
    autocast.convert_to_mixed_precision = convert_to_mixed_precision
    monkeypatch.setitem(sys.modules, "modelopt", types.ModuleType("modelopt"))
    monkeypatch.setitem(sys.modules, "modelopt.onnx", types.ModuleType("modelopt.onnx"))
    monkeypatch.setitem(sys.modules, "modelopt.onnx.autocast", autocast)
    src = graphs["backbone"][0]
    info = convert_to_fp16(src, tmp_path / "b16.onnx")
    assert calls["op_types_to_exclude"] == sorted(DEFAULT_FP32_OPS) and calls["keep_io_types"] is True
    assert info["converter"] == "modelopt.autocast" and info["requested_fp32_ops"] == sorted(DEFAULT_FP32_OPS)
    assert "Add" in info["kept_fp32_ops"]  # measured on the result
    assert info == {**info, **fp32_compute(onnx.load(str(tmp_path / "b16.onnx")))}


def test_recorded_fp32_ops_are_measured_on_our_converter_too(graphs):
    info = graphs["backbone"][2]
    assert info["converter"] == "gcf_trt.compile.fp16"
    assert set(info["kept_fp32_ops"]) <= set(DEFAULT_FP32_OPS) and info["fp32_nodes"] >= 1
    assert "Conv" not in info["kept_fp32_ops"]
