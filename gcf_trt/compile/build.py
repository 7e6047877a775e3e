"""``gcf-trt build``: checkpoint -> ONNX -> engines directory with ``manifest.json``.

The directory is written atomically (see :func:`gcf_trt.fsutil.atomic_output_dir`): a failed
build (bad input, agreement below the gate, Ctrl-C) leaves the previous directory untouched.

CPU target: the FP32 graphs are exported (and checked against PyTorch), an INT8 Q/DQ backbone is
calibrated when videos are given (:mod:`.precision`), then every allowed runtime x precision
(ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8) is *measured* here: a short interleaved timed
trial, and agreement with the FP32 reference for each reduced precision.  The fastest candidate
that passes the gate is written to the manifest with all the figures (``selection``).
TensorRT target: delegated to :mod:`.trt_build`.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
import statistics
import time

import numpy as np

from ..errors import AgreementError, BackendUnavailable, CalibrationError, InputError, OutputError
from ..fsutil import atomic_output_dir
from ..manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, sha256_file, write_json_atomic
from .export import (BACKBONE_INPUTS, BACKBONE_OUTPUTS, HEAD_INPUTS, HEAD_OUTPUTS, OPSET,
                     check_parity, export_backbone, export_head)
from .model import GCFNet, load_checkpoint, model_hash

PARITY_ATOL = 1e-4


@dataclass
class BuildResult:
    """What a build wrote: the directory, its manifest, and lines for the summary."""

    out: Path
    manifest: dict[str, Any]
    summary: list[str] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torch
    versions = {"gcf_trt": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "torch": torch.__version__}
    try:
        import openvino
        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return versions


def io_shapes(model: GCFNet) -> dict[str, dict[str, dict[str, list[int]]]]:
    spec = model.spec
    return {
        "backbone": {"inputs": {BACKBONE_INPUTS[0]: [-1, *spec.clip_shape]},
                     "outputs": {BACKBONE_OUTPUTS[0]: [-1, spec.dim]}},
        "head": {"inputs": {HEAD_INPUTS[0]: [-1, spec.ring_size, spec.dim], HEAD_INPUTS[1]: [-1, spec.ring_size]},
                 "outputs": {HEAD_OUTPUTS[0]: [-1, spec.num_classes], HEAD_OUTPUTS[1]: [-1, spec.ring_size]}},
    }


def export_fp32(model: GCFNet, out_dir: Path) -> dict[str, float]:
    """Write ``backbone.onnx`` and ``head.onnx`` into ``out_dir`` and check them against PyTorch."""
    export_backbone(model, out_dir / "backbone.onnx")
    export_head(model, out_dir / "head.onnx")
    parity = check_parity(model, out_dir / "backbone.onnx", out_dir / "head.onnx")
    worst = max(parity.values())
    if worst > PARITY_ATOL:
        raise InputError(f"exported ONNX differs from PyTorch by {worst:.2e} (> {PARITY_ATOL})",
                         hint="report this as a bug with the checkpoint's backbone name")
    return parity


def make_manifest(model: GCFNet, out_dir: Path, components: dict[str, dict[str, Any]], *,
                  target: str, **sections: Any) -> dict[str, Any]:
    """Assemble a manifest for the files now in ``out_dir`` (every file is hashed)."""
    shapes = io_shapes(model)
    for name, comp in components.items():
        comp.setdefault("options", {})
        comp.update(shapes[name])
    files = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir())
             if p.is_file() and p.name != MANIFEST_NAME}
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "model_hash": model_hash(model), "spec": model.spec.to_dict(), "target": target,
        "opset": OPSET, "components": components, "files": files,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **sections,
    }


CPU_RUNTIMES = ("onnxruntime", "openvino")
CPU_PRECISIONS = ("auto", "fp32", "int8", "bf16")
TARGETS = ("cpu", "trt", "auto")
FP32_FILE, INT8_FILE, HEAD_FILE = "backbone.onnx", "backbone_int8.onnx", "head.onnx"
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


def _check_output(out: Path) -> None:
    """Fail before any work when ``out`` obviously cannot be (re)created."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory",
                          hint="pass --out a new or existing engines directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        # The build replaces --out as a whole: never swallow a directory that is not ours.
        raise OutputError(f"output {out} exists, is not empty and is not an engines directory "
                          f"(no {MANIFEST_NAME}); refusing to replace it",
                          hint="pass --out a new directory (e.g. engines/NAME) or an earlier build's")
    parent = out.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {parent} (no write permission on {probe})")


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
    bf16 = False
    if "openvino" in runtimes:
        from ..runtime.backends.openvino import supports_bf16
        bf16 = supports_bf16()
    wanted = ["fp32", "int8", "bf16"] if precision == "auto" else [precision]
    cands = []
    for r in runtimes:
        for p in wanted:
            if p == "bf16" and r != "openvino":
                continue
            if p == "bf16" and not bf16:
                notes.append("openvino bf16 not tried: this CPU has no BF16 support")
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


