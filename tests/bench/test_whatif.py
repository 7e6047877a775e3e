"""bench what-ifs that full runs measure (quick runs skip the section): the graphs they time
must compute what the product computes, or the timing would compare different work."""
from __future__ import annotations

import numpy as np

from gcf_trt.bench.sections.whatif import fused_step_graph, whatif_fused_step
from gcf_trt.runtime.backends import open_backend
from gcf_trt.runtime.engines import load_engines
from gcf_trt.spec import BACKBONE_INPUT, BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS


def test_fused_step_graph_equals_backbone_then_head(tiny_engines, tmp_path):
    with load_engines(tiny_engines) as engines:
        spec = engines.spec
        step = open_backend("onnxruntime", fused_step_graph(tiny_engines / "backbone.onnx", tiny_engines / "head.onnx",
                                                            tmp_path / "step.onnx", spec.ring_size, spec.dim))
        rng = np.random.default_rng(0)
        clip = rng.standard_normal((2, *spec.clip_shape)).astype(np.float32)
        ring = rng.standard_normal((2, spec.ring_size - 1, spec.dim)).astype(np.float32)
        mask = np.ones((2, spec.ring_size), np.float32)
        mask[1, :3] = 0  # a filling ring
        got = step.infer({BACKBONE_INPUT: clip, "ring_prev": ring, HEAD_INPUTS[1]: mask})
        desc = engines.backbone.infer({BACKBONE_INPUT: clip})[BACKBONE_OUTPUT]
        want = engines.head.infer({HEAD_INPUTS[0]: np.concatenate([ring, desc[:, None]], 1), HEAD_INPUTS[1]: mask})
        # a wrong ring order (newest first) must not pass the same check
        wrong = engines.head.infer({HEAD_INPUTS[0]: np.concatenate([desc[:, None], ring], 1), HEAD_INPUTS[1]: mask})
    np.testing.assert_allclose(got[BACKBONE_OUTPUT], desc, atol=1e-5)
    for name in HEAD_OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4)
    assert np.abs(wrong[HEAD_OUTPUTS[0]] - got[HEAD_OUTPUTS[0]]).max() > 1e-3


def test_whatif_fused_step_reports_both_costs(tiny_engines, tmp_path):
    out = whatif_fused_step(tiny_engines, tmp_path, say=lambda _msg: None, warmup=1, iters=5)
    assert set(out["head_cost_fraction_of_backbone"]) == {"separate", "fused"}
    assert all(v > 0 for v in out["p50_ms"].values())
    assert out["max_abs_logit_diff"] < 1e-4  # FP32 engines: the same maths either way
