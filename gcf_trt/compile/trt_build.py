"""``gcf-trt build --target trt``: FP16 / INT8 TensorRT plans from the same ONNX, any TensorRT.

Precision is decided on the ONNX graph, on the CPU, so one pipeline serves every TensorRT:

=================  =============================================  ==================================
TensorRT           FP16                                           INT8
=================  =============================================  ==================================
8.5 / 8.6 (JP5/6)  FP32 ONNX + ``BuilderFlag.FP16``; network       Q/DQ backbone + ``INT8`` + ``FP16``
                   created with ``EXPLICIT_BATCH``                flags; head as FP16
10.x (JP 6.1+)     FP32 ONNX + ``BuilderFlag.FP16`` (weakly       same as 8.x (no EXPLICIT_BATCH: it
                   typed)                                         is deprecated and ignored in 10)
11.x (datacenter)  FP16 ONNX (:mod:`.fp16`, or ModelOpt           Q/DQ backbone (FP32 elsewhere),
                   AutoCast) in a ``STRONGLY_TYPED`` network;     head as the FP16 ONNX; strongly
                   no precision flags (removed in 11)             typed, no flags
=================  =============================================  ==================================

Sources: TensorRT Python API "Builder" page (NetworkDefinitionCreationFlag: EXPLICIT_BATCH
"[DEPRECATED] Ignored because networks are always explicit batch in TensorRT 10.0"); TensorRT
10.x->11.x migration guide, "Removed Python APIs and Replacements" (BuilderFlag.FP16 -> strong
typing with ModelOpt AutoCast, BuilderFlag.INT8 and IBuilderConfig.int8_calibrator -> explicit
quantization with Q/DQ nodes) and "Migrating from Weak Typing to Strong Typing".  The INT8
Q/DQ backbone comes from the same calibration as the CPU engine's (:func:`.precision.quantize_int8`:
symmetric, per-channel weights) with float biases (``for_tensorrt=True``: TensorRT's ONNX parser
rejects an INT32-bias ``DequantizeLinear``), checked against TensorRT's Q/DQ rules before
TensorRT sees it; no TensorRT calibrator (gone in 11).

Sources: from a checkpoint (export here, needs torch) or, with ``--from DIR``, from the ONNX
files of an engines directory a CPU build wrote anywhere (``sources`` in its manifest, hashes
checked): that path imports no torch, for Jetsons ("export on a workstation, build on the device").

Every build also gets: an optimization profile over the batch dimension (min/opt/max), a
workspace limit (``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``, TensorRT >= 8.4; the
older ``max_workspace_size`` was removed in 10), a timing cache file reused across builds
(``create_timing_cache`` / ``set_timing_cache`` / ``get_timing_cache().serialize()``), an
optional DLA core with GPU fallback (``default_device_type = DeviceType.DLA``, ``DLA_core``,
``BuilderFlag.GPU_FALLBACK``), and build progress through ``IProgressMonitor`` on TensorRT >= 10
(the interface does not exist in 8.x).  Plans are written inside
:func:`gcf_trt.fsutil.atomic_output_dir`, named after everything they depend on
(``backbone.<modelhash>.fp16.trt10.8.sm87.plan``), and the manifest records the same identity
so the runtime refuses a plan from another TensorRT or GPU before deserializing it.

This module imports without TensorRT (``import tensorrt`` happens inside functions).  What was
verified without a GPU: the configuration logic, against a recording stand-in of the
``tensorrt`` module for TensorRT 8.6, 10 and 11 (tests/compile/test_trt_config.py), and the types,
with mypy against ``tensorrt-stubs`` 10.13 (scripts/check_trt_types.sh).  No engine was built
here; tests/runtime/backends/test_trt_gpu.py builds and runs them where TensorRT and a GPU exist.
"""
from __future__ import annotations

import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import CalibrationError, EngineError, InputError
from ..fsutil import atomic_file, atomic_output_dir
from ..manifest import Manifest, read_manifest, verify_files, write_manifest
from ..runtime.backends import tensorrt as trt_backend
from ..spec import ModelSpec
from . import artifacts
from .artifacts import FP32_FILE, HEAD_FILE, INT8_TRT_FILE, BuildResult, CalibrationSet
from .options import CalibrationOptions, GateOptions, TensorRTOptions

