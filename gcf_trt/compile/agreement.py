"""The agreement gate: is a reduced-precision backbone close enough to FP32, judged on predictions?

Both backbones run over held-out clip sequences (one per video); their descriptors fill the
rings a stream would present and the same FP32 head classifies each ring.  The result carries
top-1 (class) agreement with its 95% Wilson interval, and the agreement of the decisions (the
class, or "no action" when no clip of the ring reaches :data:`~gcf_trt.spec.ACTION_GATE`:
:attr:`Prediction.action <gcf_trt.runtime.core.Prediction.action>`), and descriptor cosines.
The gate decides on the classes; the decisions are reported beside them (docs/INT8.md, "The
decision": a gate near 0.5 flips the decision as a near-tie flips the class).  numpy only (any
backend or function can be compared).  Why the gate decides on >= 256 predictions: docs/INT8.md.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AgreementError, InputError
from ..spec import ACTION_GATE

DescriptorFn = Callable[[np.ndarray], np.ndarray]
# FP32 predictions whose top-2 softmax margin is under this are "near-ties": on the trained demo
# model INT8 flips a quarter to two thirds of them, and they hold two thirds of all disagreements
# (docs/INT8.md).  The gate reports them so a refusal says where the disagreements are.
NEAR_TIE_MARGIN = 0.2
# A ring none of whose clips reaches this FP32 gate shows the model no action: FP32 itself
# guesses its class there (on the demo model right on 13 % of such rings, chance 11 %;
# docs/INT8.md) and a prediction says "no action", so the gate counts the class disagreements
# there apart from those where an action is in view.
RELEVANT_GATE = ACTION_GATE
NO_ACTION = -1  # the decision "no action" among class indices


def _descriptor_fn(obj: Any) -> DescriptorFn:
    if hasattr(obj, "infer"):
        return lambda clips: obj.infer({"clip": clips})["descriptor"]
    if callable(obj):
        return obj
    raise InputError(f"expected a backend or a function clips -> descriptors, got {type(obj).__name__}")


def _head_fn(obj: Any) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    """``(descriptors, mask) -> (logits, gates or None)`` for a head backend or function."""
    if hasattr(obj, "infer"):
        def run_backend(desc: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            out = obj.infer({"descriptors": desc, "mask": mask})
            return out["logits"], out.get("gates")
        return run_backend
    if callable(obj):
        def run_function(desc: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            out = obj(desc, mask)
            return (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        return run_function
    raise InputError(f"expected a backend or a function (descriptors, mask) -> logits, got {type(obj).__name__}")


def descriptors(fn: Any, clips: np.ndarray, batch: int = 1) -> np.ndarray:
    """Run a backbone (backend or function) over clips in batches of ``batch``."""
    run = _descriptor_fn(fn)
    outs = [np.asarray(run(np.ascontiguousarray(clips[i:i + batch], np.float32)), np.float32)
            for i in range(0, len(clips), batch)]
    return np.concatenate(outs)


def rings(desc: np.ndarray, ring_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rings a stream presents to the head after each clip: ``[K, N, D]`` and masks ``[K, N]``.

    Ring k holds clips ``max(0, k-N+1) .. k``, oldest first, newest in slot N-1, empty slots
    (mask 0) at the start while the ring fills (docs/DESIGN.md, "Ring order").
    """
    k, d = desc.shape
    out = np.zeros((k, ring_size, d), np.float32)
    mask = np.zeros((k, ring_size), np.float32)
    for i in range(k):
        first = max(0, i - ring_size + 1)
        n = i - first + 1
        out[i, ring_size - n:] = desc[first:i + 1]
        mask[i, ring_size - n:] = 1.0
    return out, mask


