"""TensorRT backend: runs a serialized plan on a CUDA GPU (TensorRT 8.5/8.6, 10.x, 11.x).

torch-free, pycuda-free: device memory, streams and CUDA graphs come from cuda-python
(``cuda.bindings.runtime``, or ``cuda.cudart`` on cuda-python < 12.6).  Importing this module
never imports tensorrt or cuda-python; they are imported when a backend is created or
:meth:`TensorRTBackend.check_available` runs, so ``import gcf_trt`` works without them.

Execution uses the name-based tensor API (``num_io_tensors`` / ``get_tensor_name`` /
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), the only one in
TensorRT 10 and 11 ("Appendix: Migrating Python Code from TensorRT 8.x to 10.x", name-based
tensor API and enqueueV3) and introduced in 8.5 (TensorRT 8.5.1 API reference, "API Changes For
TensorRT 8.5.1"; Paddle-TRT's enqueueV3 port, PaddlePaddle PR #60807, requires TensorRT >= 8.5),
hence ``MIN_VERSION``.  Buffers are allocated once for
the optimization profile's maximum batch; host staging buffers are pinned
(``cudaMallocHost``) so the copies are truly asynchronous.

Plan identity: a plan only runs on the TensorRT version and the GPU it was built with.  Its
file name carries both (``backbone.<modelhash>.fp16.trt10.8.sm87.plan``), the manifest passes
the full identity as the ``built_for`` option, and :func:`check_plan_identity` refuses a
mismatch with :class:`~gcf_trt.errors.EngineError` *before* deserializing.

Not verified here: no engine was ever deserialized or run on the machine this was written on
(no GPU, TensorRT not installable).  ``tests/runtime/backends/test_trt_gpu.py`` exercises all of it where a GPU
and TensorRT exist; the identity checks are tested without a GPU (tests/compile/test_trt_config.py).
"""
from __future__ import annotations

import ctypes
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ...errors import BackendUnavailable, EngineError, InputError
from .base import Backend

if TYPE_CHECKING:  # tensorrt-stubs, for mypy (scripts/check_trt_types.sh); never imported here
    import tensorrt as trt

INSTALL_HINT = ("TensorRT needs an NVIDIA GPU: pip install 'gcf-trt[trt-cu12]' (CUDA 12 driver >= 525) or "
                "'gcf-trt[trt-cu13]' (driver >= 580); on Jetson (JetPack 6, CUDA 12) TensorRT comes with "
                "JetPack and you add pip install 'cuda-python>=12,<13'; or build and run with --target cpu")
CUDA_ERROR_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver
CUDA_ERROR_NO_DEVICE = 100           # cudaErrorNoDevice
MIN_VERSION = (8, 5)  # execute_async_v3 / name-based tensor API
MAX_GRAPHS = 8        # CUDA graphs (one execution context each) kept per backend
PLAN_RE = re.compile(r"^(?P<component>[a-z]+)\.(?P<model>[0-9a-f]+)\.(?P<precision>[a-z0-9]+)"
                     r"\.trt(?P<major>\d+)\.(?P<minor>\d+)\.sm(?P<sm>\d+)\.plan$")


