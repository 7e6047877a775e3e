"""``gcf-trt bench``: every backend and every figure of the product, side by side in one run.

Layout (docs/BENCHMARKS.md):

* :mod:`.timing` - latency statistics, interleaved round-robin timing, section budgets;
* :mod:`.machine` - CPU, flags, versions, what the CPU does natively (BF16, INT8 VNNI);
* :mod:`.fixtures` - the benchmarked checkpoint and the videos;
* :mod:`.engines` - builds through :func:`gcf_trt.compile.build.build_engines`, the candidates;
* :mod:`.sections` - one module per section (latency, streaming, end_to_end, multistream,
  openvino_benchmark, cold_start, roofline, ort_sweep, agreement, whatif);
* :mod:`.config` / :mod:`.runner` - what a run does and the orchestration;
* :mod:`.report`, :mod:`.tables` (latest.md), :mod:`.plots` - headline figures, targets, files.

Attributes are imported on first use (PEP 562), so ``python -m gcf_trt.bench.cold_child``
(the cold-start probe) pays for none of this.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "config", "SECTIONS": "config", "FULL_BUDGETS": "config",
    "run": "runner", "benchmark": "runner", "summary_lines": "report", "summarize": "timing", "interleaved": "timing", "Deadline": "timing",
    "TARGETS": "report", "HEADLINE_KEYS": "report", "headline": "report", "evaluate_targets": "report",
    "write_results": "report", "read_results": "report", "replot": "report", "markdown": "tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