def wilson_interval(successes: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well behaved near 0 and 1, unlike the normal one);
    ``n`` may be an effective (non-integer) count, as :func:`clustered_interval` passes."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def clustered_interval(agree_by_video: Sequence[np.ndarray], z: float = 1.959964
                       ) -> tuple[float, float, float] | None:
    """95% interval of the pooled agreement with the *video* as the unit, and the effective
    number of predictions behind it; None with fewer than two videos (no spread to measure).

    A stream's consecutive rings share all but one clip, so the disagreements of one confusable
    video come in runs (a gate set of 256 predictions from 21 videos measured 24 flips, 9 of
    them in one video; docs/INT8.md).  Counting them as 256 independent trials
    overstates what the gate knows.  Kish's design effect -- the ratio estimator's variance
    over the videos against the binomial variance, at least 1 -- shrinks n to the effective
    ``n / deff``, and the Wilson interval is taken there.  With no disagreement the spread is 0
    and the interval is the binomial one.
    """
    groups = [np.asarray(g, bool) for g in agree_by_video if len(g)]
    if len(groups) < 2:
        return None
    m = np.array([len(g) for g in groups], np.float64)
    a = np.array([g.sum() for g in groups], np.float64)
    n, k = m.sum(), len(groups)
    p = a.sum() / n
    binomial = p * (1 - p) / n
    clustered = k / (k - 1) * float(((a - p * m) ** 2).sum()) / (n * n)
    n_eff = n / max(1.0, clustered / binomial) if binomial > 0 else n
    lo, hi = wilson_interval(p * n_eff, n_eff, z)
    return lo, hi, float(n_eff)


