"""The machine a run measured: CPU model and flags, library versions, what the CPU can do natively."""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .timing import error_text

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags_and_model() -> tuple[str, list[str]]:
    model, flags = platform.processor() or "unknown", []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    return model, flags


def cpu_info() -> dict[str, Any]:
    """CPU model, cores and the instruction-set flags that matter for inference."""
    model, flags = _cpu_flags_and_model()
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")) or "vnni" in f or "bf16" in f
                    or f in ("avx2", "fma", "f16c"))
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gb = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    return {"model": model, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "flags": wanted, "memory_gb": mem_gb, "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}"}


def openvino_capabilities() -> list[str] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU, or None without OpenVINO."""
    try:
        from ..runtime.backends.openvino import cpu_capabilities
        return cpu_capabilities()
    except Exception:  # noqa: BLE001 - not installed, or a CPU plugin that cannot start
        return None


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes BF16 natively, and the evidence.

    Without it, torch *emulates* bfloat16 matmuls (issue 12: 8 minutes of a 16-minute run on
    an AVX2-only EPYC) and OpenVINO refuses BF16, so BF16 peaks and engines are skipped.
    """
    caps = openvino_capabilities()
    _, flags = _cpu_flags_and_model()
    have = [f for f in BF16_FLAGS if f in flags]
    if caps is not None and "BF16" in caps:
        return True, f"OpenVINO OPTIMIZATION_CAPABILITIES {caps}"
    if have:
        return True, f"CPU flags {', '.join(have)}"
    evidence = f"OpenVINO OPTIMIZATION_CAPABILITIES {caps}; " if caps is not None else ""
    return False, (f"not supported by this CPU ({evidence}CPU flags lack {' / '.join(BF16_FLAGS)}): "
                   "BF16 would be emulated")


def int8_dot_product() -> str:
    """How this CPU multiplies INT8: VNNI/AMX, or AVX2 (u8s8 without VNNI can saturate).

    The product's rule (:func:`gcf_trt.cpuinfo.has_vnni`), so that a run under
    ``ONEDNN_MAX_CPU_ISA`` (imitating a smaller CPU for OpenVINO) says so instead of reporting
    the flags it hides."""
    from ..cpuinfo import VNNI_FLAGS, has_vnni
    _, flags = _cpu_flags_and_model()
    have = [f for f in VNNI_FLAGS if f in flags]
    if have and has_vnni() is False:
        return (f"avx2: ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')} hides {', '.join(have)} "
                "from OpenVINO (ONNX Runtime picks its kernels by CPUID and still uses them)")
    if have:
        return f"vnni ({', '.join(have)})"
    return "avx2" if "avx2" in flags else "none of avx2 / vnni"


def library_versions() -> dict[str, str]:
    versions = {"gcf_trt": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnx", "onnxruntime", "openvino", "torch", "cv2", "tensorrt", "matplotlib"):
        try:
            module = __import__(name)
        except Exception as exc:  # noqa: BLE001 - half-installed packages raise anything
            versions[name] = f"unavailable ({error_text(exc)})"
            continue
        version = getattr(module, "__version__", None)
        if name == "openvino":
            with contextlib.suppress(Exception):
                version = module.get_version()
        versions[name] = str(version)
    return versions


def machine_info() -> dict[str, Any]:
    """Everything about the machine that a reader of the results needs."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "ONEDNN_MAX_CPU_ISA")
           if k in os.environ}
    bf16, bf16_why = native_bf16()
    return {"cpu": cpu_info(), "versions": library_versions(), "load_average_at_start": load, "env": env,
            "native": {"bf16": bf16, "bf16_evidence": bf16_why, "int8_dot_product": int8_dot_product(),
                       "openvino_capabilities": openvino_capabilities()},
            # a stable, non-identifying tag (hash() is salted per process)
            "hostname_hash": hashlib.sha256(platform.node().encode()).hexdigest()[:8]}
