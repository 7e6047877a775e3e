"""A recording stand-in for the ``tensorrt`` Python module (no GPU needed).

It mirrors the names gcf-trt uses, per TensorRT generation, so the version branches of
gcf_trt/compile/trt_build.py and the identity checks of the TensorRT backend can be tested
without TensorRT or a GPU.  It does **not** build anything: ``build_serialized_network``
returns a fake "plan" that is the JSON record of the network and configuration it was given,
so a test can assert what would have been asked of TensorRT.  Its ONNX parser refuses what
TensorRT's refuses in Q/DQ graphs (INT32-bias DequantizeLinear, UINT8 zero points).  The only
thing it "runs" is a toy engine (:func:`exec_plan`, y = 2x + 1) on :class:`FakeCudart`, to test
the backend's buffers, shapes and CUDA graph handling; real kernels run only on a GPU.

What differs between generations here (from the TensorRT docs; see docs/TENSORRT.md):

* 8.6: ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (no STRONGLY_TYPED), ``BuilderFlag.FP16``
  / ``INT8``, no ``IProgressMonitor`` and no ``IBuilderConfig.progress_monitor``.
* 10.x: EXPLICIT_BATCH (deprecated, ignored) and STRONGLY_TYPED; FP16/INT8 flags;
  ``IProgressMonitor``.
* 11.x: STRONGLY_TYPED only (accepted, always on); no FP16/INT8 (nor any precision) flags.

Like the pybind11 objects it imitates, config objects refuse attributes the version lacks
(AttributeError), so code that sets ``progress_monitor`` on 8.6 fails here as it would there.
Install it with :func:`install` (monkeypatches ``sys.modules["tensorrt"]``).
"""
from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from typing import Any

import numpy as np
import onnx

PLAN_MAGIC = b"GCF-TRT-STANDIN-PLAN\n"
CACHE_MAGIC = b"GCF-TRT-STANDIN-TIMING-CACHE "


def _version_major(version: str) -> int:
    return int(version.split(".")[0])


