"""The engines the bench measures: built with the library's own build function, then opened.

Builds call :func:`gcf_trt.compile.build.build_engines` directly (what ``gcf-trt build`` calls)
and read what was built from the build's manifest (:class:`Built`).  The backbone candidates of
the latency comparison are opened through the runtime's own backends, so what is timed is what
``gcf-trt run`` runs; the CPU build's chosen engine is timed exactly as the runtime loads it
(:func:`gcf_trt.runtime.engines.load_engines`), no re-matching of its selection.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..spec import BACKBONE_INPUT as CLIP
from ..spec import BACKBONE_OUTPUT as DESCRIPTOR  # noqa: F401 - the short names the sections import
from ..spec import HEAD_INPUTS
from .timing import error_text

Say = Callable[[str], None]
DESCRIPTORS, MASK = HEAD_INPUTS  # the tensor contract (gcf_trt.spec), under short names


@dataclass
class Built:
    """One finished build: where it is and its manifest (:class:`gcf_trt.manifest.Manifest`)."""

    name: str
    dir: Path
    manifest: Any
    seconds: float
    options: dict[str, Any]
    summary: list[str]

    @property
    def spec(self):
        return self.manifest.spec

    def component(self, name: str) -> dict[str, Any]:
        return self.manifest.component(name)

    def file(self, name: str) -> Path:
        return self.dir / self.component(name)["file"]

    def record(self) -> dict[str, Any]:
        return {"ok": True, "dir": str(self.dir), "seconds": self.seconds, "options": self.options,
                "backbone": self.component("backbone"), "head": self.component("head"),
                "selection": self.manifest.get("selection"), "agreement": self.manifest.get("agreement"),
                "summary": self.summary}


@dataclass
class Failed:
    """A build that did not happen, and why (a result, not a crash)."""

    name: str
    reason: str
    options: dict[str, Any]

    def record(self) -> dict[str, Any]:
        return {"ok": False, "reason": self.reason, "options": self.options}


def build(name: str, checkpoint: Path, out: Path, say: Say, **options: Any) -> Built | Failed:
    """``build_engines(checkpoint, out, **options)``; a refusal (e.g. the INT8 gate) is returned."""
    from ..compile.build import build_engines
    shown = {k: str(v) for k, v in options.items()}
    say(f"build {name}: {', '.join(f'{k}={v}' for k, v in shown.items())}")
    t0 = time.perf_counter()
    log: list[str] = []
    try:
        result = build_engines(checkpoint, out, progress=log.append, **options)
    except Exception as exc:  # noqa: BLE001 - a build that cannot be made here is a result
        say(f"  build {name}: not built: {error_text(exc)}")
        return Failed(name, error_text(exc), shown)
    from ..manifest import read_manifest
    return Built(name, Path(result.out), read_manifest(result.out), round(time.perf_counter() - t0, 1), shown,
                 list(result.summary))


def calibration_options(build_options: dict[str, Any]):
    """The calibration options a build with ``build_options`` uses (for calling its quantizer directly)."""
    from ..compile.options import CalibrationOptions
    return build_options.get("calibration") or CalibrationOptions()


@dataclass
class Builds:
    """Every build of one run.  ``int8_file`` is the INT8 Q/DQ backbone the bench times."""

    fp32: Built
    cpu: Built | Failed
    int8: Built | Failed | None = None
    trt: dict[str, Built | Failed] = field(default_factory=dict)
    int8_file: Path | None = None
    int8_source: str = ""

    def record(self) -> dict[str, Any]:
        out = {"fp32": self.fp32.record(), "cpu": self.cpu.record(),
               "int8_file": str(self.int8_file) if self.int8_file else None, "int8_source": self.int8_source,
               "tensorrt": {k: v.record() for k, v in self.trt.items()}}
        if self.int8 is not None:
            out["int8"] = self.int8.record()
        return out


def _int8_in(b: Built | Failed | None) -> Path | None:
    if isinstance(b, Built) and b.component("backbone").get("precision") == "int8":
        return b.file("backbone")
    return None


def int8_build(name: str, checkpoint: Path, out: Path, calib: Path, say: Say,
               build_options: dict[str, Any]) -> tuple[Built | Failed, Path | None, str]:
    """The INT8 backbone file the build would ship, with its agreement gate off.

    The bench measures INT8 agreement itself (on more predictions than the gate), and INT8 speed
    is worth measuring even where the gate refuses INT8, so the gate must not stop the file
    being written.  The build's own gate figures are still in its manifest (``agreement``).
    Returns ``(build, file or None, where the file came from)``.
    """
    from ..compile.options import GateOptions
    b = build(name, checkpoint, out, say, target="cpu", precision="int8", calib=calib,
              gate=GateOptions(min_agreement=0.0), **build_options)
    if isinstance(b, Failed):
        return b, None, f"unavailable: build_engines(precision='int8') failed: {b.reason}"
    return b, _int8_in(b), "build_engines(precision='int8') with the agreement gate off (the bench measures agreement)"


def prepare(checkpoint: Path, work: Path, calib: Path, say: Say, *, build_options: dict[str, Any]) -> Builds:
    """The FP32 CPU build, the default CPU build (the engine a user gets) and an INT8 file: the
    default build's backbone when it chose INT8, else :func:`int8_build`'s."""
    fp32 = build("fp32", checkpoint, work / "fp32", say, target="cpu", precision="fp32", **build_options)
    if isinstance(fp32, Failed):
        raise RuntimeError(f"the FP32 build failed: {fp32.reason}")
    cpu = build("cpu", checkpoint, work / "cpu", say, target="cpu", calib=calib, **build_options)
    builds = Builds(fp32, cpu)
    builds.int8_file, builds.int8_source = _int8_in(cpu), "build_engines(target='cpu') chose INT8"
    if builds.int8_file is None:
        builds.int8, builds.int8_file, builds.int8_source = int8_build("int8", checkpoint, work / "int8", calib, say,
                                                                       build_options)
    return builds


def tensorrt_builds(checkpoint: Path, work: Path, calib: Path, say: Say) -> dict[str, Built | Failed]:
    """TensorRT FP16 and INT8 builds where TensorRT and a GPU answer (else the reason)."""
    reason = unusable_runtimes().get("tensorrt")
    if reason:
        return {p: Failed(f"trt_{p}", reason, {}) for p in ("fp16", "int8")}
    return {p: build(f"trt_{p}", checkpoint, work / f"trt_{p}", say, target="trt", precision=p,
                     **({"calib": calib} if p == "int8" else {})) for p in ("fp16", "int8")}


def unusable_runtimes() -> dict[str, str]:
    """``{runtime: why it cannot run here}`` for the runtimes that cannot (the runtime's own probe)."""
    from ..runtime.backends import runtime_status
    return {name: st.reason or "unavailable" for name, st in runtime_status().items() if not st.available}


# ----------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One backbone configuration of the latency comparison: how to open it, or why not."""

    name: str
    runtime: str
    precision: str
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None
    engines_dir: Path | None = None  # a build's directory: opened with load_engines, as the runtime does
    backend: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        d = {"runtime": self.runtime, "precision": self.precision,
             "file": self.path.name if self.path else None, "options": self.options, **self.info}
        if self.unavailable:
            d["unavailable"] = self.unavailable
        return d


def candidates(builds: Builds, *, bf16: tuple[bool, str]) -> list[Candidate]:
    """Every backbone configuration, available or not (with the reason).

    ``cpu_build`` and ``fp32_build`` are the two builds' backbones as ``load_engines`` opens
    them; the other rows are the runtime x precision matrix on the same files.
    """
    status = unusable_runtimes()
    fp32_onnx, int8_onnx = builds.fp32.file("backbone"), builds.int8_file
    no_int8 = None if int8_onnx else f"no INT8 backbone file ({builds.int8_source})"
    cands = [Candidate("torch_eager_fp32", "torch", "fp32")]

    def add(name, runtime, precision, path, options=None, extra=None):
        cands.append(Candidate(name, runtime, precision, path, dict(options or {}),
                               unavailable=status.get(runtime) or extra))
    if isinstance(builds.cpu, Built):
        comp = builds.cpu.component("backbone")
        cands.append(Candidate("cpu_build", comp["runtime"], str(comp.get("precision")), builds.cpu.file("backbone"),
                               dict(comp.get("options") or {}), engines_dir=builds.cpu.dir))
    else:
        cands.append(Candidate("cpu_build", "?", "?", unavailable=f"the CPU build failed: {builds.cpu.reason}"))
    comp = builds.fp32.component("backbone")
    cands.append(Candidate("fp32_build", comp["runtime"], "fp32", builds.fp32.file("backbone"),
                           dict(comp.get("options") or {}), engines_dir=builds.fp32.dir))
    add("onnxruntime_fp32", "onnxruntime", "fp32", fp32_onnx)
    add("onnxruntime_int8", "onnxruntime", "int8", int8_onnx, extra=no_int8)
    add("openvino_fp32", "openvino", "fp32", fp32_onnx, {"inference_precision": "f32"})
    add("openvino_bf16", "openvino", "bf16", fp32_onnx, {"inference_precision": "bf16"},
        extra=None if bf16[0] else bf16[1])
    add("openvino_int8", "openvino", "int8", int8_onnx, {"inference_precision": "f32"}, extra=no_int8)
    for prec in ("fp16", "int8"):
        b = builds.trt.get(prec)
        if isinstance(b, Built):
            cands.append(Candidate(f"tensorrt_{prec}", "tensorrt", prec, b.file("backbone"),
                                   dict(b.component("backbone").get("options") or {}), engines_dir=b.dir))
        else:
            cands.append(Candidate(f"tensorrt_{prec}", "tensorrt", prec,
                                   unavailable=b.reason if b else status.get("tensorrt") or "not built"))
    return cands


def open_candidates(cands: list[Candidate], spec, torch_model_fn: Callable[[], Any],
                    say: Say) -> dict[str, Callable[[], Any]]:
    """Load every available candidate; returns ``{name: call}`` for one clip (B=1)."""
    from ..runtime.backends import open_backend
    from ..runtime.engines import load_engines
    clip = np.random.default_rng(0).standard_normal((1, *spec.clip_shape)).astype(np.float32)
    fns: dict[str, Callable[[], Any]] = {}
    for c in cands:
        if c.unavailable:
            continue
        t0 = time.perf_counter()
        try:
            if c.runtime == "torch":
                import torch
                model = torch_model_fn()
                x = torch.from_numpy(clip)

                def call(model=model, x=x):
                    with torch.inference_mode():
                        return model(x)
                c.backend = model
                c.info = {"threads": torch.get_num_threads(), "mode": "torch.inference_mode, eval()"}
            else:
                if c.engines_dir is not None:
                    engines = load_engines(c.engines_dir)
                    engines.head.close()  # only the backbone is timed here
                    backend = engines.backbone
                else:
                    backend = open_backend(c.runtime, c.path, c.options)
                c.backend = backend
                c.info = {"reported_precision": getattr(backend, "precision", None),
                          **getattr(backend, "properties", {})}
                call = (lambda b=backend: b.infer({CLIP: clip}))
            call()
            c.info["load_s"] = round(time.perf_counter() - t0, 3)
            fns[c.name] = call
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a result
            c.unavailable = f"failed to load/run: {error_text(exc)}"
            say(f"  {c.name}: {c.unavailable}")
    return fns


def close_candidates(cands: list[Candidate]) -> None:
    for c in cands:
        if c.backend is not None and hasattr(c.backend, "close"):
            c.backend.close()
        c.backend = None
