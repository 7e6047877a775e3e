"""``gcf-trt build --target cpu``: the fastest CPU runtime x precision that passes the gate.

The FP32 graphs are exported and checked against PyTorch (:mod:`.artifacts`), an INT8 Q/DQ
backbone is calibrated when videos are given, then every allowed runtime x precision (ONNX
Runtime fp32/int8, OpenVINO fp32/bf16/int8) is *measured* here: a short interleaved timed trial,
and agreement with the FP32 reference for each reduced precision.  The fastest candidate that
passes the gate is written to the manifest with all the figures (``selection``).  When INT8 is
calibrated, the TensorRT variant of the Q/DQ backbone is written too and named in the manifest's
``sources``, so ``gcf-trt build --target trt --from DIR`` can build plans on a machine without
torch (a Jetson) from this directory.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import AgreementError, BackendUnavailable, CalibrationError, EngineError, InputError
from ..fsutil import atomic_output_dir
from ..manifest import MANIFEST_NAME, write_manifest
from ..progress import progress_bar
from . import artifacts
from .artifacts import (FP32_FILE, HEAD_FILE, INT8_FILE, INT8_TRT_FILE, BuildResult, CalibrationSet,
                        calibration_set, check_output, make_manifest, quantize_backbone)
from .options import CalibrationOptions, CpuOptions, GateOptions

CPU_RUNTIMES = ("onnxruntime", "openvino")
CPU_PRECISIONS = ("auto", "fp32", "int8", "bf16")
FP32_MIN_COSINE = 0.999  # an fp32 engine on another runtime vs the ORT fp32 reference


@dataclass
class _Candidate:
    runtime: str
    precision: str  # requested: fp32 | int8 | bf16
    file: str
    options: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    backend: Any = None
    times: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"


def _backend_options(runtime: str, precision: str, threads: int | None) -> dict[str, Any]:
    """Constructor options of the backend, as stored in the manifest (load_engines passes them)."""
    if runtime == "openvino":
        return {"hint": "latency", "threads": threads,
                "inference_precision": "bf16" if precision == "bf16" else "f32"}
    return {"threads": threads}


def _cpu_candidates(precision: str, runtime: str | None, have_int8: bool, have_holdout: bool,
                    threads: int | None, notes: list[str]) -> list[_Candidate]:
    from ..runtime.backends import available_runtimes
    status = available_runtimes()
    runtimes = [runtime] if runtime else list(CPU_RUNTIMES)
    if runtime and status.get(runtime) is not None:
        raise BackendUnavailable(f"runtime {runtime!r} is not available: {status[runtime]}",
                                 hint="pip install 'gcf-trt[openvino]'" if runtime == "openvino" else None)
    for r in list(runtimes):
        if status.get(r) is not None:
            notes.append(f"{r} not tried: {status[r]}")
            runtimes.remove(r)
    bf16, no_bf16 = False, "this CPU has no BF16 support"
    if "openvino" in runtimes:
        from ..cpuinfo import onednn_limit_hides_bf16
        from ..runtime.backends.openvino import supports_bf16
        bf16 = supports_bf16()
        hidden = onednn_limit_hides_bf16()
        if bf16 and hidden:
            bf16, no_bf16 = False, f"ONEDNN_MAX_CPU_ISA={hidden} limits OpenVINO's kernels to an ISA without BF16"
    wanted = ["fp32", "int8", "bf16"] if precision == "auto" else [precision]
    cands = []
    for r in runtimes:
        for p in wanted:
            if p == "bf16" and r != "openvino":
                continue
            if p == "bf16" and not bf16:
                notes.append(f"openvino bf16 not tried: {no_bf16}")
                continue
            if p != "fp32" and not have_holdout:
                continue
            if p == "int8" and not have_int8:
                continue
            cands.append(_Candidate(r, p, INT8_FILE if p == "int8" else FP32_FILE,
                                    _backend_options(r, p, threads)))
    if precision == "auto" and not have_holdout:
        notes.append("no --calib videos: only fp32 tried (int8/bf16 need held-out clips for the agreement gate)")
    if not cands:
        if precision == "bf16":
            raise InputError("bf16 runs on OpenVINO with a BF16-capable CPU: "
                             + ("this CPU has no BF16" if "openvino" in runtimes else "use --runtime openvino"),
                             hint="use --precision fp32 or int8")
        raise BackendUnavailable("no CPU runtime is available for this build",
                                 hint="pip install onnxruntime (or 'gcf-trt[openvino]')")
    return cands


def _trial(cands: list[_Candidate], clip: np.ndarray, iterations: int, warmup: int, bars: bool) -> None:
    """Interleaved timing (round robin, so a burst of load on a shared CPU hits every candidate)."""
    live = [c for c in cands if c.backend is not None]
    for c in live:
        for _ in range(warmup):
            c.backend.infer({"clip": clip})
    with progress_bar(range(iterations), desc="timing trial", unit="round", enabled=bars) as rounds:
        for _ in rounds:
            for c in live:
                t0 = time.perf_counter()
                c.backend.infer({"clip": clip})
                c.times.append((time.perf_counter() - t0) * 1e3)


def build_cpu_engines(checkpoint: str | os.PathLike, out: str | os.PathLike, *, precision: str = "auto",
                      runtime: str | None = None, calib: str | os.PathLike | None = None,
                      calibration: CalibrationOptions = CalibrationOptions(), gate: GateOptions = GateOptions(),
                      cpu: CpuOptions = CpuOptions(), progress: Callable[[str], None] | None = None,
                      target_note: dict[str, Any] | None = None) -> BuildResult:
    """Build CPU engines (see the module docstring); called through :func:`.build.build_engines`.

    Args:
        precision: ``"auto"`` (the fastest that passes the gate), ``"fp32"``, ``"int8"`` or
            ``"bf16"`` (OpenVINO on a BF16-capable CPU).
        runtime: force ``"onnxruntime"`` or ``"openvino"`` (default: chosen by measurement).
        calib: directory of calibration videos; needed for int8/bf16 (held-out clips from it
            are also the agreement data).
        target_note: recorded as ``selection.target`` (``--target auto`` fell back to the CPU).
    """
    if precision not in CPU_PRECISIONS:
        raise InputError(f"--precision {precision} is not available on the CPU target; "
                         f"use one of {', '.join(CPU_PRECISIONS)}",
                         hint="fp16 is a TensorRT precision: use --target trt, or bf16/int8 on CPU")
    if runtime is not None and runtime not in CPU_RUNTIMES:
        raise InputError(f"unknown --runtime {runtime!r}; use one of {', '.join(CPU_RUNTIMES)}")
    calibration, gate, cpu = calibration.validate(), gate.validate(), cpu.validate()
    if precision in ("int8", "bf16") and calib is None:
        raise CalibrationError(f"--precision {precision} needs --calib DIR: videos to calibrate on and "
                               f"held-out clips for the agreement check with FP32")
    out = Path(out)
    say = progress or (lambda msg: None)
    bars = progress is not None
    check_output(out)
    notes: list[str] = []
    # Candidates before any work, so an impossible request (bf16 on ONNX Runtime) fails fast.
    cands = _cpu_candidates(precision, runtime, calib is not None and precision in ("auto", "int8"),
                            calib is not None, cpu.threads, notes)
    from .export import OPSET
    from .model import load_checkpoint, model_hash
    model = load_checkpoint(checkpoint)

    # Calibration data next: bad videos fail before anything is exported.
    cset: CalibrationSet | None = None
    if calib is not None:
        cset = calibration_set(calib, model.spec, calibration, say, bars)
    want_int8 = any(c.precision == "int8" for c in cands)
    with atomic_output_dir(out) as tmp:
        say("exporting ONNX (FP32) and checking it against PyTorch")
        parity = artifacts.export_fp32(model, tmp)
        quant: dict[str, Any] = {"cpu": None, "tensorrt": None}
        if want_int8:
            assert cset is not None
            quant = quantize_backbone(tmp, cset, calibration, say, bars=bars)
        chosen, selection, agreement_rec = _select(cands, tmp, model, cset.holdout if cset else None, gate,
                                                   precision, runtime, cpu, say, bars, calibration.seed)
        selection["notes"] = notes
        if target_note:
            selection["target"] = target_note
        if (tmp / INT8_FILE).exists() and chosen.file != INT8_FILE:
            (tmp / INT8_FILE).unlink()
        head_opts = _backend_options(chosen.runtime, "fp32", cpu.threads)
        head_reported = _open_reported(chosen.runtime, tmp / HEAD_FILE, head_opts)
        components = {
            "backbone": {"file": chosen.file, "runtime": chosen.runtime, "precision": chosen.record["reported_precision"],
                         "options": chosen.options, "reported": chosen.record.get("reported", {})},
            "head": {"file": HEAD_FILE, "runtime": chosen.runtime, "precision": head_reported["precision"],
                     "options": head_opts, "reported": head_reported,
                     "note": "the head is tiny (<1% of the time) and stays FP32"},
        }
        calib_rec = None
        if cset is not None:
            calib_rec = {**cset.report, "quantization": quant["cpu"], "quantization_tensorrt": quant["tensorrt"],
                         "used_for": ("int8 calibration + " if quant["cpu"] else "") + "agreement check (held-out clips)"}
        sources = {"backbone": FP32_FILE, "head": HEAD_FILE,
                   "backbone_int8_tensorrt": INT8_TRT_FILE if quant["tensorrt"] else None}
        manifest = make_manifest(model.spec, model_hash(model), tmp, components, target="cpu", opset=OPSET,
                                 sources=sources, parity=parity, calibration=calib_rec,
                                 agreement=agreement_rec, selection=selection)
        write_manifest(tmp, manifest)
    return BuildResult(out, manifest, _summary(out, manifest, chosen, selection, agreement_rec, calib_rec))


def _open_reported(runtime: str, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from ..runtime.backends import open_backend
    backend = open_backend(runtime, path, options)
    try:
        return {"precision": backend.precision, **getattr(backend, "properties", {})}
    finally:
        backend.close()


# What the gate ran on (the manifest's agreement record "data"; the summary counts clips and videos).
HELD_OUT_DATA = "held-out videos (not calibrated on)"
RANDOM_DATA = "random clips (no --calib)"


def _select(cands: list[_Candidate], tmp: Path, model: Any, holdout: list[np.ndarray] | None, gate: GateOptions,
            precision: str, runtime: str | None, cpu: CpuOptions, say: Callable[[str], None], bars: bool,
            seed: int):
    """Open, check and (when there is a choice) time every candidate; return the winner."""
    min_agreement, min_cosine = gate.min_agreement, gate.min_cosine
    threads, iterations, warmup = cpu.threads, cpu.trial_iterations, cpu.trial_warmup
    from ..errors import GcfError
    from ..runtime.backends import open_backend
    from .agreement import agreement, passes

    forced = len(cands) == 1
    ref_opts = _backend_options("onnxruntime", "fp32", threads)
    reference = open_backend("onnxruntime", tmp / FP32_FILE, ref_opts)
    head = open_backend("onnxruntime", tmp / HEAD_FILE, ref_opts)
    data = holdout if holdout is not None else \
        [np.random.default_rng(seed).standard_normal((model.spec.ring_size + 2, *model.spec.clip_shape)).astype(np.float32)]
    data_kind = HELD_OUT_DATA if holdout is not None else RANDOM_DATA
    try:
        for c in cands:
            say(f"loading {c.name}")
            try:
                c.backend = open_backend(c.runtime, tmp / c.file, c.options)
            except GcfError as exc:
                if forced:
                    raise
                c.record = {"error": exc.message, "passed": False}
                continue
            c.record["reported_precision"] = c.backend.precision
            c.record["reported"] = {"precision": c.backend.precision, **getattr(c.backend, "properties", {})}
            is_reference = c.runtime == "onnxruntime" and c.precision == "fp32"
            if c.backend.precision != c.precision:
                # e.g. OpenVINO silently running BF16 when FP32 was asked for: never accept it.
                c.record.update(error=f"asked for {c.precision}, the engine runs {c.backend.precision}",
                                passed=False)
                if forced:
                    raise AgreementError(f"{c.name}: {c.record['error']}")
                continue
            if is_reference:
                c.record.update(agreement=None, passed=True, note="FP32 reference")
            else:
                say(f"checking {c.name} against FP32 on {sum(len(d) for d in data)} clips of {len(data)} {data_kind}")
                try:
                    result = agreement(reference, c.backend, data, head,
                                       no_action_index=model.spec.no_action_index)
                except Exception as exc:  # noqa: BLE001 - an engine that loads but cannot run is refused
                    line = next((ln.strip() for ln in reversed(str(exc).splitlines()) if ln.strip()), type(exc).__name__)
                    c.record.update(error=f"failed to run: {line}", passed=False)
                    c.backend.close()
                    c.backend = None  # nothing to time
                    if forced:
                        raise EngineError(f"{c.name} loads but fails to run: {line}") from exc
                    continue
                result["data"] = data_kind
                if c.precision != "fp32":
                    ok = passes(result, min_agreement, min_cosine)
                else:  # an fp32 engine on another runtime must match the reference closely
                    ok = passes(result, 0.0, FP32_MIN_COSINE)
                    if not ok:
                        c.record["error"] = (f"fp32 on {c.runtime} differs from ONNX Runtime fp32: descriptor "
                                             f"cosine min {result['cosine_min']:.5f} < {FP32_MIN_COSINE}")
                c.record.update(agreement=result, passed=ok)
        if not forced:
            say(f"timing {sum(c.backend is not None for c in cands)} candidates ({iterations} rounds)")
            clip = np.ascontiguousarray(data[0][:1])
            _trial(cands, clip, iterations, warmup, bars)
        for c in cands:
            if c.times:
                c.record["median_ms"] = round(statistics.median(c.times), 3)
                c.record["min_ms"] = round(min(c.times), 3)
    finally:
        for c in cands:
            if c.backend is not None:
                c.backend.close()
                c.backend = None
        reference.close()
        head.close()

    passing = [c for c in cands if c.record.get("passed")]
    failed = [c for c in cands if not c.record.get("passed")]
    if not passing:
        worst = failed[0]
        agr = worst.record.get("agreement")
        if agr and "error" not in worst.record:
            from .agreement import check_agreement
            check_agreement(agr, min_agreement, min_cosine, what=worst.name)
        raise AgreementError("no candidate passed: " + "; ".join(f"{c.name}: {c.record.get('error', 'failed')}"
                                                                   for c in failed))
    if forced:
        chosen = passing[0]
        why = ("the only candidate" + (" (--runtime/--precision forced it)" if runtime and precision != "auto"
                                        else "") + "; no timing trial")
    else:
        chosen, why = fastest_passing(cands)
    selection = {
        "mode": "forced" if forced else "measured",
        "requested": {"precision": precision, "runtime": runtime},
        "gate": {"min_agreement": min_agreement, "min_cosine": min_cosine, "data": data_kind,
                 "num_clips": int(sum(len(d) for d in data)), "num_sequences": len(data),
                 "reference": "onnxruntime fp32 backbone + fp32 head"},
        "trial": None if forced else {"iterations": iterations, "warmup": warmup, "batch": 1,
                                      "threads": threads, "order": "interleaved round robin",
                                      "cpu_count": os.cpu_count()},
        "candidates": [{"runtime": c.runtime, "precision": c.precision, "file": c.file, **c.record}
                       for c in cands],
        "chosen": {"runtime": chosen.runtime, "precision": chosen.precision, "file": chosen.file},
        "why": why,
    }
    return chosen, selection, chosen.record.get("agreement")


def fastest_passing(cands: list[_Candidate]) -> tuple[_Candidate, str]:
    """The timed candidate with the lowest median among those that passed the gate, and why
    (with its speed-up over FP32 on the same runtime).  A faster candidate that failed the gate
    is never chosen."""
    passing = [c for c in cands if c.record.get("passed") and "median_ms" in c.record]
    if not passing:
        raise AgreementError("no timed candidate passed the agreement gate")
    chosen = min(passing, key=lambda c: c.record["median_ms"])
    fp32 = next((c for c in passing if c.precision == "fp32" and c.runtime == chosen.runtime), None)
    why = f"fastest candidate that passes the agreement gate ({chosen.record['median_ms']:.2f} ms/clip median"
    if fp32 is not None and fp32 is not chosen:
        why += f", {fp32.record['median_ms'] / chosen.record['median_ms']:.2f}x {fp32.name}"
    return chosen, why + ")"


def _gate_failure(candidate: dict[str, Any]) -> str:
    """' (failed gate: 97.3% top-1 agreement, 95% interval ..., decisions (class or no action)
    98.1%, of 487 predictions; ...)' for the summary."""
    from .agreement import decision_text, disagreement_text, interval_text
    agr = candidate["agreement"]
    ci = interval_text(agr)
    return (f" (failed gate: {agr['top1_agreement']:.1%} top-1 agreement"
            + (f", {ci}" if ci else "")
            + f", {decision_text(agr)}of {agr['num_predictions']} predictions{disagreement_text(agr)})")