def make_tensorrt(version: str = "10.8.0.43", num_dla_cores: int = 0) -> types.ModuleType:
    """A fresh stand-in module for TensorRT ``version`` with its own call log (``.calls``)."""
    major = _version_major(version)
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    # importlib.util.find_spec("tensorrt") (the ONNX exporter asks) needs a spec on a module in sys.modules
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    calls: list[tuple[str, str, Any]] = []
    mod.calls = calls  # type: ignore[attr-defined]
    mod.runtimes_created = 0  # type: ignore[attr-defined]

    def record(obj: str, method: str, *args: Any) -> None:
        calls.append((obj, method, args))

    # --- enums --------------------------------------------------------------------------
    if major < 10:
        ndcf = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
    elif major < 11:
        ndcf = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                "PREFER_AOT_PYTHON_PLUGINS": 3}
    else:
        ndcf = {"STRONGLY_TYPED": 0}
    mod.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ndcf)
    flags = ["GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS", "SAFETY_SCOPE",
             "ERROR_ON_TIMING_CACHE_MISS"]
    if major < 11:
        flags[:0] = ["FP16", "INT8", "DEBUG", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                     "DIRECT_IO"]
    mod.BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(flags)})
    mod.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1,
                                                         "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3})
    mod.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1,
                                                                 "DETAILED": 2})
    mod.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    mod.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

    class Dims(list):
        """``trt.Dims``: built from a list, indexable."""

    mod.Dims = Dims

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity: int = 2):
            self.min_severity = min_severity

    mod.Logger = Logger

    # --- network and parser ---------------------------------------------------------------
    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: str):
            self.name, self.shape, self.dtype = name, shape, dtype

    class INetworkDefinition:
        def __init__(self, flags: int):
            self.flags = flags
            self.inputs: list[ITensor] = []
            self.onnx: dict[str, Any] = {}

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

        @property
        def strongly_typed(self) -> bool:
            flag = getattr(mod.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
            return flag is not None and bool(self.flags & (1 << int(flag)))

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger):
            self.network = network
            self._errors: list[str] = []

        def parse_from_file(self, path: str) -> bool:
            record("OnnxParser", "parse_from_file", path)
            try:
                model = onnx.load(path)
            except Exception as exc:  # noqa: BLE001
                self._errors.append(f"cannot read {path}: {exc}")
                return False
            init = {i.name for i in model.graph.initializer}
            for v in model.graph.input:
                if v.name in init:
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                             for d in v.type.tensor_type.shape.dim)
                self.network.inputs.append(ITensor(v.name, dims, onnx.TensorProto.DataType.Name(
                    v.type.tensor_type.elem_type)))
            # TensorRT's parser refuses a DequantizeLinear fed an INT32 tensor (the INT32 biases
            # of ONNX Runtime's default Q/DQ): "only activation types allowed as input to this
            # layer" (NVIDIA/TensorRT#3360, microsoft/onnxruntime#14229).
            # Unsigned 8-bit Q/DQ (ORT's default asymmetric activations) is refused too: TensorRT
            # quantizes to signed INT8 with zero point 0 only.
            dtypes = {i.name: i.data_type for i in model.graph.initializer}
            for node in model.graph.node:
                if node.op_type == "DequantizeLinear" and dtypes.get(node.input[0]) == onnx.TensorProto.INT32:
                    self._errors.append(f"{node.name}: only activation types allowed as input to this layer.")
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 \
                        and dtypes.get(node.input[2]) == onnx.TensorProto.UINT8:
                    self._errors.append(f"{node.name}: TensorRT supports only INT8 zero points (UINT8 given).")
            if self._errors:
                return False
            ops = {n.op_type for n in model.graph.node}
            weight_types = sorted({onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer})
            self.network.onnx = {"path": path, "qdq": "QuantizeLinear" in ops and "DequantizeLinear" in ops,
                                 "initializer_types": weight_types,
                                 "precision": {p.key: p.value for p in model.metadata_props}.get("gcf_trt.precision")}
            return True

        def parse(self, model: bytes, path: str | None = None) -> bool:
            raise AssertionError("gcf-trt parses from file (parse_from_file)")

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> str:
            return self._errors[index]

    mod.OnnxParser = OnnxParser

    # --- builder config ---------------------------------------------------------------------
    class ITimingCache:
        def __init__(self, data: bytes):
            self.entries: list[str] = []
            self.source_version = version
            if data:
                text = bytes(data)
                assert text.startswith(CACHE_MAGIC), "not a stand-in timing cache"
                payload = json.loads(text[len(CACHE_MAGIC):])
                self.source_version = payload["version"]
                self.entries = payload["entries"]

        def serialize(self) -> bytes:
            return CACHE_MAGIC + json.dumps({"version": version, "entries": self.entries}).encode()

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            assert all(isinstance(d, Dims) for d in (min, opt, max)), "set_shape takes trt.Dims"
            record("IOptimizationProfile", "set_shape", input, tuple(min), tuple(opt), tuple(max))
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    config_attrs = {"default_device_type", "DLA_core", "profiling_verbosity", "builder_optimization_level",
                    "max_aux_streams", "hardware_compatibility_level"}
    if major >= 10:
        config_attrs.add("progress_monitor")
    if major < 11:
        config_attrs.add("int8_calibrator")

    class IBuilderConfig:
        def __init__(self) -> None:
            object.__setattr__(self, "_state", {"flags": [], "profiles": [], "pools": {}, "attrs": {},
                                                "timing_cache": None})

        def __setattr__(self, name: str, value: Any) -> None:
            if name not in config_attrs:
                raise AttributeError(f"'tensorrt.IBuilderConfig' (TensorRT {version}) has no attribute '{name}'")
            record("IBuilderConfig", f"set {name}", value)
            self._state["attrs"][name] = value

        def __getattr__(self, name: str) -> Any:
            if name in config_attrs:
                return self._state["attrs"].get(name)
            raise AttributeError(name)

        def set_flag(self, flag: Any) -> None:
            record("IBuilderConfig", "set_flag", flag)
            self._state["flags"].append(flag.name)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            record("IBuilderConfig", "add_optimization_profile", dict(profile.shapes))
            self._state["profiles"].append(profile)
            return len(self._state["profiles"]) - 1

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            record("IBuilderConfig", "set_memory_pool_limit", pool, pool_size)
            self._state["pools"][pool.name] = pool_size

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
            record("IBuilderConfig", "create_timing_cache", len(bytes(serialized_timing_cache)))
            data = bytes(serialized_timing_cache)
            if data and not data.startswith(CACHE_MAGIC):
                return None  # TensorRT returns a null cache for a blob it cannot read
            return ITimingCache(data)

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if not isinstance(cache, ITimingCache):  # pybind11 rejects None for this argument
                raise TypeError("set_timing_cache(): incompatible function arguments")
            record("IBuilderConfig", "set_timing_cache", cache.source_version, ignore_mismatch)
            if cache.source_version != version and not ignore_mismatch:
                return False
            self._state["timing_cache"] = cache
            return True

        def get_timing_cache(self) -> ITimingCache:
            record("IBuilderConfig", "get_timing_cache")
            return self._state["timing_cache"]

    class Builder:
        def __init__(self, logger: Logger):
            self.logger = logger
            self.num_DLA_cores = num_dla_cores

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            record("Builder", "create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes:
            st = config._state
            record("Builder", "build_serialized_network", network.onnx.get("path"))
            monitor = st["attrs"].get("progress_monitor")
            if monitor is not None:  # what TensorRT 10 does, in short
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic selection", "Building engine", 3)
                for step in range(3):
                    assert monitor.step_complete("Tactic selection", step) is True
                monitor.phase_finish("Tactic selection")
                monitor.phase_finish("Building engine")
            if st["timing_cache"] is not None:
                st["timing_cache"].entries.append(f"{network.onnx.get('path')}")
            flag_names = dict(mod.NetworkDefinitionCreationFlag.__members__)
            plan = {
                "tensorrt": version,
                "network_flags": sorted(n for n, f in flag_names.items() if network.flags & (1 << int(f))),
                "strongly_typed": network.strongly_typed,
                "onnx": network.onnx,
                "builder_flags": list(st["flags"]),
                "profiles": [{k: [list(x) for x in v] for k, v in p.shapes.items()} for p in st["profiles"]],
                "pools": st["pools"],
                "attrs": {k: (v.name if isinstance(v, enum.Enum) else v if isinstance(v, (int, str, type(None)))
                              else type(v).__name__) for k, v in st["attrs"].items()},
            }
            return PLAN_MAGIC + json.dumps(plan, sort_keys=True).encode()

    mod.Builder = Builder
    mod.IBuilderConfig = IBuilderConfig
    mod.INetworkDefinition = INetworkDefinition
    mod.ITimingCache = ITimingCache

    if major >= 10:
        class IProgressMonitor:
            def __init__(self) -> None:
                record("IProgressMonitor", "__init__")

        mod.IProgressMonitor = IProgressMonitor

    # --- runtime ----------------------------------------------------------------------------
    # Build plans (PLAN_MAGIC) are never deserialized.  An *executable* plan (EXEC_PLAN_MAGIC,
    # see exec_plan()) gives a toy engine, y = 2 * x + 1 over a dynamic batch, whose contexts
    # "run" on FakeCudart memory; enough to test buffers, shapes and CUDA graph capture/replay.
    mod.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3})
    mod.nptype = lambda dt: {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32}[int(dt)]
    mod.cudart = None  # set by install(): the FakeCudart the toy contexts run on
    mod.contexts = []  # type: ignore[attr-defined]

    class IExecutionContext:
        def __init__(self, engine: "ICudaEngine"):
            self.engine, self.shapes, self.addresses, self.reshapes = engine, {}, {}, 0
            mod.contexts.append(self)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            lo, hi = self.engine.spec["profile"]
            if not lo <= shape[0] <= hi:
                return False
            self.reshapes += name in self.shapes
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Dims:
            batch = self.shapes.get(self.engine.spec["input"], (-1,))[0]
            return Dims([batch, self.engine.spec["width"]])

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            spec, batch = self.engine.spec, self.shapes[self.engine.spec["input"]][0]
            src, dst, n = self.addresses[spec["input"]], self.addresses[spec["output"]], batch * spec["width"]

            def kernel() -> None:  # the shape is fixed when the work is enqueued, as on a GPU
                x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(src))
                np.ctypeslib.as_array((ctypes.c_float * n).from_address(dst))[:] = 2 * x + 1
            mod.cudart.enqueue(stream_handle, kernel)
            return True

    class ICudaEngine:
        def __init__(self, spec: dict[str, Any]):
            self.spec = spec
            self.num_io_tensors = 2

        def get_tensor_name(self, index: int) -> str:
            return (self.spec["input"], self.spec["output"])[index]

        def get_tensor_mode(self, name: str) -> Any:
            return mod.TensorIOMode.INPUT if name == self.spec["input"] else mod.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return mod.DataType.FLOAT

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims([-1, self.spec["width"]])

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[Dims]:
            lo, hi = self.spec["profile"]
            return [Dims([lo, self.spec["width"]]), Dims([lo, self.spec["width"]]), Dims([hi, self.spec["width"]])]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger):
            mod.runtimes_created += 1  # type: ignore[attr-defined]

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            record("Runtime", "deserialize_cuda_engine", len(data))
            if bytes(data).startswith(EXEC_PLAN_MAGIC):
                return ICudaEngine(json.loads(bytes(data)[len(EXEC_PLAN_MAGIC):]))
            raise AssertionError("the stand-in cannot deserialize plans")

    mod.Runtime = Runtime
    return mod


