"""``gcf-trt bench``: every backend side by side in one run (see docs/BENCHMARKS.md)."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark every backend side by side (latency, streaming, "
                                     "end to end, footprint, roofline)")
    p.add_argument("--quick", action="store_true",
                   help="tiny model and counts (under a minute): proves the harness works, not speed")
    p.add_argument("--out", default=None,
                   help="results directory (default: benchmarks/results for a full run, a temporary "
                        "directory for --quick so committed results are not overwritten)")
    p.add_argument("--work-dir", default=None, help="where engines and videos are built (default: temporary)")
    p.add_argument("--checkpoint", default=None,
                   help="model to time (default: random weights at the default ModelSpec)")
    p.add_argument("--demo-checkpoint", default="auto",
                   help="trained model for the INT8 agreement figure (default: gcf_trt/assets/demo.pt if present)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per interleaved comparison in a full run (default 45)")
    p.add_argument("--sections", default=None,
                   help="comma-separated subset of: backbone,head,streaming,end_to_end,cold_start,"
                        "roofline,ort_sweep,agreement,whatif")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any section raised (CI); an unavailable backend is not an error")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    # Before torch is imported: GNU OpenMP's default active wait makes torch eager 10x slower
    # whenever another process holds a core (measured on the shared 2-core box: 1.4 s vs 0.11 s
    # per clip), which would flatter every engine's speedup over it.  PASSIVE is the fair
    # baseline; an explicit OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .. import bench
    from ..errors import InputError
    sections = [s.strip() for s in args.sections.split(",")] if args.sections else None
    if sections:
        unknown = sorted(set(sections) - set(bench.SECTIONS))
        if unknown:
            raise InputError(f"unknown section(s) {', '.join(unknown)}",
                             hint=f"choose from {', '.join(bench.SECTIONS)}")
    if args.duration is not None and not args.duration > 0:
        raise InputError(f"--duration must be > 0, got {args.duration}")
    out = args.out or (os.path.join(tempfile.gettempdir(), "gcf-trt-bench-quick") if args.quick
                       else "benchmarks/results")
    config = bench.Config(args.quick, out=out, work=args.work_dir, checkpoint=args.checkpoint,
                          demo_checkpoint=args.demo_checkpoint, duration=args.duration,
                          plots=not args.no_plots, sections=sections)
    results = bench.run(config, say=lambda m: print(m, flush=True))
    files = bench.write_results(results, out, make_plots=config.plots)
    print()
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        print(f"{t['status']:4s}  {t['key']:28s} {value:>8s}  (target {t['target']})")
    print(f"wrote {', '.join(str(Path(f)) for f in files)}")
    if results.get("errors"):
        print(f"sections with errors: {', '.join(results['errors'])} (details in latest.json 'errors')")
        if args.strict:
            return 1
    return 0