def agreement(reference: Any, test: Any, clips: np.ndarray | Sequence[np.ndarray], head: Any, *,
              ring_size: int | None = None, batch: int = 1, no_action_index: int | None = None) -> dict[str, Any]:
    """How far a reduced-precision backbone is from the FP32 reference, judged on predictions.

    Both backbones run over the held-out clips; their descriptors fill the rings a stream would
    present (:func:`rings`) and the same FP32 ``head`` classifies each ring.

    Args:
        reference, test: a backend (``infer({"clip": x})["descriptor"]``) or a function
            ``clips [B,3,T,H,W] -> descriptors [B,D]``.
        clips: one clip sequence ``[K,3,T,H,W]`` (one stream), or a list of them, one per
            held-out video (:func:`calibration_split`); rings never span two videos.
        head: a head backend or a function ``(descriptors [B,N,D], mask [B,N]) -> logits [B,C]``
            (or ``-> (logits, gates [B,N])``).
        ring_size: N; default from the head backend's ``mask`` input shape.
        no_action_index: the model's no-action class (:attr:`ModelSpec.no_action_index`), for
            the decisions.

    Returns:
        ``top1_agreement`` (fraction of ring predictions with the same class) with its 95% Wilson
        interval ``top1_agreement_ci95``, ``num_disagreements``; with two or more sequences the
        interval with the video as the unit, ``top1_agreement_ci95_by_video``, its
        ``effective_predictions`` (:func:`clustered_interval`) and
        ``disagreements_in_worst_video``; when the head gives gates,
        ``decision_agreement`` (the same decision, see :func:`decisions`) with
        ``decision_agreement_ci95`` and ``num_decision_disagreements``; ``cosine_mean`` /
        ``cosine_min`` (descriptor cosine per clip), ``max_abs_logit_diff``, ``num_clips``,
        ``num_predictions``, ``num_sequences``; ``near_ties`` (FP32 predictions with a top-2
        probability margin under :data:`NEAR_TIE_MARGIN`) and ``disagreements_at_near_ties``;
        when the head gives gates, ``without_relevant_clip`` (FP32 rings none of whose clips has
        a gate >= :data:`RELEVANT_GATE`: no action in view) and
        ``disagreements_without_relevant_clip``.
    """
    groups = [clips] if isinstance(clips, np.ndarray) else list(clips)
    groups = [np.asarray(g, np.float32) for g in groups]
    if not groups or any(g.ndim != 5 or len(g) == 0 for g in groups):
        raise InputError("agreement needs clips [K,3,T,H,W] with K >= 1 (or a list of such arrays), got "
                         + ", ".join(str(g.shape) for g in groups[:3]))
    if ring_size is None:
        shape = getattr(head, "input_shapes", {}).get("mask")
        if not shape or shape[-1] is None or shape[-1] < 1:
            raise InputError("ring_size is needed when the head is not a backend with a fixed mask shape")
        ring_size = int(shape[-1])
    run_head = _head_fn(head)

    def head_of(desc: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Each ring's logits, and its largest valid gate (None when the head gives no gates)."""
        r, m = rings(desc, ring_size)
        outs = [run_head(r[i:i + 16], m[i:i + 16]) for i in range(0, len(m), 16)]
        logits = np.concatenate([o[0] for o in outs])
        if any(o[1] is None for o in outs):
            return logits, None
        return logits, (np.concatenate([o[1] for o in outs]) * m).max(1)  # each ring's largest gate

    cosines, same, same_decision, diffs, margins, top_gates = [], [], [], [], [], []
    for g in groups:
        ref = descriptors(reference, g, batch)
        out = descriptors(test, g, batch)
        num = (ref * out).sum(1)
        den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cosines.append(np.where(den > 0, num / np.maximum(den, 1e-30),
                                np.where(np.abs(ref - out).max(1) == 0, 1.0, 0.0)))
        (ref_logits, ref_gate), (out_logits, out_gate) = head_of(ref), head_of(out)
        same.append(ref_logits.argmax(1) == out_logits.argmax(1))
        if ref_gate is not None and out_gate is not None:  # each side decides with its own gates
            same_decision.append(decisions(ref_logits, ref_gate, no_action_index=no_action_index)
                                 == decisions(out_logits, out_gate, no_action_index=no_action_index))
        margins.append(top2_margin(ref_logits))
        top_gates.append(ref_gate)
        diffs.append(float(np.abs(ref_logits - out_logits).max()))
    cosine = np.concatenate(cosines)
    agree = np.concatenate(same)
    lo, hi = wilson_interval(int(agree.sum()), len(agree))
    near = np.concatenate(margins) < NEAR_TIE_MARGIN
    relevance: dict[str, Any] = {}
    if all(g is not None for g in top_gates) and len(same_decision) == len(groups):
        blind = np.concatenate(top_gates) < RELEVANT_GATE
        decided = np.concatenate(same_decision)
        d_lo, d_hi = wilson_interval(int(decided.sum()), len(decided))
        relevance = {"decision_agreement": float(decided.mean()),
                     "decision_agreement_ci95": [round(d_lo, 4), round(d_hi, 4)],
                     "num_decision_disagreements": int((~decided).sum()),
                     "relevant_gate": RELEVANT_GATE, "without_relevant_clip": int(blind.sum()),
                     "disagreements_without_relevant_clip": int((blind & ~agree).sum())}
    by_video: dict[str, Any] = {}
    clustered = clustered_interval(same)
    if clustered is not None:
        by_video = {"top1_agreement_ci95_by_video": [round(clustered[0], 4), round(clustered[1], 4)],
                    "effective_predictions": round(clustered[2], 1),
                    "disagreements_in_worst_video": int(max((~g).sum() for g in same))}
    return {
        "top1_agreement": float(agree.mean()), "top1_agreement_ci95": [round(lo, 4), round(hi, 4)],
        **by_video,
        "num_disagreements": int((~agree).sum()),
        "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
        "max_abs_logit_diff": max(diffs),
        "num_clips": int(len(cosine)), "num_predictions": int(len(agree)), "num_sequences": len(groups),
        "ring_size": int(ring_size),
        "near_tie_margin": NEAR_TIE_MARGIN, "near_ties": int(near.sum()),
        "disagreements_at_near_ties": int((near & ~agree).sum()),
        **relevance,
    }


def decisions(logits: np.ndarray, top_gates: np.ndarray, action_gate: float = ACTION_GATE, *,
              no_action_index: int | None = None) -> np.ndarray:
    """What each ring's prediction decides: its class index, or :data:`NO_ACTION` when the ring's
    largest gate is under ``action_gate`` or its class is the model's no-action class
    ``no_action_index`` (as :attr:`Prediction.action` is None there)."""
    top = np.asarray(logits).argmax(1)
    nothing = np.asarray(top_gates) < action_gate
    if no_action_index is not None:
        nothing |= top == no_action_index
    return np.where(nothing, NO_ACTION, top)


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of the top class minus the runner-up's, per row."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.concatenate([np.zeros_like(p), p], 1)
    return top2[:, 1] - top2[:, 0]


def near_tie_text(result: dict[str, Any]) -> str:
    """'; 5 of the 7 disagreements are near-ties of FP32 itself (...)' or '' (no disagreement or
    a result from before the field existed)."""
    n, at = result.get("num_disagreements"), result.get("disagreements_at_near_ties")
    if not n or at is None:
        return ""
    share = result["near_ties"] / max(1, result["num_predictions"])
    return (f"; {at} of the {n} disagreements are near-ties of FP32 itself (top-2 probability margin under "
            f"{result['near_tie_margin']:g}, {share:.1%} of the predictions)")


def disagreement_text(result: dict[str, Any]) -> str:
    """Where the disagreements are: :func:`near_tie_text`, then ', 2 of the 5 on rings where no FP32 gate
    reaches 0.5 (no action in view, 27.0% of the predictions)' when the result counts them."""
    text = near_tie_text(result)
    n, blind = result.get("num_disagreements"), result.get("disagreements_without_relevant_clip")
    if not n or blind is None:
        return text
    share = result["without_relevant_clip"] / max(1, result["num_predictions"])
    return (f"{text or f'; {n} disagreement(s)'}, {blind} of the {n} on rings where no FP32 gate reaches "
            f"{result['relevant_gate']:g} (no action in view, {share:.1%} of the predictions)")


def passes(result: dict[str, Any], min_agreement: float, min_cosine: float | None = None) -> bool:
    """Whether an :func:`agreement` result meets the thresholds (top-1 agreement, cosine)."""
    if result["top1_agreement"] < min_agreement:
        return False
    return min_cosine is None or result["cosine_min"] >= min_cosine


def check_agreement(result: dict[str, Any], min_agreement: float, min_cosine: float | None = None,
                    what: str = "the reduced-precision engine") -> None:
    """Raise :class:`AgreementError` when ``result`` is below the thresholds."""
    if result["top1_agreement"] < min_agreement:
        raise AgreementError(
            f"{what} agrees with FP32 on {result['top1_agreement']:.1%} of {result['num_predictions']} "
            f"held-out predictions{_interval_text(result)}, below --min-agreement {min_agreement:.1%} "
            f"({decision_text(result)}descriptor cosine mean {result['cosine_mean']:.4f}, "
            f"min {result['cosine_min']:.4f}){disagreement_text(result)}")
    if min_cosine is not None and result["cosine_min"] < min_cosine:
        raise AgreementError(
            f"{what}: minimum descriptor cosine with FP32 is {result['cosine_min']:.4f}, below "
            f"--min-cosine {min_cosine:.4f} (top-1 agreement {result['top1_agreement']:.1%})")


def interval_text(result: dict[str, Any]) -> str:
    """'95% interval 86.4%-93.6%; by video 78.1%-96.3%, as 42 independent predictions' (the
    by-video part where the result has it), or '' for a result without an interval."""
    ci = result.get("top1_agreement_ci95")
    if not ci:
        return ""
    text = f"95% interval {ci[0]:.1%}-{ci[1]:.1%}"
    cv = result.get("top1_agreement_ci95_by_video")
    if cv and [f"{x:.1%}" for x in cv] != [f"{x:.1%}" for x in ci]:  # only where it says something else
        text += f"; by video {cv[0]:.1%}-{cv[1]:.1%}, as {result['effective_predictions']:.0f} independent predictions"
    return text


def _interval_text(result: dict[str, Any]) -> str:
    text = interval_text(result)
    return f" ({text})" if text else ""


def decision_text(result: dict[str, Any]) -> str:
    """'decisions (class or no action) 97.3%, ' when the result has them (the head gives gates), else ''."""
    if "decision_agreement" not in result:
        return ""
    return f"decisions (class or no action) {result['decision_agreement']:.1%}, "
