"""PNG plots of one run: latency distribution, stage breakdown, roofline, head vs N."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _save(fig, path: Path, written: list[Path]) -> None:
    from ..fsutil import atomic_file
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    written.append(path)


def _latency(ax, lat: dict[str, Any]) -> None:
    names = sorted(lat, key=lambda k: lat[k]["p50_ms"], reverse=True)
    style = {"whis": (1, 99), "showfliers": True, "flierprops": {"markersize": 2}}
    data = [lat[n]["samples_ms"] for n in names]
    try:  # matplotlib >= 3.10
        ax.boxplot(data, orientation="horizontal", tick_labels=names, **style)
    except TypeError:  # older matplotlib
        ax.boxplot(data, vert=False, labels=names, **style)
    ax.set_xscale("log")
    ax.set_xlabel("backbone latency per clip, ms (log; whiskers p1-p99)")
    ax.set_title("Backbone latency, B=1, interleaved round-robin")
    ax.grid(axis="x", which="both", alpha=0.3)


def _stages(axes, e2e: dict | None, st: dict | None) -> None:
    if e2e:
        ax, stages, bottom = axes[0], e2e["stage_ms_per_frame"], 0.0
        for k in ("decode", "preprocess", "backbone", "head"):
            ax.bar(["sum of stages"], [stages[k]], bottom=bottom, label=k)
            bottom += stages[k]
        ax.bar(["wall (decode overlapped)"], [e2e["wall_s"] * 1e3 / e2e["frames"]], color="gray")
        ax.axhline(1e3 / e2e["video"]["fps"] / 25, color="red", ls="--", lw=1, label="25x real-time budget")
        ax.set_ylabel("ms per frame")
        ax.set_title(f"End to end: {e2e['fps']:.0f} fps = {e2e['realtime_factor']:.1f}x real time")
        ax.legend(fontsize=8)
    if st:
        ax, names = axes[1], ["streaming", "naive_batched", "naive_sequential"]
        ax.bar(names, [st[n]["p50_ms"] for n in names], color=["tab:green", "tab:orange", "tab:red"])
        for i, n in enumerate(names):
            ratio = 1.0 if n == "streaming" else st[f"{n}_over_streaming_p50"]
            ax.text(i, st[n]["p50_ms"], f"{ratio:.1f}x", ha="center", va="bottom")
        ax.set_ylabel("ms per step (p50)")
        ax.set_title(f"Streaming step vs naive recompute, N={st['ring_size']}")


def _roofline(ax, roof: dict[str, Any]) -> None:
    bw = roof["memory_bandwidth_gbs"]
    xs = np.logspace(-1, 3, 200)
    colors = {"fp32": "tab:blue", "bf16": "tab:purple", "int8": "tab:green"}
    for kind, peak in roof["ceilings_gflops"].items():
        if peak:  # without a measured bandwidth (budget spent) only the compute ceiling
            ax.plot(xs, np.minimum(peak, bw * xs) if bw else np.full_like(xs, peak), color=colors[kind], lw=1.2,
                    label=f"{kind} ceiling: {peak:.0f} GFLOP/s measured" + (f", {bw:.0f} GB/s" if bw else ""))
    for i, (name, pt) in enumerate(sorted(roof["points"].items(), key=lambda kv: kv[1]["gflops"])):
        ax.scatter(pt["arithmetic_intensity"], pt["gflops"], color=colors[pt["compute_class"]], zorder=3)
        ax.annotate(f"{name} ({pt['gflops']:.0f})", (pt["arithmetic_intensity"], pt["gflops"]), fontsize=7,
                    xytext=(5, -10 + 9 * (i % 3)), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity, FLOP per byte (conv inputs+weights+outputs moved once)")
    ax.set_ylabel("achieved GFLOP/s (model FLOPs / p50 latency)")
    ax.set_title(f"Roofline: backbone {roof['cost']['gflops_per_clip']:.2f} GFLOPs/clip")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(which="both", alpha=0.3)


def _heads(ax, head: dict[str, Any]) -> None:
    by_variant: dict[str, list] = {}
    for e in head["heads"].values():
        by_variant.setdefault(e.get("variant", e["runtime"]), []).append((e["ring_size"], e["fraction_of_backbone_p50"] * 100))
    for label, pts in by_variant.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(1.0, color="red", ls="--", lw=1, label="1% target")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("ring size N")
    ax.set_ylabel(f"head p50, % of one backbone call ({head['backbone']['name']})")
    ax.set_xticks(sorted({e["ring_size"] for e in head["heads"].values()}))
    ax.legend(fontsize=8)
    ax.set_title("Fusion head cost vs ring size")


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the plots whose data the run has; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written: list[Path] = []
    lat = {k: v for k, v in (results.get("backbone") or {}).items() if v.get("samples_ms")}
    if lat:
        fig, ax = plt.subplots(figsize=(8, 0.6 * len(lat) + 1.5))
        _latency(ax, lat)
        _save(fig, out / "latency_distribution.png", written)
    e2e, st = results.get("end_to_end"), results.get("streaming")
    if e2e or st:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        _stages(axes, e2e, st)
        _save(fig, out / "stage_breakdown.png", written)
    roof = results.get("roofline")
    if roof and roof.get("points"):
        fig, ax = plt.subplots(figsize=(8, 5.5))
        _roofline(ax, roof)
        _save(fig, out / "roofline.png", written)
    head = results.get("head")
    if head and head.get("heads"):
        fig, ax = plt.subplots(figsize=(6, 4))
        _heads(ax, head)
        _save(fig, out / "head_vs_ring.png", written)
    return written