# ----------------------------------------------------------------------------- imports
def import_tensorrt() -> Any:
    """``import tensorrt`` or BackendUnavailable naming what to install.

    ImportError, not only ModuleNotFoundError: a half-installed tensorrt raises ImportError
    when it cannot load libnvinfer.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed or cannot load its libraries ({exc})",
                                 hint=INSTALL_HINT) from exc
    if version_tuple(trt.__version__)[:2] < MIN_VERSION:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is too old; gcf-trt needs >= 8.5 "
                                 f"(name-based tensor API, execute_async_v3)", hint=INSTALL_HINT)
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (new layout first, then the < 12.6 one)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed ({exc})",
                                     hint="pip install 'cuda-python>=12,<13' for a CUDA 12 driver (JetPack 6, "
                                          "driver < 580) or 'cuda-python>=13,<14' (driver >= 580); no pycuda "
                                          "needed") from exc
    return cudart


def cuda_check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple; raise EngineError on an error code."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        raise EngineError(f"CUDA error in {what}: {getattr(err, 'name', err)} ({int(err)})",
                          hint="check the GPU and driver (nvidia-smi / tegrastats) and that no other "
                               "process holds all device memory")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# ----------------------------------------------------------------------------- identity
def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])


def cuda_python_version() -> str:
    """The installed cuda-python distribution's version ("unknown" if its metadata is absent)."""
    from importlib import metadata
    for dist in ("cuda-python", "cuda-bindings"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def driver_cuda_version(cudart: Any) -> str | None:
    """The CUDA version the installed driver supports ("12.2"), None if it does not say."""
    try:
        err, version = cudart.cudaDriverGetVersion()
    except Exception:  # noqa: BLE001 - a stand-in or an odd binding: the message just omits it
        return None
    if int(err) != 0 or not version:
        return None
    return f"{int(version) // 1000}.{int(version) % 1000 // 10}"


def device_identity(cudart: Any, device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA device; BackendUnavailable when there is none.

    A driver older than cuda-python's CUDA major (cuda-python 13 needs driver >= 580; JetPack 6
    and many hosts have CUDA 12 drivers) is reported as exactly that, with the install to fix it.
    """
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == CUDA_ERROR_INSUFFICIENT_DRIVER:
        bindings = cuda_python_version()
        major = bindings.split(".")[0]
        driver = driver_cuda_version(cudart)
        raise BackendUnavailable(
            f"the NVIDIA driver is too old for cuda-python {bindings}"
            + (f" (the driver supports CUDA {driver}, these bindings need CUDA {major})" if driver else "")
            + " (cudaGetDeviceCount: cudaErrorInsufficientDriver)",
            hint="install the cuda-python of the driver's CUDA major: pip install 'gcf-trt[trt-cu12]' "
                 "(cuda-python>=12,<13; JetPack 6, drivers < 580), or upgrade the driver")
    if int(err) != 0 or not count:
        raise BackendUnavailable(f"no CUDA device answers (cudaGetDeviceCount: {getattr(err, 'name', err)})",
                                 hint="TensorRT needs an NVIDIA GPU and its driver; build with --target cpu")
    if device >= count:
        raise InputError(f"CUDA device {device} does not exist ({count} device(s))")
    prop = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    name = name.split("\x00", 1)[0].strip()
    return {"gpu": name, "compute_capability": f"{prop.major}.{prop.minor}",
            "sm": f"{prop.major}{prop.minor}"}


def runtime_identity(trt: Any, cudart: Any, device: int = 0) -> dict[str, Any]:
    """What a plan must match to run here: TensorRT version and the GPU."""
    return {"tensorrt": ".".join(str(v) for v in version_tuple(trt.__version__)), **device_identity(cudart, device)}


def plan_name(component: str, model_hash: str, precision: str, tensorrt: str, sm: str) -> str:
    """``backbone.<modelhash>.fp16.trt10.8.sm87.plan``: everything the plan depends on."""
    major, minor = version_tuple(tensorrt)[:2]
    return f"{component}.{model_hash}.{precision}.trt{major}.{minor}.sm{sm}.plan"


def parse_plan_name(name: str) -> dict[str, str] | None:
    m = PLAN_RE.match(Path(name).name)
    return m.groupdict() if m else None


def check_plan_identity(path: Path, built_for: Mapping[str, Any] | None, here: Mapping[str, Any]) -> None:
    """Refuse (EngineError, "rebuild") a plan made for another TensorRT, GPU or model.

    ``built_for`` is the manifest's record (``tensorrt``, ``gpu``, ``sm``, ``model_hash``,
    ``precision``); without it the file name is used.  ``here`` is :func:`runtime_identity`.
    """
    rebuild = ("rebuild the engines on this machine: gcf-trt build --target trt --checkpoint CKPT "
               "--out DIR (a TensorRT plan runs only with the TensorRT version and GPU it was built with)")
    parsed = parse_plan_name(path.name)
    if built_for is None and parsed is None:
        raise EngineError(f"{path.name}: cannot tell which TensorRT version and GPU this plan was built for "
                          f"(no manifest record, unexpected file name)", hint=rebuild)
    if parsed is not None and built_for is not None:
        if built_for.get("model_hash") and parsed["model"] != built_for["model_hash"]:
            raise EngineError(f"{path.name} was built for model {parsed['model']}, the manifest says "
                              f"{built_for['model_hash']}", hint=rebuild)
    if built_for is not None and built_for.get("tensorrt"):
        want = version_tuple(str(built_for["tensorrt"]))
        have = version_tuple(str(here["tensorrt"]))
        same = want == have if len(want) >= 3 else want[:2] == have[:2]
    else:
        assert parsed is not None
        want = (int(parsed["major"]), int(parsed["minor"]))
        have = version_tuple(str(here["tensorrt"]))
        same = want == have[:2]
    if not same:
        raise EngineError(f"{path.name} was built with TensorRT {'.'.join(map(str, want))}, this machine has "
                          f"TensorRT {here['tensorrt']}", hint=rebuild)
    want_sm = str(built_for.get("sm")) if built_for is not None and built_for.get("sm") else (
        parsed["sm"] if parsed is not None else None)
    if want_sm is not None and want_sm != str(here["sm"]):
        raise EngineError(f"{path.name} was built for compute capability sm{want_sm}, this GPU "
                          f"({here['gpu']}) is sm{here['sm']}", hint=rebuild)
    want_gpu = built_for.get("gpu") if built_for is not None else None
    if want_gpu and want_gpu != here["gpu"]:
        raise EngineError(f"{path.name} was built on a {want_gpu}, this GPU is a {here['gpu']}", hint=rebuild)


# ----------------------------------------------------------------------------- backend
def _dims(dims: Any) -> tuple[int, ...]:
    """``trt.Dims`` -> tuple (Dims supports len() and indexing)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


