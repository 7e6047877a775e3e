"""One benchmark run: the model, the builds, then every section under its time budget."""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import SECTIONS, USES_CANDIDATES, Config, Context
from ..errors import GcfError
from .timing import Deadline, error_text

NOISY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "onnxruntime", "root", "matplotlib")
# section name -> module under gcf_trt.bench.sections and its function
_SECTION_FNS = {"backbone": ("latency", "section_backbone"), "head": ("latency", "section_head"),
                "streaming": ("streaming", "section"), "whatif": ("whatif", "section"),
                "end_to_end": ("end_to_end", "section"), "multistream": ("multistream", "section"),
                "openvino_benchmark": ("openvino_benchmark", "section"), "cold_start": ("cold_start", "section"),
                "roofline": ("roofline", "section"), "ort_sweep": ("ort_sweep", "section"),
                "agreement": ("agreement", "section")}
assert set(_SECTION_FNS) == set(SECTIONS)


def section_fn(name: str) -> Callable[[Context], Any]:
    module, fn = _SECTION_FNS[name]
    return getattr(importlib.import_module(f"gcf_trt.bench.sections.{module}"), fn)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    import logging
    import warnings
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _timed(results: dict[str, Any], name: str, budget: float | None, say, fn: Callable[[Deadline], Any],
           reraise: tuple[type[BaseException], ...] = ()) -> Any:
    """Run one section under its budget; a failure is recorded (the others still run)."""
    deadline = Deadline(budget)
    try:
        value = fn(deadline)
    except reraise:
        raise
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
        say(f"section {name} failed: {error_text(exc)}")
        results.setdefault("errors", {})[name] = {"error": error_text(exc),
                                                   "traceback": traceback.format_exc().splitlines()[-6:]}
        value = None
    took = round(deadline.elapsed(), 1)
    results.setdefault("section_seconds", {})[name] = took
    results.setdefault("section_budgets", {})[name] = budget
    if budget is not None and took > budget * 1.1 + 1:
        results.setdefault("over_budget", {})[name] = {"budget_s": budget, "took_s": took}
        say(f"section {name} took {took:.0f} s, over its {budget:.0f} s budget")
    return value


def benchmark(config: Config, say: Callable[[str], None] = print) -> tuple[dict[str, Any], list[Path]]:
    """Run the benchmark and write its files into ``config.out``; returns the results and the files."""
    from .report import write_results
    results = run(config, say)
    return results, write_results(results, config.out, make_plots=config.plots)


def run(config: Config, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; returns the results dict (written by :func:`gcf_trt.bench.report.write_results`).

    Engines and videos go to ``config.work``, kept; without one, to a temporary directory that
    is removed at the end (a full run writes several hundred MB there).
    """
    with _quiet_logs():
        if config.work is not None:
            return _run(config, say, config.work)
        with tempfile.TemporaryDirectory(prefix="gcf-bench-") as tmp:
            return _run(config, say, Path(tmp))


def _run(config: Config, say: Callable[[str], None], work: Path) -> dict[str, Any]:
    from . import engines as eng
    from .engines import calibration_options
    from .fixtures import QUICK_SPEC, calibration_videos, random_checkpoint
    from .machine import machine_info, native_bf16
    from .report import HEADLINE_KEYS, RESULTS_VERSION, evaluate_targets, headline
    t_start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "format": "gcf-trt-bench", "version": RESULTS_VERSION, "quick": config.quick,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(), "method": {
            "interleaving": "round-robin, one call per candidate per round, start rotated every round",
            "warmup_rounds": config.warmup, "warmup_seconds": config.warmup_seconds,
            "rounds": config.iters, "duration_s_per_comparison": config.duration,
            "timer": "time.perf_counter", "batch": 1, "threads": "every runtime uses all cores (its default)",
            "budgets": "every section stops timing at its budget (section_budgets); over_budget lists any that ran over",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (GNU OpenMP default: active)"),
            "torch_imported_before_run": "torch" in sys.modules}}
    say(f"gcf-trt bench ({'quick' if config.quick else 'full'}), work dir {work}")

    def builds_step(deadline: Deadline) -> Context:
        if config.checkpoint:
            checkpoint, weights = config.checkpoint, f"checkpoint {config.checkpoint.name}"
        else:
            checkpoint = random_checkpoint(work / "model.pt", dict(QUICK_SPEC) if config.quick else {})
            weights = "random weights (speed does not depend on the weights)"
        from ..compile.model import load_checkpoint
        model = load_checkpoint(checkpoint).eval()
        results["model"] = {"spec": model.spec.to_dict(), "weights": weights, "checkpoint": str(checkpoint)}
        calib = work / "calib"
        clips = calibration_videos(calib, model.spec, calibration_options(config.build_options), seed=9001)
        say(f"wrote calibration videos for {clips} clips (gcf_trt.data.make_videos)")
        builds = eng.prepare(checkpoint, work / "engines", calib, say, build_options=config.build_options)
        builds.trt = eng.tensorrt_builds(checkpoint, work / "engines", calib, say)
        results["builds"] = builds.record()
        return Context(config, work, say, Path(checkpoint), model, builds, calib, results=results)

    # Bad input (a checkpoint that is not one, ...) is the user's to fix: one error line, not a report.
    ctx = _timed(results, "builds", config.budgets.get("builds"), say, builds_step, reraise=(GcfError,))
    if ctx is None:  # nothing can be measured without the FP32 build
        return _finish(results, t_start, headline, evaluate_targets, HEADLINE_KEYS)
    ctx.candidates = eng.candidates(ctx.builds, bf16=native_bf16())
    if any(s in config.sections for s in USES_CANDIDATES):
        say("loading backends")
        ctx.fns = eng.open_candidates(ctx.candidates, ctx.spec, lambda: ctx.model.backbone.eval(), say)
    try:
        for name in config.sections:
            if name not in USES_CANDIDATES and ctx.fns:  # free the in-process engines before the rest
                eng.close_candidates(ctx.candidates)
                ctx.fns = {}

            def step(deadline: Deadline, name=name):
                ctx.deadline = deadline
                return section_fn(name)(ctx)
            value = _timed(results, name, config.budgets.get(name), say, step)
            if value is not None:
                results[name] = value
    finally:
        eng.close_candidates(ctx.candidates)
    return _finish(results, t_start, headline, evaluate_targets, HEADLINE_KEYS)


def _finish(results, t_start, headline, evaluate_targets, keys) -> dict[str, Any]:
    # measured before the headline (plots and files, written after, take a few more seconds)
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    results["headline"] = headline(results)
    results["targets"] = evaluate_targets(results["headline"])
    # The headline figures also at the top level of latest.json (null when not measurable here;
    # the reason is in headline.notes or errors).
    results.update({k: results["headline"].get(k) for k in keys})
    return results
