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
Q/DQ backbone is the very file the CPU engine uses (:func:`.precision.quantize_int8`:
symmetric, per-channel weights), so there is one calibration for every target and no TensorRT
calibrator (gone in 11).

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
``tensorrt`` module for TensorRT 8.6, 10 and 11 (tests/test_trt_config.py), and the types,
with mypy against ``tensorrt-stubs`` 10.13 (scripts/check_trt_types.sh).  No engine was built
here; tests/test_trt_gpu.py builds and runs them where TensorRT and a GPU exist.
"""
from __future__ import annotations

import argparse
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import BackendUnavailable, CalibrationError, EngineError, InputError
from ..fsutil import atomic_output_dir
from ..manifest import MANIFEST_NAME, write_json_atomic
from ..runtime.backends import tensorrt as trt_backend

if TYPE_CHECKING:  # the stubs (tensorrt-stubs) for mypy; never imported at run time here
    import tensorrt as trt

    from .build import BuildResult

PRECISIONS = ("fp16", "int8")
COMPONENTS = ("backbone", "head")
Progress = Callable[[str], None]


@dataclass
class TrtOptions:
    """Validated builder options (CLI: see :func:`add_arguments`)."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    dla_core: int | None = None

    def validate(self) -> "TrtOptions":
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError(f"batch profile needs min <= opt <= max, got {self.min_batch}/{self.opt_batch}/"
                             f"{self.max_batch}", hint="e.g. --min-batch 1 --opt-batch 1 --max-batch 8")
        if self.dla_core is not None and (not isinstance(self.dla_core, int) or self.dla_core < 0):
            raise InputError(f"--dla-core must be a core index >= 0, got {self.dla_core!r}")
        if self.dla_core is not None and not self.min_batch == self.opt_batch == self.max_batch:
            # "DLA does not support dynamic dimensions, so the profile's min, max, and opt values
            # must be equal" (TensorRT docs, "DLA Supported Layers and Restrictions")
            raise InputError("DLA needs a fixed batch: the profile's min, opt and max must be equal",
                             hint="e.g. --dla-core 0 --min-batch 1 --opt-batch 1 --max-batch 1")
        if self.timing_cache is not None:
            self.timing_cache = Path(self.timing_cache)
        return self


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
              plan: GraphPlan, opts: TrtOptions, timing_cache: Path | None,
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
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            # A cache from another TensorRT/GPU: start a fresh one instead of failing.
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
            data = b""
        record["timing_cache"] = {"path": str(timing_cache), "loaded_bytes": len(data)}

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


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> int:
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)  # another build reading it sees the old or the new cache, whole
    finally:
        tmp.unlink(missing_ok=True)
    return len(data)