def _summary(out: Path, manifest: dict[str, Any], chosen: _Candidate, selection: dict[str, Any],
             agreement_rec: dict[str, Any] | None, calibration: dict[str, Any] | None) -> list[str]:
    comps = manifest["components"]
    lines = []
    if selection.get("target"):
        lines.append(f"target auto -> cpu: {selection['target']['reason']}")
    lines.append(f"wrote {out}: {comps['backbone']['file']} ({comps['backbone']['precision']}, "
                 f"{comps['backbone']['runtime']}), {comps['head']['file']} ({comps['head']['precision']}), "
                 f"{MANIFEST_NAME}")
    if selection["mode"] == "measured":
        figures = ", ".join(f"{c['runtime']} {c['precision']} "
                            + (f"{c['median_ms']:.2f} ms" if "median_ms" in c else "n/a")
                            + ("" if c.get("passed") else _gate_failure(c) if "agreement" in c else
                               f" ({c.get('error', 'failed')})")
                            for c in selection["candidates"])
        lines.append(f"chose {chosen.name}: {selection['why']}")
        lines.append(f"trial (median ms/clip, batch 1): {figures}")
        for c in selection["candidates"]:
            if not c.get("passed") and "agreement" in c:
                lines.append(f"refused {c['runtime']} {c['precision']}: {_gate_failure(c).strip()[1:-1]}")
    else:
        lines.append(f"engine {chosen.name}: {selection['why']}")
    if agreement_rec:
        from .agreement import decision_text, interval_text
        ci = interval_text(agreement_rec)
        data = agreement_rec.get("data", "clips")
        if data == HELD_OUT_DATA and "num_sequences" in agreement_rec:  # "256 clips of 21 held-out videos"
            data = f"clips of {agreement_rec['num_sequences']} {data}"
        lines.append(f"agreement with FP32 on {agreement_rec['num_clips']} {data}: "
                     f"top-1 {agreement_rec['top1_agreement']:.1%} of {agreement_rec['num_predictions']} "
                     + (f"predictions ({ci}), " if ci else "predictions, ")
                     + decision_text(agreement_rec)
                     + f"descriptor cosine mean {agreement_rec['cosine_mean']:.4f} "
                     f"(min {agreement_rec['cosine_min']:.4f})")
    if calibration:
        q = calibration.get("quantization")
        line = (f"calibration: {calibration['calibration_clips']} clips from {len(calibration['videos'])} video(s); "
                f"gate: {calibration['holdout_clips']} clips of {len(calibration.get('holdout_videos', []))} other video(s)")
        if q:
            line += (f"; INT8 {q['method']}, {q.get('activations', 'int8')} activations, "
                     f"{q.get('weight_bits', 8)}-bit weights, kept FP32: {', '.join(q['excluded_nodes']) or 'nothing'}")
        lines.append(line)
    for note in selection.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"model {manifest['model_hash']}, parity max |diff| {max(manifest['parity'].values()):.1e}")
    return lines


