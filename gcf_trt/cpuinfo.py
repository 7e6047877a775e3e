"""What this CPU can do for INT8, detected, never assumed (torch-free; used at build and load).

Why it matters: on x86 CPUs without VNNI (AVX2-only parts such as many AMD EPYC and older
Xeons) the int8 dot product is ``vpmaddubsw``, which adds two u8*s8 products into a *saturating*
int16.  When both products of a pair are large that sum overflows and the convolution is
silently wrong (ONNX Runtime's quantization docs: "reduce_range ... for non-VNNI machines";
NNCF's ``overflow_fix`` exists for the same reason).  VNNI (``vpdpbusd``, AVX512-VNNI,
AVX-VNNI, AMX) accumulates in int32 and has no such limit; ARM's ``sdot`` neither.

Measured on a real AVX2-only EPYC (docs/INT8.md): with signed activations it saturates (4 points
of agreement lost); with the CPU graph's unsigned activations the 8-bit graph agrees exactly as
on a VNNI CPU, and 7-bit weights only cost agreement.  So the build writes 8-bit weights
everywhere and lets its gate, which runs this CPU's kernels, judge.  What this module guards is
an INT8 engine gated on a VNNI CPU and then run on one without VNNI: its kernels were never
measured there, so it refuses to load (:mod:`gcf_trt.runtime.engines`).

``ONEDNN_MAX_CPU_ISA`` (oneDNN, hence OpenVINO's CPU plugin) lowers the ISA the kernels use;
when it names an ISA without VNNI we treat the CPU as one without VNNI, so that a test can
imitate an AVX2-only CPU on a bigger one (checked: OpenVINO then reports ``isa:Intel AVX2``
and a signed-activation graph loses accuracy as on an AVX2-only EPYC).
"""
from __future__ import annotations

import functools
import os
import platform

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8")
# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that include a VNNI int8 dot product.
_ONEDNN_VNNI_ISAS = ("AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                     "AVX512_CORE_AMX_FP16", "AVX2_VNNI", "AVX2_VNNI_2", "AVX10_1_512",
                     "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "ALL")

# ... and those that include BF16 compute (OpenVINO's BF16 inference precision needs one).
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX2_VNNI_2", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "ALL")


def _onednn_limit() -> str:
    """``ONEDNN_MAX_CPU_ISA`` as oneDNN reads it (case-insensitive), or ``""``."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()


def onednn_limit_hides_bf16() -> str | None:
    """``ONEDNN_MAX_CPU_ISA``'s value when it sets oneDNN (OpenVINO's CPU kernels) below any ISA
    with BF16 compute, else None.  The CPU's flags still say BF16 then, and so does OpenVINO's
    capability list, but a BF16 engine fails at its first inference."""
    limit = _onednn_limit()
    return limit if limit and limit not in _ONEDNN_BF16_ISAS else None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux ``/proc/cpuinfo``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def has_vnni() -> bool | None:
    """True/False on x86 Linux; None where the flags cannot be read (then assume no VNNI)."""
    if not is_x86():
        return None
    limit = _onednn_limit()
    if limit and limit not in _ONEDNN_VNNI_ISAS:
        return False
    flags = cpu_flags()
    if not flags:
        return None
    return any(f in flags for f in VNNI_FLAGS)


def int8_saturation_risk() -> bool:
    """Whether int8 dot products here go through saturating int16 pairs (x86 without VNNI, or
    unknown x86), so that INT8 results measured on a VNNI CPU do not carry over."""
    return is_x86() and not has_vnni()


def int8_capability() -> dict[str, object]:
    """A record for manifests and bench results: what was detected and what follows."""
    vnni = has_vnni()
    risk = int8_saturation_risk()
    return {
        "machine": platform.machine(),
        "vnni": vnni,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "int8_dot_product": ("vnni (int32 accumulation)" if vnni else
                             "vpmaddubsw (int16 pair sums: can saturate; gated on this CPU)" if risk else
                             "no x86 saturation issue (not x86)"),
    }