def _trial(cands: list[_Candidate], clip: np.ndarray, iterations: int, warmup: int, say) -> None:
    """Interleaved timing (round robin, so a burst of load on a shared CPU hits every candidate)."""
    from tqdm import tqdm
    live = [c for c in cands if c.backend is not None]
    for c in live:
        for _ in range(warmup):
            c.backend.infer({"clip": clip})
    rounds = range(iterations)
    if say is not None:
        rounds = tqdm(rounds, desc="timing trial", unit="round", leave=False)
    for _ in rounds:
        for c in live:
            t0 = time.perf_counter()
            c.backend.infer({"clip": clip})
            c.times.append((time.perf_counter() - t0) * 1e3)


def build_engines(checkpoint: str | os.PathLike, out: str | os.PathLike, *, target: str = "cpu",
                  precision: str = "auto", runtime: str | None = None,
                  calib: str | os.PathLike | None = None, min_agreement: float = 0.99,
                  progress: Callable[[str], None] | None = None, min_cosine: float | None = None,
                  trial_iterations: int = 10, trial_warmup: int = 2, calib_clips: int = 64,
                  calib_method: str = "minmax", threads: int | None = None, seed: int = 0,
                  **trt_options: Any) -> BuildResult:
    """Build an engines directory from a checkpoint.

    Args:
        checkpoint: a gcf-trt checkpoint (``torch.load(weights_only=True)``).
        out: the engines directory to (re)create atomically.
        target: ``"cpu"``, ``"trt"`` (delegated to :func:`.trt_build.build_trt_engines`) or
            ``"auto"`` (TensorRT when it is usable here, else CPU, and the summary says so).
        precision: ``"auto"`` (CPU: the fastest that passes the agreement gate), ``"fp32"``,
            ``"int8"`` or ``"bf16"`` (OpenVINO only).
        runtime: force ``"onnxruntime"`` or ``"openvino"`` (default: chosen by measurement).
        calib: directory of calibration videos; needed for int8/bf16 (held-out clips from it
            are also the agreement data).
        min_agreement: minimum top-1 agreement of a reduced-precision engine with FP32 on
            held-out predictions; below it the build fails (:class:`AgreementError`) and ``out``
            is left untouched.
        min_cosine: optional minimum descriptor cosine (per clip) for the same gate.
        progress: called with one-line progress messages; also enables progress bars.
        trial_iterations, trial_warmup: timed / warm-up runs per candidate in the selection trial.
        calib_clips: clips drawn from the videos (a quarter are held out for the agreement).
        calib_method: ``"minmax"`` or ``"percentile"``.
        threads: intra-op threads of the engines (default: all cores), recorded in the manifest.
        trt_options: passed to the TensorRT build.
    """
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    out = Path(out)
    say = progress or (lambda msg: None)
    target_note = None
    if target == "auto":
        from ..runtime.backends import available_runtimes
        reason = available_runtimes().get("tensorrt")
        if reason is None:
            target = "trt"
        else:
            target = "cpu"
            target_note = {"requested": "auto", "chosen": "cpu",
                           "reason": f"TensorRT is not usable here ({reason}); fell back to the CPU engines"}
            say(target_note["reason"])
            trt_options = {}
    if target == "trt":
        shared = dict(min_agreement=min_agreement, calib_clips=calib_clips, calib_method=calib_method, seed=seed)
        return _build_trt(checkpoint, out, precision=precision, calib=calib, progress=progress,
                          shared=shared, **trt_options)
    if trt_options:
        raise InputError(f"option(s) {', '.join(sorted(trt_options))} apply to --target trt only")
    if precision not in CPU_PRECISIONS:
        raise InputError(f"precision {precision!r} is not available on the CPU target; "
                         f"use one of {', '.join(CPU_PRECISIONS)}",
                         hint="fp16 is a TensorRT precision: use --target trt, or bf16/int8 on CPU")
    if runtime is not None and runtime not in CPU_RUNTIMES:
        raise InputError(f"unknown CPU runtime {runtime!r}; use one of {', '.join(CPU_RUNTIMES)}")
    if trial_iterations < 1 or trial_warmup < 0:
        raise InputError("trial_iterations must be >= 1 and trial_warmup >= 0")
    if precision in ("int8", "bf16") and calib is None:
        raise CalibrationError(f"--precision {precision} needs --calib DIR: videos to calibrate on and "
                               f"held-out clips for the agreement check with FP32")
    _check_output(out)
    model = load_checkpoint(checkpoint)

    # Calibration data first: bad videos fail before anything is exported.
    calib_report: dict[str, Any] = {}
    calib_set = holdout = None
    if calib is not None:
        from .precision import calibration_clips, split_holdout
        say(f"reading calibration videos from {calib}")
        clips = calibration_clips(calib, model.spec, max_clips=calib_clips, seed=seed, report=calib_report,
                                  progress=progress is not None)
        calib_set, holdout = split_holdout(clips, seed=seed)
        calib_report["calibration_clips"] = int(len(calib_set))
        calib_report["holdout_clips"] = int(len(holdout))

    notes: list[str] = []
    # Candidates before any export, so an impossible request fails fast.
    cands = _cpu_candidates(precision, runtime, calib_set is not None and precision in ("auto", "int8"),
                            holdout is not None, threads, notes)
    want_int8 = any(c.precision == "int8" for c in cands)
    with atomic_output_dir(out) as tmp:
        say("exporting ONNX (FP32) and checking it against PyTorch")
        parity = export_fp32(model, tmp)
        quant_info = None
        if want_int8:
            from .precision import quantize_int8
            say(f"calibrating INT8 on {len(calib_set)} clips ({calib_method})")
            quant_info = quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE, calib_set, method=calib_method,
                                       progress=progress is not None)
        chosen, selection, agreement_rec = _select(cands, tmp, model, holdout, min_agreement, min_cosine,
                                                   precision, runtime, threads, trial_iterations,
                                                   trial_warmup, say, progress is not None, seed)
        selection["notes"] = notes
        if target_note:
            selection["target"] = target_note
        if (tmp / INT8_FILE).exists() and chosen.file != INT8_FILE:
            (tmp / INT8_FILE).unlink()
        head_opts = _backend_options(chosen.runtime, "fp32", threads)
        head_reported = _open_reported(chosen.runtime, tmp / HEAD_FILE, head_opts)
        components = {
            "backbone": {"file": chosen.file, "runtime": chosen.runtime, "precision": chosen.record["reported_precision"],
                         "options": chosen.options, "reported": chosen.record.get("reported", {})},
            "head": {"file": HEAD_FILE, "runtime": chosen.runtime, "precision": head_reported["precision"],
                     "options": head_opts, "reported": head_reported,
                     "note": "the head is tiny (<1% of the time) and stays FP32"},
        }
        calibration = None
        if calib is not None:
            calibration = {**calib_report, "quantization": quant_info,
                           "used_for": ("int8 calibration + " if quant_info else "") + "agreement check (held-out clips)"}
        manifest = make_manifest(model, tmp, components, target="cpu", parity=parity,
                                 calibration=calibration, agreement=agreement_rec, selection=selection)
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    return BuildResult(out, manifest, _summary(out, manifest, chosen, selection, agreement_rec, calibration))