if TYPE_CHECKING:  # the stubs (tensorrt-stubs) for mypy; never imported at run time here
    import tensorrt as trt

PRECISIONS = ("fp16", "int8")
COMPONENTS = ("backbone", "head")
Progress = Callable[[str], None]


@dataclass
class GraphPlan:
    """How one component is handed to TensorRT: which ONNX, which flags, which network."""

    onnx: str                 # "fp32" (exported), "fp16" (converted), "qdq" (INT8 Q/DQ)
    flags: tuple[str, ...]    # BuilderFlag names to set
    strongly_typed: bool
    explicit_batch: bool


def dims_tuple(dims: Any) -> tuple[int, ...]:
    """A ``trt.Dims`` as a tuple (Dims supports len() and indexing)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def trt_major(trt_module: Any) -> int:
    return trt_backend.version_tuple(trt_module.__version__)[0]


def graph_plan(major: int, precision: str, component: str) -> GraphPlan:
    """The version branch, in one place (see the module docstring's table)."""
    if precision not in PRECISIONS:
        raise InputError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    qdq = precision == "int8" and component == "backbone"
    if major >= 11:   # strongly typed only; precision lives in the graph
        return GraphPlan("qdq" if qdq else "fp16", (), True, False)
    return GraphPlan("qdq" if qdq else "fp32", ("INT8", "FP16") if qdq else ("FP16",), False, major < 10)


def network_flags(plan: GraphPlan) -> int:
    import tensorrt as trt
    flags = 0
    if plan.explicit_batch:  # required for ONNX on TensorRT 8.x; deprecated and ignored in 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:  # TensorRT 11: always strongly typed, the flag is accepted
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


# ----------------------------------------------------------------------------- progress
def make_progress_monitor(say: Progress | None) -> Any | None:
    """An ``IProgressMonitor`` forwarding top-level phases to ``say``; None before TensorRT 10."""
    import tensorrt as trt
    if say is None or trt_major(trt) < 10 or not hasattr(trt, "IProgressMonitor"):
        return None
    emit: Progress = say

    class _Monitor(trt.IProgressMonitor):
        # TensorRT calls these from its own threads (API docs: "must be thread-safe").
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                with self._lock:
                    emit(f"TensorRT: {phase_name} ({num_steps} step{'s' if num_steps != 1 else ''})")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            pass

    return _Monitor()


# ----------------------------------------------------------------------------- config
def default_timing_cache(identity: dict[str, Any]) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gcf-trt"
    return base / f"timing.trt{identity['tensorrt']}.sm{identity['sm']}.cache"


def configure(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig,
              plan: GraphPlan, opts: TensorRTOptions, timing_cache: Path | None,
              monitor: Any | None) -> dict[str, Any]:
    """Apply flags, profile, workspace, timing cache, DLA and progress monitor to ``config``."""
    import tensorrt as trt
    record: dict[str, Any] = {"flags": list(plan.flags), "strongly_typed": plan.strongly_typed}
    for name in plan.flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:  # e.g. FP16/INT8 on TensorRT 11: graph_plan never asks for them there
            raise EngineError(f"this TensorRT ({trt.__version__}) has no BuilderFlag.{name}")
        config.set_flag(flag)

    # Optimization profile: batch (dim 0) is the only dynamic dimension of both graphs.
    profile = builder.create_optimization_profile()
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = dims_tuple(tensor.shape)
        rest = dims[1:]
        if any(d < 0 for d in rest):
            raise EngineError(f"input {tensor.name} has dynamic non-batch dimensions {dims}")
        lo, mid, hi = ([b, *rest] for b in (opts.min_batch, opts.opt_batch, opts.max_batch))
        profile.set_shape(tensor.name, trt.Dims(lo), trt.Dims(mid), trt.Dims(hi))
        shapes[tensor.name] = {"min": list(lo), "opt": list(mid), "max": list(hi)}
    config.add_optimization_profile(profile)
    record["profile"] = shapes

    # Workspace: memory pool API (TensorRT >= 8.4; max_workspace_size is gone in 10).
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    record["workspace_mb"] = opts.workspace_mb
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    if timing_cache is not None:
        record["timing_cache"] = load_timing_cache(config, timing_cache)

    if opts.dla_core is not None:
        cores = builder.num_DLA_cores
        if opts.dla_core >= cores:
            raise InputError(f"--dla-core {opts.dla_core} does not exist: this device has {cores} DLA core(s)",
                             hint="DLA exists on Jetson AGX/NX Orin (cores 0 and 1); omit --dla-core elsewhere")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU
        record["dla_core"] = opts.dla_core

    if monitor is not None:
        config.progress_monitor = monitor  # IBuilderConfig.progress_monitor, TensorRT >= 10.0
    record["progress_monitor"] = monitor is not None
    return record


def load_timing_cache(config: trt.IBuilderConfig, path: Path) -> dict[str, Any]:
    """Give ``config`` the timing cache in ``path``, or a fresh one when it cannot be used.

    ``create_timing_cache`` returns None for a blob it cannot read (corrupt, truncated, not a
    cache) and ``set_timing_cache`` returns False for one from another TensorRT or GPU; either
    way a fresh cache replaces it (as Polygraphy does) and the record says why.  Passing None on
    to ``set_timing_cache`` would raise TypeError.
    """
    data = path.read_bytes() if path.is_file() else b""
    record: dict[str, Any] = {"path": str(path), "loaded_bytes": len(data)}
    cache = config.create_timing_cache(data) if data else None
    if data and cache is None:
        record.update(loaded_bytes=0, replaced="unreadable (corrupt or not a TensorRT timing cache)")
    elif cache is not None and not config.set_timing_cache(cache, False):
        record.update(loaded_bytes=0, replaced="made by another TensorRT version or GPU")
        cache = None
    if cache is None:
        fresh = config.create_timing_cache(b"")
        if fresh is None or not config.set_timing_cache(fresh, False):
            raise EngineError("TensorRT could not create an empty timing cache",
                              hint="pass --timing-cache to a writable file, or report the TensorRT version")
    return record


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> int:
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:  # another build reading it sees the old or the new cache, whole
        tmp.write_bytes(data)
    return len(data)


def build_plan(onnx_path: Path, plan_path: Path, plan: GraphPlan, opts: TensorRTOptions, *,
               timing_cache: Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Parse ``onnx_path`` with TensorRT's ONNX parser, build, write the serialized plan."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(plan))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file keeps the file's directory for external weights (we write none).
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path.name}: " + "; ".join(errors[:5]),
                          hint="check the opset (17) and operators (gcf_trt.compile.export.TENSORRT_SUPPORTED_OPS)")
    config = builder.create_builder_config()
    monitor = make_progress_monitor(progress)
    record = configure(builder, network, config, plan, opts, timing_cache, monitor)
    if timing_cache is not None and "replaced" in record["timing_cache"] and progress is not None:
        progress(f"timing cache {timing_cache} is {record['timing_cache']['replaced']}: starting a fresh one")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log)",
                          hint="try a larger --workspace-mb, a smaller --max-batch, or without --dla-core")
    with open(plan_path, "wb") as fh:
        fh.write(serialized)
    if timing_cache is not None:
        record["timing_cache"]["saved_bytes"] = _save_timing_cache(config, timing_cache)
    del monitor  # outlives the build (IProgressMonitor lifetime rule), then released
    return record


