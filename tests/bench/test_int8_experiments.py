"""benchmarks/int8_qat.py simulates the product's CPU INT8 graph; its figures in docs/INT8.md
mean something only if the simulation has that graph's quantization points and ranges and the
fine-tuned weights it writes back compute what it trained."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]


def _qat_module():
    return _script("int8_qat")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trained_like(tiny_model):
    """The tiny model with non-trivial BN statistics (a trained model's BN is never identity)."""
    model = copy.deepcopy(tiny_model)
    gen = torch.Generator().manual_seed(1)
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def test_folded_simulation_and_write_back_compute_the_fp32_backbone(trained_like):
    qat = _qat_module()
    clips = torch.randn(3, *trained_like.spec.clip_shape)
    student = qat.QEdge3D(trained_like.backbone, 127)
    with torch.no_grad():
        want = trained_like.backbone(clips)
        torch.testing.assert_close(student(clips, quant=False), want, atol=1e-5, rtol=1e-4)
        for p in student.blocks[0]["c1"].parameters():
            p.add_(0.01)  # "fine-tuned": the written model must follow the student, not the original
        out = copy.deepcopy(trained_like)
        student.write_back(out.backbone)
        torch.testing.assert_close(out.backbone(clips), student(clips, quant=False), atol=1e-5, rtol=1e-4)
        assert (out.backbone(clips) - want).abs().max() > 1e-4


def test_simulation_has_the_cpu_graphs_quantization_points_and_ranges(trained_like, tmp_path):
    from onnx import numpy_helper
    from gcf_trt.compile.export import export_backbone
    from gcf_trt.compile.precision import quantize_int8
    qat = _qat_module()
    clips = torch.rand(16, *trained_like.spec.clip_shape) * 4 - 2
    export_backbone(trained_like, tmp_path / "bb.onnx")
    quantize_int8(tmp_path / "bb.onnx", tmp_path / "int8.onnx", clips.numpy(), reduce_range=False)
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    real = sorted(float(inits[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear")
    student = qat.QEdge3D(trained_like.backbone, 127)
    student(clips[:1], quant=False)
    qat.calibrate(student, clips)
    sim = sorted((max(p.hi, 0.0) - min(p.lo, 0.0)) / 255.0 for p in student.points)
    assert len(sim) == len(real)
    np.testing.assert_allclose(sim, real, rtol=1e-4)


def test_flips_count_the_action_each_ring_holds():
    """int8_flips' split by action: ring k holds clips max(0, k-N+1)..k, as the gate's rings."""
    overlap = np.array([0, 0, 0.25, 1, 1, 0.5, 0, 0, 0, 0], np.float32)
    got = _script("int8_flips").ring_action_clips(overlap, 3)
    np.testing.assert_allclose(got, [0, 0, 0.25, 1.25, 2.25, 2.5, 1.5, 0.5, 0, 0], atol=1e-6)


def test_the_distillation_loss_keeps_finite_gradients_on_a_confident_model():
    """A width-32 model's softmax underflows to 0 on some classes: the loss must still give a
    finite gradient (the probability-target form gave a finite loss and NaN gradients)."""
    qat = _qat_module()
    teacher = torch.tensor([[300.0, 0.0, -50.0], [0.0, 2.0, 1.0]])
    lq = torch.tensor([[250.0, 10.0, 0.0], [0.5, 1.5, 1.0]], requires_grad=True)
    lf = torch.tensor([[280.0, -20.0, 0.0], [0.2, 1.8, 1.1]], requires_grad=True)
    loss = qat.distillation_loss(lq, lf, teacher)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(lq.grad).all() and torch.isfinite(lf.grad).all()
    assert lf.grad.abs().sum() > 0  # the FP32 path is trained too, not cut off
    same = torch.tensor([[1.0, 2.0, 3.0]])
    assert float(qat.distillation_loss(same, same, same)) < 1e-6
