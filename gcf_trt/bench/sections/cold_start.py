"""Cold start (import + load + first prediction) and peak RSS of a fresh runtime process."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..timing import Deadline, error_text

# ru_maxrss survives execve on Linux: a child exec'd straight from this (large) benchmark process
# would report the parent's peak.  A /bin/sh in between forks a fresh, small address space, so the
# grandchild's ru_maxrss is its own; /proc/self/status VmHWM is recorded as a cross-check.
_SPAWN = 'exec_python="$1"; shift; "$exec_python" "$@"; rc=$?; exit $rc'
KEYS = ("import_s", "load_s", "first_prediction_s", "in_process_s", "process_s", "maxrss_mb", "maxrss_first_mb")


def probe(engines_dir: Path, options: dict[str, Any] | None = None, runtime: str | None = None) -> dict[str, Any]:
    """One fresh process (:mod:`gcf_trt.bench.cold_child`); ``process_s`` is measured here, from
    spawning the interpreter to its first prediction, so it includes Python's own start-up."""
    import time
    cmd = ["/bin/sh", "-c", _SPAWN, "sh", sys.executable, "-m", "gcf_trt.bench.cold_child", str(engines_dir),
           json.dumps(options) if options else "", runtime or ""]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result, elapsed = None, None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("GCF_FIRST_PREDICTION"):
            elapsed = time.perf_counter() - t0
        elif line.startswith("GCF_COLD_START "):
            result = json.loads(line.split(" ", 1)[1])
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"cold-start child failed ({proc.returncode}): {err.strip()[-500:]}")
    result["process_s"] = elapsed
    return result


def cold_start(engines_dir: Path, repeats: int = 3, *, options: dict[str, Any] | None = None,
               prime: bool = False, runtime: str | None = None,
               deadline: Deadline | None = None) -> dict[str, Any]:
    """Median of ``repeats`` fresh processes (fewer once ``deadline`` passed, at least one).

    Args:
        options: backend options for every component (e.g. an OpenVINO ``cache_dir``).
        prime: one unmeasured start first (fills a model cache); its figures are kept as ``first``.
        runtime: force one runtime for every component (``load_engines(runtime=...)``).
    """
    deadline = deadline or Deadline(None)
    first = probe(engines_dir, options, runtime) if prime else None
    runs = []
    for _ in range(max(1, repeats)):
        runs.append(probe(engines_dir, options, runtime))
        if deadline.expired:
            break
    med = {k: float(np.median([r[k] for r in runs])) for k in KEYS}
    hwm = [r["vmhwm_mb"] for r in runs if r.get("vmhwm_mb")]
    return {**med, "vmhwm_mb": float(np.median(hwm)) if hwm else None, "runs": runs, "first": first,
            "torch_imported": any(r["torch_imported"] for r in runs), "options": options or {},
            "runtime_forced": runtime, "engines": {"backbone": runs[0]["backbone"], "head": runs[0]["head"]},
            "modules_loaded": runs[0]["modules"],
            "method": "fresh process (python -m gcf_trt.bench.cold_child, via /bin/sh so ru_maxrss is not "
                      "the parent's) importing gcf_trt.runtime.stream only; ru_maxrss after the first "
                      "prediction + 3 more"}


def section(ctx) -> dict[str, Any]:
    """First start (empty model cache) and warm start (cache filled by the first) of the engines
    a user gets; in a full run also the same files forced onto ONNX Runtime."""
    cache = Path(tempfile.mkdtemp(prefix="ov-cache-", dir=ctx.work))
    options = {"cache_dir": str(cache)}
    out = cold_start(ctx.engines_dir, ctx.config.cold_start_repeats, options=options, prime=True,
                     deadline=ctx.deadline)
    out["note"] = ("first start: a fresh process with an empty OpenVINO CACHE_DIR (compiles the graphs); "
                   "warm: the following starts with that cache filled (ONNX Runtime has no compile cache: "
                   "both are plain starts)")
    out["first_start_s"] = out["first"]["process_s"]
    out["variants"] = {}
    if not ctx.config.quick:
        variants = [("onnxruntime_chosen_files", ctx.engines_dir, "onnxruntime",
                     "the chosen engine files forced onto ONNX Runtime (load_engines(runtime='onnxruntime'))"),
                    ("onnxruntime_fp32", ctx.builds.fp32.dir, "onnxruntime", "the FP32 build's files on ONNX Runtime")]
        for name, directory, runtime, note in variants:
            if ctx.deadline.expired:
                out["variants"][name] = {"unavailable": "skipped: the section's time budget was spent", "note": note}
                continue
            try:
                out["variants"][name] = {**cold_start(directory, 2, runtime=runtime, deadline=ctx.deadline),
                                         "note": note}
            except Exception as exc:  # noqa: BLE001
                out["variants"][name] = {"unavailable": error_text(exc), "note": note}
    return out