# ----------------------------------------------------------------------------- build
@dataclass
class _Source:
    """What the plans are built from: the model's identity and its ONNX files in the temp dir."""

    spec: ModelSpec
    model_hash: str
    opset: int
    parity: dict[str, float] | None
    origin: dict[str, Any]


def _read_source_dir(from_dir: Path, precision: str) -> tuple[Manifest, dict[str, str]]:
    """The manifest of ``--from DIR`` and the ONNX files to copy (hash-checked), by role."""
    manifest = read_manifest(from_dir)
    files = manifest.get("files", {})
    # Manifests written before the ``sources`` section: a CPU build always keeps these two.
    sources = manifest.get("sources") or {"backbone": FP32_FILE, "head": HEAD_FILE}
    wanted = {"backbone": sources.get("backbone"), "head": sources.get("head")}
    if precision == "int8":
        wanted["backbone_int8_tensorrt"] = sources.get("backbone_int8_tensorrt")
    missing = [role for role, name in wanted.items() if not name or name not in files]
    if missing:
        if missing == ["backbone_int8_tensorrt"]:
            raise CalibrationError(f"{from_dir} has no TensorRT Q/DQ backbone ({INT8_TRT_FILE}): it was built "
                                   f"without INT8 calibration or by an older gcf-trt",
                                   hint="rebuild it with 'gcf-trt build --target cpu --calib VIDEOS' (INT8 "
                                        "writes the TensorRT Q/DQ file too), or use --precision fp16")
        raise InputError(f"{from_dir} has no ONNX source for: {', '.join(missing)} (its manifest lists "
                         f"{', '.join(sorted(files)) or 'no files'})",
                         hint="--from needs a directory written by 'gcf-trt build --target cpu'")
    verify_files(from_dir, manifest, sorted({str(name) for name in wanted.values()}))
    return manifest, {role: str(name) for role, name in wanted.items()}