class _PinnedArray:
    """A pinned (page-locked) host buffer viewed as a numpy array."""

    def __init__(self, cudart: Any, nbytes: int, dtype: np.dtype):
        self.ptr = cuda_check(cudart.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost")
        raw = ctypes.cast(int(self.ptr), ctypes.POINTER(ctypes.c_ubyte))
        self.array = np.ctypeslib.as_array(raw, shape=(max(nbytes, 1),))[:nbytes].view(dtype)


class TensorRTBackend(Backend):
    """One TensorRT plan on one CUDA device, same interface as the ONNX Runtime backend.

    Options:
        built_for: the manifest's identity record (see :func:`check_plan_identity`).
        precision: what the plan computes in (default: from ``built_for`` or the file name).
        device: CUDA device index (default 0).
        cuda_graph: capture ``execute_async_v3`` in a CUDA graph, one per input shape, each on
            its own execution context, and replay it (less CPU launch overhead; useful on
            Jetson).  Copies stay outside the graph.  Default False.
    """

    runtime = "tensorrt"

    def __init__(self, path: Path, built_for: Mapping[str, Any] | None = None, precision: str | None = None,
                 device: int = 0, cuda_graph: bool = False, **options: Any):
        super().__init__(path, built_for=built_for, precision=precision, device=device, cuda_graph=cuda_graph,
                         **options)
        self._closed = True
        import_tensorrt()  # BackendUnavailable with what to install
        import tensorrt as trt
        cudart = self._cudart = import_cudart()
        if not self.path.is_file():
            raise EngineError(f"TensorRT plan {self.path} does not exist")
        check_plan_identity(self.path, built_for, runtime_identity(trt, cudart, device))
        parsed = parse_plan_name(self.path.name) or {}
        self.precision = precision or (built_for or {}).get("precision") or parsed.get("precision") or "fp32"
        self._cuda_graph = bool(cuda_graph)
        cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice")

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime: trt.Runtime | None = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineError(f"TensorRT could not deserialize {self.path} (see the TensorRT log above)",
                              hint="rebuild the engines with 'gcf-trt build --target trt'")
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.path}")
        self._engine: trt.ICudaEngine | None = engine
        self._context: trt.IExecutionContext | None = context
        self._device_ptrs: list[int] = []
        self._host: dict[str, _PinnedArray] = {}
        # input shapes -> (execution context, graph, graph exec); see _launch_graph
        self._graphs: OrderedDict[tuple, tuple[Any, Any, Any]] = OrderedDict()
        self._stream = cuda_check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags")
        self._closed = False
        try:
            self._setup(engine, context)
        except BaseException:
            self.close()
            raise

    def _setup(self, engine: trt.ICudaEngine, ctx: trt.IExecutionContext) -> None:
        import tensorrt as trt
        cudart = self._cudart
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._min_batch, self._max_batch = 1, None
        for n in self._inputs:
            shape = _dims(engine.get_tensor_shape(n))
            self.input_shapes[n] = shape
            if -1 in shape:
                # get_tensor_profile_shape -> [min, opt, max] of profile 0
                lo, _, hi = (_dims(s) for s in engine.get_tensor_profile_shape(n, 0))
                self._min_batch = max(self._min_batch, lo[0])
                self._max_batch = hi[0] if self._max_batch is None else min(self._max_batch, hi[0])
                if not ctx.set_input_shape(n, hi):
                    raise EngineError(f"{self.path.name}: cannot set input {n} to its profile maximum {hi}")
        for n in self._outputs:
            self.output_shapes[n] = _dims(engine.get_tensor_shape(n))
        # Every buffer once, at the profile's maximum (output shapes resolved by the context).
        for n in names:
            shape = _dims(ctx.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.path.name}: tensor {n} has unresolved shape {shape}")
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtype[n].itemsize
            ptr = cuda_check(cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
            self._device_ptrs.append(int(ptr))
            if not ctx.set_tensor_address(n, int(ptr)):
                raise EngineError(f"{self.path.name}: set_tensor_address({n}) failed")
            self._host[n] = _PinnedArray(cudart, nbytes, self._dtype[n])
        self._dev = dict(zip(names, self._device_ptrs))
        self._shapes: dict[str, tuple[int, ...]] = {}

    @classmethod
    def check_available(cls) -> None:
        trt = import_tensorrt()
        device_identity(import_cudart())
        del trt

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed or self._context is None:
            raise EngineError(f"{self.path.name}: backend is closed")
        cudart, stream = self._cudart, self._stream
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise InputError(f"{self.path.name}: missing input(s) {', '.join(missing)}")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        shapes: dict[str, tuple[int, ...]] = {}
        for n in self._inputs:
            arr = np.ascontiguousarray(feeds[n], dtype=self._dtype[n])
            want = self.input_shapes[n]
            if len(arr.shape) != len(want) or any(w not in (-1, a) for w, a in zip(want, arr.shape)):
                raise InputError(f"{self.path.name}: input {n} has shape {arr.shape}, expected {want}")
            if self._max_batch is not None and not self._min_batch <= arr.shape[0] <= self._max_batch:
                raise InputError(f"{self.path.name}: batch {arr.shape[0]} is outside the engine's profile "
                                 f"[{self._min_batch}, {self._max_batch}]",
                                 hint="rebuild with a larger --max-batch, or feed smaller batches")
            host = self._host[n].array
            host[:arr.size] = arr.reshape(-1)
            cuda_check(cudart.cudaMemcpyAsync(self._dev[n], self._host[n].ptr, arr.nbytes, h2d, stream),
                       "cudaMemcpyAsync(H2D)")
            shapes[n] = tuple(arr.shape)
        if self._cuda_graph:
            ctx = self._launch_graph(shapes)
        else:
            ctx = self._context
            for n, shape in shapes.items():
                if self._shapes.get(n) != shape:
                    if not ctx.set_input_shape(n, shape):
                        raise InputError(f"{self.path.name}: TensorRT refused shape {shape} for {n}")
                    self._shapes[n] = shape
            if not ctx.execute_async_v3(int(stream)):
                raise EngineError(f"{self.path.name}: execute_async_v3 failed (see the TensorRT log)")
        out_shapes = {n: _dims(ctx.get_tensor_shape(n)) for n in self._outputs}
        for n in self._outputs:
            nbytes = int(np.prod(out_shapes[n], dtype=np.int64)) * self._dtype[n].itemsize
            cuda_check(cudart.cudaMemcpyAsync(self._host[n].ptr, self._dev[n], nbytes, d2h, stream),
                       "cudaMemcpyAsync(D2H)")
        cuda_check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        result = {}
        for n in self._outputs:
            count = int(np.prod(out_shapes[n], dtype=np.int64))
            result[n] = self._host[n].array[:count].reshape(out_shapes[n]).copy()  # caller owns it
        return result

    def _launch_graph(self, shapes: Mapping[str, tuple[int, ...]]) -> Any:
        """Replay the CUDA graph for these input shapes (captured on first use); returns its context.

        Each captured shape has its own execution context, shaped once and never re-shaped: a
        graph records the kernels and launch parameters of the shape it was captured with, and
        TensorRT does not promise that replaying it is valid after its context was re-shaped
        (Torch-TensorRT documents a recorded graph as invalid for another shape).  Contexts
        share the I/O buffers (one stream, so runs never overlap); each holds its own activation
        memory, hence at most ``MAX_GRAPHS`` of them (least recently used one dropped).
        One plain ``execute_async_v3`` runs before capture: the first enqueue after a shape is
        set does setup work that must not be captured.
        """
        cudart, stream, engine = self._cudart, self._stream, self._engine
        assert engine is not None
        key = tuple(shapes[n] for n in self._inputs)
        if key in self._graphs:
            self._graphs.move_to_end(key)
            captured = self._graphs[key]
        else:
            while len(self._graphs) >= MAX_GRAPHS:
                self._destroy_graph(self._graphs.popitem(last=False)[1])
            ctx = engine.create_execution_context()
            if ctx is None:
                raise EngineError(f"{self.path.name}: TensorRT could not create an execution context for a "
                                  f"CUDA graph (device memory?)", hint="run without cuda_graph=True")
            for n, shape in shapes.items():
                if not ctx.set_input_shape(n, shape):
                    raise InputError(f"{self.path.name}: TensorRT refused shape {shape} for {n}")
            for n, ptr in self._dev.items():
                if not ctx.set_tensor_address(n, ptr):
                    raise EngineError(f"{self.path.name}: set_tensor_address({n}) failed")
            if not ctx.execute_async_v3(int(stream)):
                raise EngineError(f"{self.path.name}: execute_async_v3 failed before graph capture")
            cuda_check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
            cuda_check(cudart.cudaStreamBeginCapture(
                stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
            ok = ctx.execute_async_v3(int(stream))
            graph = cuda_check(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            if not ok:
                cudart.cudaGraphDestroy(graph)
                raise EngineError(f"{self.path.name}: this engine cannot be captured in a CUDA graph",
                                  hint="run without cuda_graph=True")
            # cudaGraphInstantiateWithFlags has one signature in CUDA 11, 12 and 13 (plain
            # cudaGraphInstantiate changed its arguments in CUDA 12).
            exe = cuda_check(cudart.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiateWithFlags")
            captured = self._graphs[key] = (ctx, graph, exe)
        cuda_check(cudart.cudaGraphLaunch(captured[2], stream), "cudaGraphLaunch")
        return captured[0]

    def _destroy_graph(self, captured: tuple[Any, Any, Any]) -> None:
        ctx, graph, exe = captured
        self._cudart.cudaGraphExecDestroy(exe)
        self._cudart.cudaGraphDestroy(graph)
        del ctx  # the context's activation memory goes with its last reference

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        cudart = self._cudart
        try:
            cudart.cudaStreamSynchronize(self._stream)
        finally:
            for captured in self._graphs.values():
                self._destroy_graph(captured)
            self._graphs.clear()
            for ptr in self._device_ptrs:
                cudart.cudaFree(ptr)
            self._device_ptrs = []
            for pinned in self._host.values():
                cudart.cudaFreeHost(pinned.ptr)
            self._host = {}
            cudart.cudaStreamDestroy(self._stream)
            self._context = None
            self._engine = None
            self._runtime = None

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
