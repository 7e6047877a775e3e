"""``gcf-trt bench``: every backend side by side in one run (see docs/BENCHMARKS.md)."""
from __future__ import annotations

import argparse
import os

from ..bench.config import SECTIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark every backend side by side (latency, streaming, "
                                     "end to end, multi-stream, footprint, INT8 agreement, roofline)")
    p.add_argument("--quick", action="store_true",
                   help="tiny model and counts (under a minute): proves the harness works, not speed")
    p.add_argument("--out", default=None,
                   help="results directory (default: benchmarks/results for a full run of every section, a "
                        "temporary directory for --quick or --sections, so a partial run never overwrites "
                        "the committed results)")
    p.add_argument("--work-dir", default=None,
                   help="where engines and videos are built, kept (default: a temporary directory, removed)")
    p.add_argument("--checkpoint", default=None,
                   help="the model to benchmark: speed and INT8 agreement are both measured on it (default: "
                        "the bundled trained benchmark model, edge3d width 32, 16x112x112, N=8)")
    p.add_argument("--random-weights", action="store_true",
                   help="benchmark random weights at the default model size (edge3d width 32, 1.8 GFLOPs "
                        "per clip) instead; INT8 agreement then comes from the bundled trained demo model")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per interleaved comparison in a full run (default 20; every section "
                        "also stops at its time budget)")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of: {','.join(SECTIONS)}")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--replot", metavar="DIR", default=None,
                   help="measure nothing: re-render latest.md and the plots of DIR from its latest.json")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any section raised (CI); an unavailable backend is not an error")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    # Before torch is imported: GNU OpenMP's default active wait makes torch eager 10x slower
    # whenever another process holds a core (1.4 s vs 0.11 s per clip on 2 busy cores), which
    # would flatter every engine's speedup over it.  PASSIVE is the fair baseline; an explicit
    # OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..bench import Config, benchmark, replot, summary_lines
    if args.replot:
        print("\n".join(f"wrote {f}" for f in replot(args.replot)))
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    config = Config(args.quick, out=args.out, work=args.work_dir, checkpoint=args.checkpoint,
                    duration=args.duration, plots=not args.no_plots, sections=sections,
                    random_weights=args.random_weights)
    results, files = benchmark(config, say=lambda m: print(m, flush=True))
    print("\n".join(summary_lines(results, files)))
    return 1 if args.strict and results.get("errors") else 0