def build_trt_engines(checkpoint: str | os.PathLike | None, out: str | os.PathLike, *, precision: str = "fp16",
                      calib: str | os.PathLike | None = None, from_dir: str | os.PathLike | None = None,
                      calibration: CalibrationOptions = CalibrationOptions(), gate: GateOptions = GateOptions(),
                      tensorrt: TensorRTOptions = TensorRTOptions(),
                      progress: Progress | None = None) -> BuildResult:
    """Build a TensorRT engines directory (backbone + head plans, their ONNX sources, ``manifest.json``).

    Args:
        checkpoint: the model to export (needs torch); or None with ``from_dir``.
        from_dir: an engines directory (``gcf-trt build --target cpu``, any machine) whose ONNX
            files and manifest are the source: no torch is imported (a Jetson needs none).
        precision: ``"fp16"`` or ``"int8"`` (``"auto"`` means fp16).  INT8 uses a Q/DQ backbone
            with float biases, calibrated on the CPU (on ``calib`` videos, or the one in
            ``from_dir``); the head stays FP16.
        calib: calibration videos.  From a checkpoint: INT8 calibration plus held-out clips for
            the check; with ``from_dir``: held-out clips for the check only.
        calibration, gate: clips drawn from ``calib`` and the agreement gate (``verify``).
        tensorrt: profile, workspace, timing cache, DLA, ``verify`` (run the plans against ONNX
            Runtime FP32 after building), ``cuda_graph`` (recorded as the backbone's option).

    Raises:
        BackendUnavailable: TensorRT, cuda-python or a GPU is missing (before any work).
    """
    if precision == "auto":
        precision = "fp16"
    if precision not in PRECISIONS:
        raise InputError(f"--target trt builds {', '.join(PRECISIONS)}, not --precision {precision}",
                         hint="use --precision fp16 or --precision int8 --calib DIR")
    if (checkpoint is None) == (from_dir is None):
        raise InputError("give exactly one of --checkpoint and --from")
    if precision == "int8" and calib is None and from_dir is None:
        raise CalibrationError("--precision int8 needs --calib DIR: videos to calibrate the Q/DQ graph on")
    calibration, gate, opts = calibration.validate(), gate.validate(), tensorrt.validate()
    out = Path(out)
    say = progress or (lambda msg: None)
    bars = progress is not None
    source_manifest: Manifest | None = None
    names: dict[str, str] = {}
    if from_dir is not None:
        from_dir = Path(from_dir)
        if from_dir.absolute() == out.absolute():
            raise InputError("--out must differ from --from (the source directory stays as it is)",
                             hint="e.g. --from engines/cpu --out engines/trt")
        source_manifest, names = _read_source_dir(from_dir, precision)
    artifacts.check_output(out)

    # TensorRT, cuda-python and a GPU, before any work.
    trt_backend.import_tensorrt()
    import tensorrt as trt
    identity = trt_backend.runtime_identity(trt, trt_backend.import_cudart())
    major = trt_major(trt)
    cache_path = opts.timing_cache or default_timing_cache(identity)

    model = None
    if source_manifest is not None:
        src = _Source(source_manifest.spec, source_manifest.model_hash,
                      int(source_manifest.get("opset", 17)), source_manifest.get("parity"),
                      {"from": str(from_dir), "target": source_manifest.get("target"),
                       "created": source_manifest.get("created"), "files": names})
    else:
        from .export import OPSET
        from .model import load_checkpoint, model_hash
        assert checkpoint is not None  # exactly one of checkpoint / from_dir, checked above
        model = load_checkpoint(checkpoint)
        src = _Source(model.spec, model_hash(model), OPSET, None, {"checkpoint": str(checkpoint)})
    spec = src.spec
    cset: CalibrationSet | None = None
    if calib is not None:
        cset = artifacts.calibration_set(Path(calib), spec, calibration, say, bars)

    with atomic_output_dir(out) as tmp:
        quant: dict[str, Any] | None = None
        if model is not None:
            say("exporting ONNX (FP32) and checking it against PyTorch")
            src.parity = artifacts.export_fp32(model, tmp)
        else:
            say(f"copying the ONNX sources from {from_dir} (hashes checked)")
            assert from_dir is not None
            for role, name in names.items():
                dst = {"backbone": FP32_FILE, "head": HEAD_FILE, "backbone_int8_tensorrt": INT8_TRT_FILE}[role]
                shutil.copyfile(from_dir / name, tmp / dst)
        sources = {"fp32": {"backbone": tmp / FP32_FILE, "head": tmp / HEAD_FILE}}
        plans = {c: graph_plan(major, precision, c) for c in COMPONENTS}
        if any(p.onnx == "qdq" for p in plans.values()):
            if model is not None:
                assert cset is not None  # int8 without calib was refused above
                quant = artifacts.quantize_backbone(tmp, cset, calibration, say, cpu=False, tensorrt=True,
                                                    bars=bars)["tensorrt"]
            else:
                _check_tensorrt_qdq(tmp / INT8_TRT_FILE)
                assert source_manifest is not None
                quant = (source_manifest.get("calibration") or {}).get("quantization_tensorrt")
            sources["qdq"] = {"backbone": tmp / INT8_TRT_FILE}
        fp16_info: dict[str, Any] = {}
        if any(p.onnx == "fp16" for p in plans.values()):
            from .fp16 import convert_to_fp16
            sources["fp16"] = {}
            for c in COMPONENTS:
                if plans[c].onnx == "fp16":
                    say(f"converting {c}.onnx to a strongly typed FP16 graph")
                    sources["fp16"][c] = tmp / f"{c}.fp16.onnx"
                    fp16_info[c] = convert_to_fp16(tmp / f"{c}.onnx", sources["fp16"][c])

        components: dict[str, dict[str, Any]] = {}
        builds: dict[str, Any] = {}
        for c in COMPONENTS:
            plan = plans[c]
            comp_precision = "int8" if plan.onnx == "qdq" else "fp16"
            name = trt_backend.plan_name(c, src.model_hash, comp_precision, identity["tensorrt"], identity["sm"])
            say(f"building {name} (TensorRT {trt.__version__}, {identity['gpu']})")
            builds[c] = build_plan(sources[plan.onnx][c], tmp / name, plan, opts, timing_cache=cache_path,
                                   progress=say if progress else None)
            built_for = {"model_hash": src.model_hash, "precision": comp_precision, **identity}
            options: dict[str, Any] = {"built_for": built_for}
            if opts.cuda_graph and c == "backbone":
                options["cuda_graph"] = True
            components[c] = {"file": name, "runtime": "tensorrt", "precision": comp_precision,
                             "options": options, "source_onnx": sources[plan.onnx][c].name}

        check = None
        if opts.verify:
            check = _verify(tmp, components, spec, cset.holdout if cset is not None else None, gate, opts, say)
        tensorrt_section = {"version": trt.__version__, "major": major, **identity,
                            "options": {**asdict(opts), "timing_cache": str(cache_path)},
                            "builds": builds, "fp16_conversion": fp16_info or None}
        calib_rec = None
        if cset is not None or quant is not None:
            calib_rec = {**(cset.report if cset is not None else {}), "quantization_tensorrt": quant,
                         "used_for": ("int8 calibration + " if model is not None and quant else "")
                         + ("agreement check (held-out clips)" if cset is not None else "")}
        versions = {**artifacts.library_versions(), "tensorrt": trt.__version__}
        manifest = artifacts.make_manifest(
            spec, src.model_hash, tmp, components, target="trt", opset=src.opset,
            sources={"backbone": FP32_FILE, "head": HEAD_FILE,
                     "backbone_int8_tensorrt": INT8_TRT_FILE if "qdq" in sources else None},
            versions=versions, parity=src.parity, calibration=calib_rec, agreement=check, selection=None,
            tensorrt=tensorrt_section, built_from=src.origin)
        write_manifest(tmp, manifest)
    summary = [f"wrote {out}/{components['backbone']['file']}, {components['head']['file']} "
               f"({precision}, TensorRT {trt.__version__}, {identity['gpu']} sm{identity['sm']})",
               f"built from {from_dir} (no torch)" if from_dir is not None else
               f"model {src.model_hash}, ONNX parity max |diff| {max((src.parity or {'none': 0.0}).values()):.1e}"]
    if check is not None:
        summary.append("checked against ONNX Runtime FP32: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items()))
    else:
        summary.append("not checked against ONNX Runtime FP32 (--no-verify)")
    return BuildResult(out, manifest, summary)


def _check_tensorrt_qdq(path: Path) -> None:
    """A Q/DQ file TensorRT's parser would reject (e.g. INT32-bias DequantizeLinear) fails here."""
    import onnx

    from .precision import tensorrt_qdq_problems
    problems = tensorrt_qdq_problems(onnx.load(str(path)))
    if problems:
        raise CalibrationError(f"{path.name} breaks TensorRT's Q/DQ rules: " + "; ".join(problems[:3]),
                               hint="rebuild the source with this gcf-trt: gcf-trt build --target cpu --calib VIDEOS")


def _in_profile(backend: Any, lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    """clips -> descriptors through ``backend`` in batches the profile accepts: chunks of at most
    ``hi``, a short last chunk padded (by repeating its last clip) up to ``lo`` and trimmed."""
    def run(clips: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(clips), hi):
            chunk = clips[i:i + hi]
            n = len(chunk)
            if n < lo:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], lo - n, axis=0)])
            outs.append(backend.infer({"clip": np.ascontiguousarray(chunk)})["descriptor"][:n])
        return np.concatenate(outs)
    return run


