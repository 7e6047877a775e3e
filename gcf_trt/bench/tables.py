"""``latest.md``: the targets, the headline figures, then one table per section."""
from __future__ import annotations

import math
from typing import Any


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{nd}f}" if abs(v) >= 0.01 else f"{v:.2g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x, nd)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x, nd) for x in v) + "]"
    return str(v)


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    cpu = m["cpu"]
    native = m.get("native") or {}
    lines = [f"# gcf-trt benchmark ({'quick' if results['quick'] else 'full'} run, {results['created']})", "",
             f"Machine: {cpu['model']}, {cpu['usable_cores']} cores, flags {' '.join(cpu['flags'])}; "
             f"native BF16: {native.get('bf16')} ({native.get('bf16_evidence')}); INT8 dot product: "
             f"{native.get('int8_dot_product')}; load average at start {m['load_average_at_start']}.  "
             "Compare the ratios, measured side by side (interleaved round-robin), rather than absolute times.", ""]
    v = m["versions"]
    lines += ["Versions: " + ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "openvino", "torch", "numpy", "cv2")
                                         if k in v), ""]
    spec = results["model"]["spec"]
    lines += [f"Model: {spec['backbone']} {spec['backbone_args'] or '(default args)'}, clip "
              f"{spec['clip_len']}x{spec['size']}x{spec['size']}, ring N={spec['ring_size']}, "
              f"{results['model']['weights']}.", ""]
    return lines


def _targets(results: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "Margin: how far past (+) or short of (-) the target, relative to it (for a "
             "<= target, target / measured - 1).", "",
             "| figure | target | measured | status | margin |", "|---|---|---|---|---|"]
    for t in results.get("targets", []):
        margin = "" if t["margin"] is None else (f"{t['margin'] - 1:+.1%} vs target" if t["margin"] < 10
                                                  else f"{t['margin']:.0f}x the target")
        lines.append(f"| {t['what']} (`{t['key']}`) | {t['target']} | {_fmt(t['value'], 3)} | "
                     f"**{t['status']}** | {margin} |")
    lines.append("")
    h = results.get("headline", {})
    for key, note in (h.get("notes") or {}).items():
        lines.append(f"- `{key}`: {note}")
    lines += ["", "## Headline figures", "", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(val, 3)} |" for k, val in h.items() if k != "notes"]
    return lines