EXEC_PLAN_MAGIC = b"GCF-TRT-STANDIN-EXEC-PLAN\n"


def exec_plan(path, width: int = 3, profile: tuple[int, int] = (1, 4)):
    """Write a toy executable plan (y = 2x + 1, input ``x`` [B, width], output ``y``)."""
    spec = {"input": "x", "output": "y", "width": width, "profile": list(profile)}
    with open(path, "wb") as fh:
        fh.write(EXEC_PLAN_MAGIC + json.dumps(spec).encode())
    return path


def read_plan(path) -> dict[str, Any]:
    """The configuration record a stand-in build wrote as its "plan"."""
    data = open(path, "rb").read()
    assert data.startswith(PLAN_MAGIC), f"{path} is not a stand-in plan"
    return json.loads(data[len(PLAN_MAGIC):])


class FakeCudart:
    """Enough of ``cuda.bindings.runtime`` for device identity and for running the toy engine.

    "Device" memory is host memory (ctypes buffers); a stream runs its work at once unless it
    is being captured, in which case the work is recorded into the graph; a graph launch
    replays it.  There is deliberately no ``cudaGraphInstantiate``: its signature differs
    between CUDA 11 and 12/13, so code must use ``cudaGraphInstantiateWithFlags``.
    """

    class _Err(int):
        @property
        def name(self) -> str:
            return "cudaSuccess" if self == 0 else f"cudaError{int(self)}"

    cudaStreamNonBlocking = 1
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self, name: str = "Orin", major: int = 8, minor: int = 7, count: int = 1,
                 count_error: int = 0, driver: int = 12020):
        self.prop = types.SimpleNamespace(name=name.encode() + b"\x00" * 8, major=major, minor=minor)
        self.count, self.count_error, self.driver = count, count_error, driver
        self._buffers: dict[int, Any] = {}
        self._capturing: dict[int, list] = {}
        self.graphs_instantiated = self.graphs_destroyed = self.graph_launches = 0

    def _ok(self, *values: Any) -> tuple:
        return (self._Err(0), *values)

    def cudaGetDeviceCount(self):
        if self.count_error:
            return (self._Err(self.count_error), 0)
        return (self._Err(0 if self.count else 100), self.count)

    def cudaDriverGetVersion(self):
        return self._ok(self.driver)

    def cudaGetDeviceProperties(self, device: int):
        return self._ok(self.prop)

    def cudaSetDevice(self, device: int):
        return self._ok()

    # memory and streams
    def _alloc(self, nbytes: int):
        buf = ctypes.create_string_buffer(nbytes)
        self._buffers[ctypes.addressof(buf)] = buf
        return self._ok(ctypes.addressof(buf))

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, ptr: int):
        self._buffers.pop(int(ptr), None)
        return self._ok()

    cudaFreeHost = cudaFree

    def cudaStreamCreateWithFlags(self, flags: int):
        return self._ok(len(self._capturing) + 7)

    def cudaStreamDestroy(self, stream: int):
        return self._ok()

    def cudaStreamSynchronize(self, stream: int):
        return self._ok()

    def enqueue(self, stream: int, work: Any) -> None:
        if int(stream) in self._capturing:
            self._capturing[int(stream)].append(work)
        else:
            work()

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: Any, stream: int):
        self.enqueue(stream, lambda: ctypes.memmove(int(dst), int(src), int(nbytes)))
        return self._ok()

    # graphs
    def cudaStreamBeginCapture(self, stream: int, mode: Any):
        self._capturing[int(stream)] = []
        return self._ok()

    def cudaStreamEndCapture(self, stream: int):
        return self._ok(self._capturing.pop(int(stream)))

    def cudaGraphInstantiateWithFlags(self, graph: list, flags: int):
        assert flags == 0
        self.graphs_instantiated += 1
        return self._ok(tuple(graph))

    def cudaGraphLaunch(self, exe: tuple, stream: int):
        self.graph_launches += 1
        for work in exe:
            work()
        return self._ok()

    def cudaGraphExecDestroy(self, exe: Any):
        self.graphs_destroyed += 1
        return self._ok()

    def cudaGraphDestroy(self, graph: Any):
        return self._ok()


