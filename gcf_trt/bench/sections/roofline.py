"""How close to the machine's limit: FLOPs per clip, measured peaks of this CPU, achieved FLOP/s."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..timing import Deadline, error_text


def backbone_cost(model, spec) -> dict[str, Any]:
    """FLOPs per clip (FlopCounterMode) and the minimum bytes each conv must move.

    Bytes: every Conv3d reads its input and weight and writes its output once (BN and ReLU
    fused into it, as every engine here does), counted at 4 bytes/element (FP32), 2 (BF16) and
    1 (INT8).  Arithmetic intensity = FLOPs / bytes.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.randn(1, *spec.clip_shape)
    elements = {"activations": 0, "weights": 0}

    def hook(module, inputs, output):
        elements["activations"] += inputs[0].numel() + output.numel()
        elements["weights"] += module.weight.numel()
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    flops = int(counter.get_total_flops())
    total = elements["activations"] + elements["weights"]
    return {"flops_per_clip": flops, "gflops_per_clip": flops / 1e9, "conv_elements_moved": total,
            "counter": "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per MAC)",
            "arithmetic_intensity": {"fp32": flops / (4 * total), "bf16": flops / (2 * total),
                                     "int8": flops / (1 * total)}}


def _best_rate(fn: Callable[[], Any], flops: float, repeats: int, deadline: Deadline) -> dict[str, float]:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if deadline.expired:
            break
    return {"best_gflops": flops / min(times) / 1e9, "median_gflops": flops / float(np.median(times)) / 1e9,
            "repeats": len(times)}


def _ort_matmul_integer(n: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from ...runtime.backends.onnxrt import session_options
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "mmi",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), session_options(spinning=True),
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 127, (n, n), dtype=np.int8)
    return lambda: sess.run(None, {"A": a, "B": b})


def _peak_sources(bf16_native: bool):
    """(kind, name, make) where ``make(n)`` returns a function doing one n x n matmul."""
    import torch

    def torch_mm(dtype):
        def make(n):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            return lambda: torch.mm(a, b)
        return make

    def numpy_mm(n):
        a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
        return lambda: a @ b

    def torch_int_mm(n):
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        return lambda: torch._int_mm(a, b)
    return [("fp32", "torch.mm", torch_mm(torch.float32)),
            ("fp32", "numpy.matmul", numpy_mm),
            ("bf16", "torch.mm(bfloat16)", torch_mm(torch.bfloat16) if bf16_native else None),
            # MatMulInteger first: it runs MLAS, the kernels of the INT8 engines.  torch._int_mm
            # without VNNI is a reference loop (about 1 GOP/s on an AVX2 EPYC, so one 2048^3 call
            # takes over 10 s); measured first, it once spent the budget before MatMulInteger.
            ("int8", "onnxruntime MatMulInteger", _ort_matmul_integer),
            ("int8", "torch._int_mm", torch_int_mm)]


def machine_peaks(n: int = 2048, repeats: int = 8, *, bf16: tuple[bool, str] = (True, ""),
                  deadline: Deadline | None = None, say=lambda m: None) -> dict[str, Any]:
    """Measured (not nominal) peaks of this CPU: matmul FP32/BF16/INT8 and memory copy bandwidth.

    Each source is first timed once at n/8; a source whose full-size runs would not fit in the
    time left (a reference loop, not a kernel) is reported at that size instead, and says so.

    Args:
        bf16: ``(native, evidence)`` from :func:`gcf_trt.bench.machine.native_bf16`; without native
            BF16 the BF16 peak is not measured (torch would emulate it: minutes, and no ceiling).
    """
    import torch
    deadline = deadline or Deadline(None)
    out: dict[str, Any] = {"matmul_size": n, "threads": torch.get_num_threads(), "fp32": {}, "bf16": {}, "int8": {}}
    probe_n = max(n // 8, 16)
    for kind, name, make in _peak_sources(bf16[0]):
        if make is None:
            out[kind][name] = {"unavailable": bf16[1]}
        elif deadline.expired:
            out[kind][name] = {"unavailable": "skipped: the section's time budget was spent"}
        else:
            say(f"machine peaks: {kind} {name}")
            try:
                probe = _best_rate(make(probe_n), 2.0 * probe_n ** 3, 1, deadline)
                full_call_s = 2.0 * n ** 3 / (probe["best_gflops"] * 1e9)
                if full_call_s * (repeats + 1) > deadline.remaining():
                    out[kind][name] = {**probe, "size": probe_n,
                                       "note": f"measured at {probe_n}^2: a {n}^2 call would take ~{full_call_s:.0f} s"}
                else:
                    out[kind][name] = _best_rate(make(n), 2.0 * n ** 3, repeats, deadline)
            except Exception as exc:  # noqa: BLE001 - e.g. a torch without _int_mm on this CPU
                out[kind][name] = {"unavailable": error_text(exc)}
    for kind in ("fp32", "bf16", "int8"):
        rates = [v["best_gflops"] for v in out[kind].values() if "best_gflops" in v]
        out[f"{kind}_peak_gflops"] = max(rates) if rates else None
    out["memory_bandwidth_gbs"] = None
    if deadline.expired:
        out["memory_bandwidth_method"] = "skipped: the section's time budget was spent"
        return out
    say("machine peaks: memory bandwidth")
    src = np.ones(64 * 2**20, np.float32)  # 256 MB
    dst = np.empty_like(src)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    out["memory_bandwidth_gbs"] = 2 * src.nbytes / min(times) / 1e9
    out["memory_bandwidth_method"] = "numpy copy of 256 MB (read + write), one thread, best of 5"
    return out


def roofline(cost: dict[str, Any], peaks: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """Achieved FLOP/s of each backend (counted FP32-model FLOPs / p50) against the ceilings."""
    points = {}
    for name, entry in latency.items():
        if not entry.get("p50_ms"):
            continue
        kind = entry["precision"] if entry["precision"] in ("int8", "bf16") else "fp32"
        achieved = cost["flops_per_clip"] / (entry["p50_ms"] / 1e3) / 1e9
        peak = peaks.get(f"{kind}_peak_gflops")
        point = {"gflops": achieved, "compute_class": kind,
                 "arithmetic_intensity": cost["arithmetic_intensity"][kind],
                 "fraction_of_peak": achieved / peak if peak else None}
        if peak and achieved > peak:  # a rate the engine beats is no ceiling: say so, not "3892 %"
            point["fraction_of_peak"] = None
            point["ceiling_note"] = (f"the measured {kind} peak ({peak:.1f} GFLOP/s) is below this engine's "
                                     f"rate: no ceiling was measured")
        points[name] = point
    return {"points": points, "ceilings_gflops": {k: peaks.get(f"{k}_peak_gflops") for k in ("fp32", "bf16", "int8")},
            "memory_bandwidth_gbs": peaks.get("memory_bandwidth_gbs")}


def section(ctx) -> dict[str, Any]:
    from ..machine import native_bf16
    cost = backbone_cost(ctx.model.backbone.eval(), ctx.spec)
    peaks = machine_peaks(ctx.config.peak_size, repeats=3 if ctx.config.quick else 5, bf16=native_bf16(),
                          deadline=ctx.deadline, say=ctx.say)
    latency = ctx.results.get("backbone")
    return {"cost": cost, "peaks": peaks, **(roofline(cost, peaks, latency) if latency else {})}
