"""Pure functions of per-model scores: CAEAcc, ROC AUC, ROC curve, TPR at a fixed FPR, verdicts."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def cae_acc(suspect_labels: torch.Tensor, keys: torch.Tensor, groups: torch.Tensor | None = None) -> float:
    """``CAEAcc = mean 1[suspect(x) == key]`` over the fingerprint; with ``groups`` (the example each query belongs
    to, `Fingerprint.groups`), the mean over the examples of the share of their queries answered with the key."""
    if suspect_labels.shape != keys.shape:
        raise ValueError(f"{tuple(suspect_labels.shape)} answers for {tuple(keys.shape)} keys")
    if groups is None:
        return float((suspect_labels == keys).float().mean())
    if groups.shape != keys.shape:
        raise ValueError(f"{tuple(groups.shape)} groups for {tuple(keys.shape)} keys")
    return float(example_shares(suspect_labels == keys, groups).mean())


def example_shares(hits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(..., examples) float64: per example (``groups``, `Fingerprint.groups`), the share of its queries among
    ``hits`` (..., queries; 1 or True where the key was given) — what grouped CAEAcc averages."""
    count = torch.bincount(groups).double()
    total = torch.zeros(*hits.shape[:-1], len(count), dtype=torch.float64).index_add_(-1, groups, hits.double())
    return total / count


def whole_matches(matches: float) -> int:
    """The whole matches in a count of matches on the fingerprint's examples (``CAEAcc × examples``): the count
    itself where each example is one query (float error rounded off), else rounded down (an example asked as
    several queries counts the share of them answered with the key; those shares sum to multiples of 1/2520 at
    most nine queries an example, so 1e-4 is only float error). Null p-values and critical counts take it:
    rounding down never accuses more."""
    return math.floor(matches + 1e-4)


def _check(pos: Sequence[float], neg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if p.size == 0 or n.size == 0:
        raise ValueError(f"ROC needs at least one positive and one negative score (got {p.size} and {n.size})")
    return p, n


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counted one half (Mann–Whitney)."""
    p, n = _check(pos, neg)
    greater = (p[:, None] > n[None, :]).sum()
    ties = (p[:, None] == n[None, :]).sum()
    return float((greater + 0.5 * ties) / (p.size * n.size))


def roc_curve(pos: Sequence[float], neg: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for the rule "positive iff score ≥ threshold", from strict to lax."""
    p, n = _check(pos, neg)
    thr = np.unique(np.concatenate([p, n]))[::-1]
    thr = np.concatenate([[np.inf], thr])
    tpr = np.array([(p >= t).mean() for t in thr])
    fpr = np.array([(n >= t).mean() for t in thr])
    return fpr, tpr, thr


def tpr_at_fpr(pos: Sequence[float], neg: Sequence[float], max_fpr: float) -> float:
    """Best TPR among thresholds whose FPR ≤ ``max_fpr``."""
    fpr, tpr, _ = roc_curve(pos, neg)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max())


def separation_margin(pos: Sequence[float], neg: Sequence[float]) -> float:
    """min(positive) − max(negative): > 0 iff one threshold separates the two groups perfectly."""
    p, n = _check(pos, neg)
    return float(p.min() - n.max())


def separation_stats(pos: Sequence[float], neg: Sequence[float]) -> dict[str, float]:
    """Everything a report says about two groups of scores (positives: surrogates)."""
    return {"roc_auc": roc_auc(pos, neg), "margin": separation_margin(pos, neg), "tpr_at_fpr_0": tpr_at_fpr(pos, neg, 0.0),
            "min_surrogate": float(min(pos)), "max_reference": float(max(neg)),
            "mean_surrogate": sum(pos) / len(pos), "mean_reference": sum(neg) / len(neg)}


def verdict(score: float, threshold: float) -> str:
    return "stolen" if score >= threshold else "independent"
