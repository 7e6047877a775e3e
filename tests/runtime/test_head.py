"""The numpy head (gcf_trt/runtime/head.py) equals the PyTorch head and head.onnx.

Checked on full rings, filling rings (the streaming layout: empty slots first), a batch of rings
with different fills, and arbitrary masks; head.onnx stays what TensorRT runs, so the three
must agree.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gcf_trt.errors import EngineError, InputError
from gcf_trt.runtime.backends import open_backend
from gcf_trt.runtime.engines import load_engines
from gcf_trt.runtime.head import HEAD_WEIGHTS_FILE, NumpyHead

ATOL = 1e-5


@pytest.fixture(scope="module")
def heads(tiny_engines):
    from gcf_trt.manifest import read_manifest
    spec = read_manifest(tiny_engines).spec
    return spec, NumpyHead(tiny_engines / HEAD_WEIGHTS_FILE, spec), open_backend("onnxruntime", tiny_engines / "head.onnx")


def rings(spec, seed: int = 0):
    """(name, descriptors, mask) cases: full, every filling level, mixed batch, arbitrary mask."""
    rng = np.random.default_rng(seed)
    n, d = spec.ring_size, spec.dim
    cases = [("full", rng.standard_normal((1, n, d)).astype(np.float32), np.ones((1, n), np.float32))]
    for k in range(1, n):
        x = rng.standard_normal((1, n, d)).astype(np.float32)
        x[0, : n - k] = 0  # the ring's empty slots are zeros
        mask = np.zeros((1, n), np.float32)
        mask[0, n - k:] = 1
        cases.append((f"filling {k}/{n}", x, mask))
    x = rng.standard_normal((3, n, d)).astype(np.float32)
    mask = np.ones((3, n), np.float32)
    mask[0, :2], mask[1, :1] = 0, 0
    cases.append(("batch of 3 fills", x, mask))
    holes = np.ones((1, n), np.float32)
    holes[0, 1] = 0
    cases.append(("mask with a hole", rng.standard_normal((1, n, d)).astype(np.float32), holes))
    return cases


def test_numpy_head_equals_pytorch_and_onnx(heads, tiny_model):
    import torch
    spec, numpy_head, onnx_head = heads
    for name, x, mask in rings(spec):
        feeds = {"descriptors": x, "mask": mask}
        got = numpy_head.infer(feeds)
        ort = onnx_head.infer(feeds)
        with torch.no_grad():
            logits, gates = tiny_model.head(torch.from_numpy(x), torch.from_numpy(mask))
        for ref, what in ((ort, "head.onnx"), ({"logits": logits.numpy(), "gates": gates.numpy()}, "PyTorch")):
            np.testing.assert_allclose(got["logits"], ref["logits"], atol=ATOL, rtol=0, err_msg=f"{name} vs {what}")
            np.testing.assert_allclose(got["gates"], ref["gates"], atol=ATOL, rtol=0, err_msg=f"{name} vs {what}")
        assert got["logits"].dtype == np.float32 and got["gates"].shape == mask.shape


def test_parity_check_can_fail(heads):
    """Swapping two ring slots or dropping the long-range term changes the result well beyond ATOL."""
    spec, numpy_head, onnx_head = heads
    _, x, mask = rings(spec, seed=1)[0]
    ref = onnx_head.infer({"descriptors": x, "mask": mask})["logits"]
    swapped = numpy_head.infer({"descriptors": x[:, [1, 0, *range(2, spec.ring_size)]], "mask": mask})["logits"]
    assert np.abs(swapped - ref).max() > 100 * ATOL
    shifts = numpy_head._shifts
    try:
        numpy_head._shifts = (0, 1, -1, 99, -99)  # long-range neighbours out of reach
        broken = numpy_head.infer({"descriptors": x, "mask": mask})["logits"]
    finally:
        numpy_head._shifts = shifts
    assert np.abs(broken - ref).max() > 100 * ATOL


def test_load_engines_picks_the_numpy_head_on_cpu(tiny_engines, tmp_path):
    import shutil
    with load_engines(tiny_engines) as engines:
        assert engines.head.runtime == "numpy" and engines.backbone.runtime == "onnxruntime"
    with load_engines(tiny_engines, head="engine") as engines:
        assert engines.head.runtime == "onnxruntime"
    with pytest.raises(InputError, match="head must be one of"):
        load_engines(tiny_engines, head="gpu")
    old = tmp_path / "old"
    shutil.copytree(tiny_engines, old)
    (old / HEAD_WEIGHTS_FILE).write_bytes((old / HEAD_WEIGHTS_FILE).read_bytes()[:-10])
    with pytest.raises(EngineError, match="does not match the hash"):
        load_engines(old)  # a tampered weights file is refused like any engine file
    with load_engines(old, head="engine") as engines:  # the ONNX head does not need it
        assert engines.head.runtime == "onnxruntime"


def test_openvino_backbone_with_numpy_head_loads_neither_onnx_nor_onnxruntime(tiny_engines):
    """Cold start: the numpy head spares a process running OpenVINO the import of ONNX Runtime."""
    pytest.importorskip("openvino")
    code = (f"import sys; from gcf_trt.runtime.engines import load_engines; "
            f"e = load_engines({str(tiny_engines)!r}, runtime='openvino'); "
            f"print(e.head.runtime, 'onnxruntime' in sys.modules, 'onnx' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "False", "False", "False"]


def test_bad_head_inputs_are_refused(heads):
    spec, numpy_head, _ = heads
    with pytest.raises(InputError, match="do not match"):
        numpy_head.infer({"descriptors": np.zeros((1, spec.ring_size, spec.dim + 1), np.float32),
                          "mask": np.ones((1, spec.ring_size), np.float32)})