def _verify(tmp: Path, components: dict[str, dict[str, Any]], spec: ModelSpec,
            holdout: np.ndarray | list[np.ndarray] | None,
            gate: GateOptions, opts: TensorRTOptions, say: Progress) -> dict[str, Any]:
    """Run the fresh plans next to ONNX Runtime FP32 (needs the GPU the plans were built on).

    Batches stay inside the optimization profile: a DLA build (min = opt = max, often 1) or
    ``--min-batch 2`` would refuse the batch-2 check this used to feed.
    """
    from ..runtime.backends.onnxrt import OnnxRuntimeBackend
    from ..runtime.backends.tensorrt import TensorRTBackend
    say("checking the TensorRT engines against ONNX Runtime FP32")
    ref_bb = OnnxRuntimeBackend(tmp / FP32_FILE)
    ref_hd = OnnxRuntimeBackend(tmp / HEAD_FILE)
    bb = TensorRTBackend(tmp / components["backbone"]["file"], **components["backbone"]["options"])
    hd = TensorRTBackend(tmp / components["head"]["file"], **components["head"]["options"])
    try:
        b = opts.verify_batch
        rng = np.random.default_rng(0)
        clip = rng.standard_normal((b, *spec.clip_shape)).astype(np.float32)
        desc = rng.standard_normal((b, spec.ring_size, spec.dim)).astype(np.float32)
        mask = np.ones((b, spec.ring_size), np.float32)
        mask[0, : spec.ring_size // 2] = 0
        result: dict[str, Any] = {
            "batch": b,
            "descriptor_max_abs_diff": float(np.abs(bb.infer({"clip": clip})["descriptor"]
                                                    - ref_bb.infer({"clip": clip})["descriptor"]).max()),
            "logits_max_abs_diff": float(np.abs(hd.infer({"descriptors": desc, "mask": mask})["logits"]
                                                - ref_hd.infer({"descriptors": desc, "mask": mask})["logits"]).max()),
        }
        if holdout is not None and len(holdout):
            from .agreement import agreement, check_agreement
            result.update(agreement(ref_bb, _in_profile(bb, opts.min_batch, opts.max_batch), holdout, ref_hd,
                                    ring_size=spec.ring_size, batch=opts.max_batch,
                                    no_action_index=spec.no_action_index))
            check_agreement(result, gate.min_agreement, gate.min_cosine, what="the TensorRT backbone")
        return result
    finally:
        for backend in (bb, hd, ref_bb, ref_hd):
            backend.close()