def _backbone(lat: dict[str, Any]) -> list[str]:
    lines = ["", "## Backbone latency per clip (B=1, interleaved)", "",
             "`cpu_build` / `fp32_build`: the default and the FP32 CPU build, loaded as the runtime loads them.", "",
             "| backend | precision | p50 ms | p90 | p95 | p99 | mean | clips/s | vs torch | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in lat.items():
        if "p50_ms" in e:
            label = f"{name} ({e['runtime']})" if name.endswith("_build") else name
            lines.append(f"| {label} | {e.get('reported_precision') or e['precision']} | {e['p50_ms']:.2f} | "
                         f"{e['p90_ms']:.2f} | {e['p95_ms']:.2f} | {e['p99_ms']:.2f} | {e['mean_ms']:.2f} | "
                         f"{e['throughput_per_s']:.1f} | {e.get('speedup_vs_torch', float('nan')):.2f}x | {e['count']} |")
    lines.append("")
    lines += [f"- {name}: unavailable - {e.get('unavailable')}" for name, e in lat.items() if "p50_ms" not in e]
    return lines


def _head_streaming(head: dict | None, st: dict | None) -> list[str]:
    lines: list[str] = []
    if head:
        bb = head["backbone"]
        lines += ["", f"## Fusion head vs one backbone call ({bb['name']}, p50 {bb['p50_ms']:.2f} ms, interleaved)", "",
                  "| head configuration | runtime | N | p50 ms | p99 ms | fraction of backbone (p50) |",
                  "|---|---|---|---|---|---|"]
        for e in head["heads"].values():
            lines.append(f"| {e.get('variant', e['runtime'])} | {e['runtime']} {e['options'] or ''} | {e['ring_size']} | "
                         f"{e['p50_ms']:.3f} | {e['p99_ms']:.3f} | {e['fraction_of_backbone_p50']:.2%} |")
    if st:
        lines += ["", f"## Streaming step vs naive recompute (N={st['ring_size']}, backbone {st['backbone']}, "
                      f"head as built on {st['head_runtime']})", "",
                  "| variant | p50 ms | p99 ms | naive_sequential / variant (p50) |", "|---|---|---|---|"]
        for name in [k for k in st if isinstance(st[k], dict) and "p50_ms" in st[k]]:
            ratio = st["naive_sequential"]["p50_ms"] / st[name]["p50_ms"]
            lines.append(f"| {name} | {st[name]['p50_ms']:.2f} | {st[name]['p99_ms']:.2f} | {ratio:.2f}x |")
        if st.get("head_in_situ"):
            lines += ["", "Head time inside the streaming step (right after the backbone call, as in a stream):", ""]
            lines += [f"- {label}: head p50 {hs['p50_ms']:.3f} ms = {hs['fraction_of_step_p50']:.1%} of the step"
                      for label, hs in st["head_in_situ"].items()]
    return lines


def _e2e_multi(e2e: dict | None, ms: dict | None, ov: dict | None) -> list[str]:
    lines: list[str] = []
    if e2e:
        naive = e2e.get("naive_torch_pipeline") or {}
        lines += ["", f"## End to end: {e2e['video']['size'][0]}x{e2e['video']['size'][1]} @ "
                      f"{e2e['video']['fps']:g} fps video, {e2e['frames']} frames", "",
                  f"{e2e['fps']:.0f} frames/s = **{e2e['realtime_factor']:.1f}x real time** "
                  f"({e2e['pipeline']}; {e2e['predictions']} predictions).", "",
                  "| stage | ms per frame | share of wall time |", "|---|---|---|"]
        for k, val in e2e["stage_ms_per_frame"].items():
            lines.append(f"| {k} | {val:.3f} | {e2e['stage_share_of_wall'][k]:.0%} |")
        lines.append(f"| wall | {e2e['wall_s'] * 1e3 / e2e['frames']:.3f} | 100% |")
        if naive:
            lines += ["", f"Naive torch pipeline on the same video ({naive['pipeline']}): {naive['fps']:.1f} frames/s "
                          f"over {naive['frames']} frames = {naive['realtime_factor']:.1f}x real time; the runtime is "
                          f"**{e2e['e2e_vs_naive_torch_pipeline']:.1f}x** faster."]
    if ms:
        lines += ["", f"## {ms['streams']} streams ({ms['clips_per_stream']} clips each)", "",
                  f"MultiStreamClassifier {ms['multistream_clips_per_s']:.1f} clips/s (mean batch "
                  f"{_fmt(ms.get('mean_batch'))}) vs 4 separate StreamingClassifiers {ms['separate_clips_per_s']:.1f} "
                  f"clips/s: **{ms['multistream_gain_4']:.2f}x**.  {ms['method']}."]
    if ov and "method" in ov:
        lines += ["", "## OpenVINO benchmark_app method on the same backbone files", "", f"{ov['method']}.", "",
                  "| file | mode | infer requests | streams | clips/s |", "|---|---|---|---|---|"]
        for key, r in ov.items():
            if isinstance(r, dict) and "clips_per_s" in r:
                lines.append(f"| {key.split('_', 1)[0]} | {key.split('_', 1)[1]} | {r['infer_requests']} | "
                             f"{r['num_streams']} | {r['clips_per_s']:.1f} |")
    elif ov:
        lines += ["", f"OpenVINO benchmark_app method: unavailable - {ov.get('unavailable')}"]
    return lines


def _cold(cs: dict | None) -> list[str]:
    if not cs:
        return []
    first = cs.get("first") or {}
    lines = ["", "## Runtime process: cold start and footprint", "", cs.get("note", ""), "",
             "| start | import s | load engines s | first prediction s | in-process total s | process total s | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for label, r in (("first (empty cache)", first), ("warm (median)", cs)):
        if r:
            lines.append(f"| {label} | {r['import_s']:.3f} | {r['load_s']:.3f} | {r['first_prediction_s']:.3f} | "
                         f"{r['in_process_s']:.3f} | {r['process_s']:.3f} | {r['maxrss_mb']:.0f} |")
    lines += ["", f"Engines: {cs['engines']['backbone']}, {cs['engines']['head']}; modules loaded: "
                  f"{', '.join(cs.get('modules_loaded', []))}; torch imported: {cs['torch_imported']}; VmHWM "
                  f"cross-check {_fmt(cs.get('vmhwm_mb'), 0)} MB."]
    for name, v in (cs.get("variants") or {}).items():
        if "process_s" in v:
            lines.append(f"- {name} ({v['note']}): process {v['process_s']:.3f} s, load {v['load_s']:.3f} s, "
                         f"RSS {v['maxrss_mb']:.0f} MB")
        else:
            lines.append(f"- {name} ({v.get('note')}): unavailable - {v.get('unavailable')}")
    return lines


def _roofline(roof: dict | None) -> list[str]:
    if not roof:
        return []
    c, p = roof["cost"], roof["peaks"]
    lines = ["", "## How close to the machine's limit", "",
             f"Backbone: {c['gflops_per_clip']:.2f} GFLOPs per clip ({c['counter']}).  "
             f"Measured peaks ({p['matmul_size']}^2 matmul, {p['threads']} threads): FP32 "
             f"{_fmt(p.get('fp32_peak_gflops'))} GFLOP/s, BF16 {_fmt(p.get('bf16_peak_gflops'))}, INT8 "
             f"{_fmt(p.get('int8_peak_gflops'))} GOP/s; memory copy {_fmt(p.get('memory_bandwidth_gbs'), 1)} GB/s.", "",
             "| peak source | best GFLOP/s | median |", "|---|---|---|"]
    for kind in ("fp32", "bf16", "int8"):
        for src, val in p[kind].items():
            if "best_gflops" in val:
                note = f" ({val['note']})" if val.get("note") else ""
                lines.append(f"| {kind} {src}{note} | {val['best_gflops']:.0f} | {val['median_gflops']:.0f} |")
            else:
                lines.append(f"| {kind} {src} | {val.get('unavailable')} | |")
    if roof.get("points"):
        lines += ["", "| backend | achieved GFLOP/s | ceiling class | fraction of measured peak |", "|---|---|---|---|"]
        for name, pt in roof["points"].items():
            frac = pt["fraction_of_peak"]
            shown = pt.get("ceiling_note") or ("n/a" if frac is None else f"{frac:.0%}")
            lines.append(f"| {name} | {pt['gflops']:.1f} | {pt['compute_class']} | {shown} |")
    return lines


def _sweep_whatif(sweeps: dict | None, wi: dict | None) -> list[str]:
    lines: list[str] = []
    for sweep in (sweeps or {}).values():
        lines += ["", f"## ONNX Runtime session options ({sweep['file']}, interleaved)", "",
                  "| config | p50 ms | vs project default |", "|---|---|---|"]
        for name, e in sweep["configs"].items():
            lines.append(f"| {name}{' (project default)' if name == sweep['project_default'] else ''} | "
                         f"{e['p50_ms']:.2f} | {e['vs_project_default_p50']:.2f}x |")
    wh, wr, wf = (wi or {}).get("head_graph"), (wi or {}).get("resize"), (wi or {}).get("fused_step")
    if wh or wr or wf:
        lines += ["", "## What-ifs (measured in this run; proposals for other files)", ""]
    if wh:
        lines.append(f"- Head graph: the built head ({wh['nodes']['built']} nodes) vs the same maths with the five "
                     f"shifted sums as one MatMul ({wh['nodes']['shift_matmul']} nodes), both {wh['runtime']}: p50 "
                     f"{wh['p50_ms']['built']:.3f} vs {wh['p50_ms']['shift_matmul']:.3f} ms "
                     f"({wh['shift_matmul_over_built_p50']:.2f}x); max |output difference| {wh['max_abs_output_diff']:.1e}.")
    if wf:
        cost = wf["head_cost_fraction_of_backbone"]
        lines.append(f"- Head fused into the backbone's graph ({wf['backbone']}): the head's cost as a fraction of the "
                     f"backbone call, {cost['separate']:.3f} run after it as built ({wf['head_as_built']}) vs "
                     f"{cost['fused']:.3f} inside one step graph (p50 {wf['p50_ms']['backbone']:.3f} / "
                     f"{wf['p50_ms']['backbone_then_head']:.3f} / {wf['p50_ms']['fused_step']:.3f} ms); max |logit "
                     f"difference| {wf['max_abs_logit_diff']:.1e}.")
    if wr:
        lines.append(f"- Preprocessing {wr['frame'][0]}x{wr['frame'][1]}: whole Preprocessor call p50 "
                     f"{wr['p50_ms']['preprocess_frame']:.3f} ms; a plain INTER_AREA resize to {wr['resized_to'][0]}x"
                     f"{wr['resized_to'][1]} {wr['p50_ms']['resize_one_step']:.3f} ms, exact 2x INTER_AREA then the rest "
                     f"{wr['p50_ms']['resize_two_step']:.3f} ms (pixel difference mean "
                     f"{wr['pixel_abs_diff_0_255']['mean']:.2f}, max {wr['pixel_abs_diff_0_255']['max']:.0f} of 255).")
    return lines


def _agreement(agr: dict | None) -> list[str]:
    if not agr:
        return []
    from ..compile.agreement import disagreement_text, interval_text  # where the disagreements are (near-ties, no action)
    lines = ["", "## INT8 agreement with FP32", "", f"Model: {agr.get('model')}.  Videos: {agr.get('videos')}.", ""]
    for runtime, r in (agr.get("per_runtime") or {}).items():
        if "top1_agreement" in r:
            lines.append(f"- {runtime}: top-1 agreement **{r['top1_agreement']:.2%}** over {r['num_predictions']} "
                         f"ring predictions ({interval_text(r) or 'no interval'})"
                         + (f", decision (class or no action) **{r['decision_agreement']:.2%}** (95% interval "
                            f"{r['decision_agreement_ci95'][0]:.1%} - {r['decision_agreement_ci95'][1]:.1%})"
                            if "decision_agreement" in r else "")
                         + f"; descriptor cosine mean {r['cosine_mean']:.4f}, min {r['cosine_min']:.4f}"
                         f"{disagreement_text(r)}")
        else:
            lines.append(f"- {runtime}: unavailable - {r.get('unavailable')}")
    if agr.get("unavailable"):
        lines.append(f"- unavailable: {agr['unavailable']}")
    lines.append(f"- INT8 file: {agr.get('int8_source')}")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report of one run."""
    lines = _header(results) + _targets(results)
    if results.get("backbone"):
        lines += _backbone(results["backbone"])
    lines += _head_streaming(results.get("head"), results.get("streaming"))
    lines += _e2e_multi(results.get("end_to_end"), results.get("multistream"), results.get("openvino_benchmark"))
    lines += _cold(results.get("cold_start"))
    lines += _roofline(results.get("roofline"))
    lines += _sweep_whatif(results.get("ort_sweep"), results.get("whatif"))
    lines += _agreement(results.get("agreement"))
    if results.get("errors"):
        lines += ["", "## Sections that failed", ""] + [f"- {n}: {e['error']}" for n, e in results["errors"].items()]
    budgets, took = results.get("section_budgets") or {}, results.get("section_seconds") or {}
    lines += ["", "## Time per section", "", "| section | budget s | took s |", "|---|---|---|"]
    lines += [f"| {name} | {_fmt(budgets.get(name), 0)} | {_fmt(s, 1)} |" for name, s in took.items()]
    lines += ["", f"Total run time {results.get('total_seconds')} s.", ""]
    return "\n".join(lines)