def install_in_process(version: str = "10.8.0.43", *, num_dla_cores: int = 0, gpu: str = "Orin",
                       cc: tuple[int, int] = (8, 7)) -> types.ModuleType:
    """The same as :func:`install` for a fresh child process (no monkeypatch to undo): used by
    tests that run the real CLI in a subprocess with the stand-in in place."""
    from gcf_trt.runtime.backends import tensorrt as backend

    mod = make_tensorrt(version, num_dla_cores)
    sys.modules["tensorrt"] = mod
    fake = mod.cudart = FakeCudart(gpu, *cc)
    backend.import_cudart = lambda: fake
    return mod


def cli_in_subprocess(args: list[str], version: str = "10.8.0.43", timeout: float = 300, **kw: Any):
    """Run ``gcf-trt ARGS`` in a fresh Python with the stand-in installed; the child prints
    ``TORCH_LOADED=True|False`` last (whether anything imported torch).  Returns CompletedProcess."""
    import os
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import trt_standin\n"
            f"trt_standin.install_in_process({version!r}, **{kw!r})\n"
            f"from gcf_trt.cli import main\n"
            f"rc = main({list(args)!r})\n"
            f"print('TORCH_LOADED=' + str('torch' in sys.modules))\n"
            f"sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def install(monkeypatch, version: str = "10.8.0.43", *, num_dla_cores: int = 0, gpu: str = "Orin",
            cc: tuple[int, int] = (8, 7)) -> types.ModuleType:
    """Put a stand-in ``tensorrt`` and a fake CUDA device in place for one test."""
    from gcf_trt.runtime.backends import tensorrt as backend

    mod = make_tensorrt(version, num_dla_cores)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    fake = mod.cudart = FakeCudart(gpu, *cc)
    monkeypatch.setattr(backend, "import_cudart", lambda: fake)
    return mod