def _open_reported(runtime: str, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from ..runtime.backends import open_backend
    backend = open_backend(runtime, path, options)
    try:
        return {"precision": backend.precision, **getattr(backend, "properties", {})}
    finally:
        backend.close()


def _select(cands: list[_Candidate], tmp: Path, model: GCFNet, holdout: np.ndarray | None,
            min_agreement: float, min_cosine: float | None, precision: str, runtime: str | None,
            threads: int | None, iterations: int, warmup: int, say, bars: bool, seed: int):
    """Open, check and (when there is a choice) time every candidate; return the winner."""
    from ..errors import GcfError
    from ..runtime.backends import open_backend
    from .precision import agreement, passes

    forced = len(cands) == 1
    ref_opts = _backend_options("onnxruntime", "fp32", threads)
    reference = open_backend("onnxruntime", tmp / FP32_FILE, ref_opts)
    head = open_backend("onnxruntime", tmp / HEAD_FILE, ref_opts)
    data = holdout if holdout is not None else \
        np.random.default_rng(seed).standard_normal((model.spec.ring_size + 2, *model.spec.clip_shape)).astype(np.float32)
    data_kind = "held-out calibration clips" if holdout is not None else "random clips (no --calib)"
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
                say(f"checking {c.name} against FP32 on {len(data)} {data_kind}")
                result = agreement(reference, c.backend, data, head)
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
            clip = np.ascontiguousarray(data[:1])
            _trial(cands, clip, iterations, warmup, say if bars else None)
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
            from .precision import check_agreement
            check_agreement(agr, min_agreement, min_cosine, what=worst.name)
        raise AgreementError("no candidate passed: " + "; ".join(f"{c.name}: {c.record.get('error', 'failed')}"
                                                                   for c in failed))
    if forced:
        chosen = passing[0]
        why = ("the only candidate" + (" (--runtime/--precision forced it)" if runtime and precision != "auto"
                                        else "") + "; no timing trial")
    else:
        chosen = min(passing, key=lambda c: c.record["median_ms"])
        fp32 = next((c for c in passing if c.precision == "fp32" and c.runtime == chosen.runtime), None)
        why = f"fastest candidate that passes the agreement gate ({chosen.record['median_ms']:.2f} ms/clip median"
        if fp32 is not None and fp32 is not chosen:
            why += f", {fp32.record['median_ms'] / chosen.record['median_ms']:.2f}x {fp32.name}"
        why += ")"
    selection = {
        "mode": "forced" if forced else "measured",
        "requested": {"precision": precision, "runtime": runtime},
        "gate": {"min_agreement": min_agreement, "min_cosine": min_cosine, "data": data_kind,
                 "num_clips": int(len(data)), "reference": "onnxruntime fp32 backbone + fp32 head"},
        "trial": None if forced else {"iterations": iterations, "warmup": warmup, "batch": 1,
                                      "threads": threads, "order": "interleaved round robin",
                                      "cpu_count": os.cpu_count()},
        "candidates": [{"runtime": c.runtime, "precision": c.precision, "file": c.file, **c.record}
                       for c in cands],
        "chosen": {"runtime": chosen.runtime, "precision": chosen.precision, "file": chosen.file},
        "why": why,
    }
    return chosen, selection, chosen.record.get("agreement")


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
                            + ("" if c.get("passed") else " (failed gate)" if "agreement" in c else
                               f" ({c.get('error', 'failed')})")
                            for c in selection["candidates"])
        lines.append(f"chose {chosen.name}: {selection['why']}")
        lines.append(f"trial (median ms/clip, batch 1): {figures}")
    else:
        lines.append(f"engine {chosen.name}: {selection['why']}")
    if agreement_rec:
        lines.append(f"agreement with FP32 on {agreement_rec['num_clips']} {agreement_rec.get('data', 'clips')}: "
                     f"top-1 {agreement_rec['top1_agreement']:.1%} of {agreement_rec['num_predictions']} "
                     f"predictions, descriptor cosine mean {agreement_rec['cosine_mean']:.4f} "
                     f"(min {agreement_rec['cosine_min']:.4f})")
    if calibration:
        q = calibration.get("quantization")
        line = (f"calibration: {calibration['num_clips']} clips from {len(calibration['videos'])} video(s), "
                f"{calibration['holdout_clips']} held out")
        if q:
            line += f"; INT8 {q['method']}, kept FP32: {', '.join(q['excluded_nodes']) or 'nothing'}"
        lines.append(line)
    for note in selection.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"model {manifest['model_hash']}, parity max |diff| {max(manifest['parity'].values()):.1e}")
    return lines


def _build_trt(checkpoint, out, *, precision, calib, progress, shared: dict[str, Any],
               **trt_options) -> BuildResult:
    from ..runtime.backends import available_runtimes
    reason = available_runtimes().get("tensorrt")
    if reason is not None:
        raise BackendUnavailable(f"--target trt needs TensorRT, which is not usable here: {reason}",
                                 hint="on a machine with an NVIDIA GPU: pip install 'gcf-trt[trt]' "
                                      "(Jetson: TensorRT comes with JetPack); or build with --target cpu")
    try:
        from .trt_build import build_trt_engines
    except ImportError as exc:
        raise BackendUnavailable(f"the TensorRT build path cannot be loaded: {exc}",
                                 hint="pip install 'gcf-trt[trt]'") from exc
    import inspect
    params = inspect.signature(build_trt_engines).parameters
    # Options both targets understand (the gate, calibration) go on when the TRT build takes them.
    for name, value in shared.items():
        if name in params and name not in trt_options:
            trt_options[name] = value
    return build_trt_engines(checkpoint, out, precision=precision, calib=calib, progress=progress, **trt_options)