def build_plan(onnx_path: Path, plan_path: Path, plan: GraphPlan, opts: TrtOptions, *,
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
def build_trt_engines(checkpoint: str | os.PathLike, out: str | os.PathLike, *, precision: str = "fp16",
                      calib: str | os.PathLike | None = None, progress: Progress | None = None,
                      min_batch: int = 1, opt_batch: int = 1, max_batch: int = 8, workspace_mb: int = 1024,
                      timing_cache: str | os.PathLike | None = None, dla_core: int | None = None,
                      calib_clips: int = 64, calib_method: str = "minmax", seed: int = 0,
                      min_agreement: float = 0.99, verify: bool = True, cuda_graph: bool = False) -> BuildResult:
    """Build a TensorRT engines directory (backbone + head plans and ``manifest.json``).

    Args:
        precision: ``"fp16"`` or ``"int8"`` (``"auto"`` means fp16).  INT8 quantizes the
            backbone to Q/DQ on the CPU, calibrated on ``calib`` videos; the head stays FP16.
        min_batch, opt_batch, max_batch: the optimization profile of the batch dimension.
        workspace_mb: TensorRT workspace memory pool limit.
        timing_cache: timing cache file, loaded and updated (default: per-user cache dir,
            one file per TensorRT version and GPU).
        dla_core: build for this DLA core (Jetson Orin), with GPU fallback (fixed batch only).
        calib_clips, calib_method, seed: calibration clips drawn from ``calib`` (a quarter held
            out for the agreement check) and the calibration method, as for the CPU engines.
        verify: after building, run the plans against ONNX Runtime FP32 (descriptor and logits
            difference; with ``calib``, top-1 agreement on held-out clips >= ``min_agreement``).
        cuda_graph: recorded as the backbone's runtime option (CUDA graph replay).

    Raises:
        BackendUnavailable: TensorRT, cuda-python or a GPU is missing (before any work).
    """
    if precision == "auto":
        precision = "fp16"
    if precision not in PRECISIONS:
        raise InputError(f"--target trt builds {', '.join(PRECISIONS)}, not {precision!r}",
                         hint="use --precision fp16 or --precision int8 --calib DIR")
    if precision == "int8" and calib is None:
        raise CalibrationError("--precision int8 needs --calib DIR: videos to calibrate the Q/DQ graph on")
    opts = TrtOptions(min_batch, opt_batch, max_batch, workspace_mb,
                      Path(timing_cache) if timing_cache is not None else None, dla_core).validate()
    say = progress or (lambda msg: None)

    # TensorRT, cuda-python and a GPU, before any work.
    trt_backend.import_tensorrt()
    import tensorrt as trt
    identity = trt_backend.runtime_identity(trt, trt_backend.import_cudart())
    major = trt_major(trt)
    cache_path = opts.timing_cache or default_timing_cache(identity)

    from .build import BuildResult, export_fp32, make_manifest
    from .model import load_checkpoint, model_hash

    model = load_checkpoint(checkpoint)
    mhash = model_hash(model)
    spec = model.spec
    clips = holdout = None
    calib_report: dict[str, Any] = {}
    if calib is not None:
        from .precision import calibration_clips, split_holdout
        say(f"reading calibration videos from {calib}")
        all_clips = calibration_clips(calib, spec, max_clips=calib_clips, seed=seed, report=calib_report)
        clips, holdout = split_holdout(all_clips, seed=seed)

    out = Path(out)
    with atomic_output_dir(out) as tmp:
        say("exporting ONNX (FP32) and checking it against PyTorch")
        parity = export_fp32(model, tmp)
        sources = {"fp32": {c: tmp / f"{c}.onnx" for c in COMPONENTS}}
        plans = {c: graph_plan(major, precision, c) for c in COMPONENTS}
        quant_info = None
        if any(p.onnx == "qdq" for p in plans.values()):
            from .precision import quantize_int8
            assert clips is not None  # int8 without calib was refused above
            say(f"calibrating and quantizing the backbone to INT8 Q/DQ on {len(clips)} clips")
            # same quantizer, settings and file name as the CPU engine's INT8 backbone
            quant_info = quantize_int8(tmp / "backbone.onnx", tmp / "backbone_int8.onnx", clips, method=calib_method)
            calib_report.update(quant_info or {})
            sources["qdq"] = {"backbone": tmp / "backbone_int8.onnx"}
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
            name = trt_backend.plan_name(c, mhash, comp_precision, identity["tensorrt"], identity["sm"])
            say(f"building {name} (TensorRT {trt.__version__}, {identity['gpu']})")
            builds[c] = build_plan(sources[plan.onnx][c], tmp / name, plan, opts, timing_cache=cache_path,
                                   progress=say if progress else None)
            built_for = {"model_hash": mhash, "precision": comp_precision, **identity}
            options: dict[str, Any] = {"built_for": built_for}
            if cuda_graph and c == "backbone":
                options["cuda_graph"] = True
            components[c] = {"file": name, "runtime": "tensorrt", "precision": comp_precision,
                             "options": options, "source_onnx": sources[plan.onnx][c].name}

        check = None
        if verify:
            check = _verify(tmp, components, spec, holdout, min_agreement, say)
        tensorrt_section = {"version": trt.__version__, "major": major, **identity,
                            "options": {**asdict(opts), "timing_cache": str(cache_path)},
                            "builds": builds, "fp16_conversion": fp16_info or None}
        manifest = make_manifest(model, tmp, components, target="trt", parity=parity,
                                 calibration=calib_report or None, agreement=check, selection=None,
                                 tensorrt=tensorrt_section)
        manifest["versions"]["tensorrt"] = trt.__version__
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    summary = [f"wrote {out}/{components['backbone']['file']}, {components['head']['file']} "
               f"({precision}, TensorRT {trt.__version__}, {identity['gpu']} sm{identity['sm']})",
               f"model {mhash}, ONNX parity max |diff| {max(parity.values()):.1e}"]
    if check is not None:
        summary.append("checked against ONNX Runtime FP32: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items()))
    return BuildResult(out, manifest, summary)


def _verify(tmp: Path, components: dict[str, dict[str, Any]], spec: Any, holdout: Any,
            min_agreement: float, say: Progress) -> dict[str, Any]:
    """Run the fresh plans next to ONNX Runtime FP32 (needs the GPU the plans were built on)."""
    import numpy as np

    from ..runtime.backends.onnxrt import OnnxRuntimeBackend
    from ..runtime.backends.tensorrt import TensorRTBackend
    say("checking the TensorRT engines against ONNX Runtime FP32")
    ref_bb = OnnxRuntimeBackend(tmp / "backbone.onnx")
    ref_hd = OnnxRuntimeBackend(tmp / "head.onnx")
    bb = TensorRTBackend(tmp / components["backbone"]["file"], **components["backbone"]["options"])
    hd = TensorRTBackend(tmp / components["head"]["file"], **components["head"]["options"])
    try:
        rng = np.random.default_rng(0)
        clip = rng.standard_normal((2, *spec.clip_shape)).astype(np.float32)
        desc = rng.standard_normal((2, spec.ring_size, spec.dim)).astype(np.float32)
        mask = np.ones((2, spec.ring_size), np.float32)
        mask[0, : spec.ring_size // 2] = 0
        result: dict[str, Any] = {
            "descriptor_max_abs_diff": float(np.abs(bb.infer({"clip": clip})["descriptor"]
                                                    - ref_bb.infer({"clip": clip})["descriptor"]).max()),
            "logits_max_abs_diff": float(np.abs(hd.infer({"descriptors": desc, "mask": mask})["logits"]
                                                - ref_hd.infer({"descriptors": desc, "mask": mask})["logits"]).max()),
        }
        if holdout is not None and len(holdout):
            from .precision import agreement, check_agreement
            result.update(agreement(ref_bb, bb, holdout, ref_hd, ring_size=spec.ring_size))
            check_agreement(result, min_agreement, what="the TensorRT backbone")
        return result
    finally:
        for b in (bb, hd, ref_bb, ref_hd):
            b.close()


# ----------------------------------------------------------------------------- CLI glue
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the TensorRT options to the ``gcf-trt build`` parser."""
    g = parser.add_argument_group("TensorRT (--target trt)")
    g.add_argument("--min-batch", type=int, default=None, help="optimization profile: smallest batch (1)")
    g.add_argument("--opt-batch", type=int, default=None, help="optimization profile: batch tuned for (1)")
    g.add_argument("--max-batch", type=int, default=None, help="optimization profile: largest batch (8)")
    g.add_argument("--workspace-mb", type=int, default=None, help="workspace memory pool limit in MiB (1024)")
    g.add_argument("--timing-cache", default=None,
                   help="timing cache file reused across builds (default: ~/.cache/gcf-trt/, per TensorRT+GPU)")
    g.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Jetson), GPU fallback on")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The TensorRT options the user actually gave (unset ones keep the function defaults)."""
    names = ("min_batch", "opt_batch", "max_batch", "workspace_mb", "timing_cache", "dla_core")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def tensorrt_available() -> str | None:
    """None when TensorRT, cuda-python and a GPU are usable here, else why not."""
    try:
        trt_backend.TensorRTBackend.check_available()
    except BackendUnavailable as exc:
        return exc.message
    return None
