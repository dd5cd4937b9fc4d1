"""Label-only scores that control for architecture affinity (issue: separation).

Control difference (adopted; docs/results/separation-fashion-mnist-first-sweep.md): query a *control* set as
well — a plain PGD fingerprint of the source, adversarial examples that transfer to related
architectures whether or not a model was derived from the source — and score

    score = CAEAcc(fingerprint) − CAEAcc(control).

A reference of the source's architecture follows the source on both sets about equally; a surrogate
follows it on the conferrable fingerprint more than on the control, whatever its architecture.
No parameter is fitted.

The measured failure of raw CAEAcc is that a suspect's *architecture* sets its level: references
that share the source's architecture agree with it on adversarial inputs far more than surrogates
of other architectures do. The per-family null puts each suspect against independent models of its
own family:

1. calibration references — independent models trained by the defender, *not* used to generate the
   fingerprint — are grouped by family, and their CAEAcc on the fingerprint is the family's null;
2. the suspect's family is inferred from its top-1 answers alone: the family whose calibration
   models agree most with the suspect on the probe inputs (the fingerprint's own queries);
3. score = CAEAcc(suspect) − mean null CAEAcc of that family.

The verdict's threshold (:func:`prediction_threshold`) comes from calibration references too: the
upper prediction bound for the score of one more independent model (or, stricter, the tolerance bound
of :func:`tolerance_threshold`). A fixed threshold on the control
difference (0, "follows the source more on the fingerprint than on the control") called 6–7 of 8
held-out references stolen, because CEM's examples transfer to independent models a little more than
the control does (docs/results/separation-summary.md §12).

All inputs are label vectors; nothing here sees logits.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch


def control_difference(cae_fingerprint: float, cae_control: float) -> float:
    """``CAEAcc(fingerprint) − CAEAcc(control)``: the adopted calibrated score.

    Rounded to 6 decimals: both CAEAccs are shares of answers (k/n) that often arrive as float32, whose noise
    (~3e-8) would otherwise order two equal scores at random — in the ROC AUC, which counts a tie one half, and
    at a threshold. Distinct scores differ by at least 1/(n₁·n₂), far above that for fingerprints and
    control sets of up to about a thousand queries each."""
    return round(float(cae_fingerprint) - float(cae_control), 6)


def _calibration_scores(scores: Sequence[float], alpha: float) -> list[float]:
    s = [float(v) for v in scores]
    if len(s) < 3:
        raise ValueError(f"a calibrated threshold needs the scores of at least 3 calibration references, got {len(s)}")
    if not all(math.isfinite(v) for v in s):
        raise ValueError("calibration scores must be finite")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    return s


def _mean_sd(s: list[float]) -> tuple[float, float]:
    mean = sum(s) / len(s)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in s) / (len(s) - 1))


def prediction_threshold(scores: Sequence[float], alpha: float) -> dict[str, Any]:
    """The score above which one more independent model falls with probability ``alpha``.

    ``scores`` are those of ``r ≥ 3`` calibration references (independent models that generation never
    saw). Under a normal model of the references' scores, the one-sided upper ``1 − alpha`` prediction
    bound for a new one is ``mean + t(r − 1, 1 − alpha) · sd · sqrt(1 + 1/r)``: the Student quantile and
    the ``1/r`` carry the uncertainty of the mean and spread estimated from ``r`` models. A suspect at or
    above it is called stolen, so ``alpha`` is the intended rate of false accusations — on average over
    calibration sets: the rate of one set may be well above it (:func:`tolerance_threshold`). Returns the
    threshold with what it was fitted from (JSON-ready)."""
    from scipy.stats import t as student_t

    s = _calibration_scores(scores, alpha)
    r = len(s)
    mean, sd = _mean_sd(s)
    factor = float(student_t.ppf(1 - alpha, r - 1)) * math.sqrt(1 + 1 / r)
    return {"threshold": mean + factor * sd, "rule": "normal upper prediction bound", "alpha": alpha,
            "n_references": r, "mean": mean, "sd": sd, "factor": factor, "scores": s}


def tolerance_threshold(scores: Sequence[float], alpha: float, confidence: float = 0.9) -> dict[str, Any]:
    """A threshold whose rate of false accusations is at most ``alpha`` with probability ``confidence``.

    The prediction bound (:func:`prediction_threshold`) keeps the rate at ``alpha`` *on average* over
    calibration sets, but one set of ``r`` references that happens to score low gives a threshold whose own
    rate is far higher (a Fashion-MNIST study with 12 references: 3 of 8 held-out references above it;
    docs/results/separation-summary.md §18). The one-sided normal tolerance bound covers the ``1 − alpha``
    quantile of the references' population with probability ``confidence``:
    ``mean + k · sd``, ``k = t'(r − 1, z(1 − alpha) · sqrt(r)).ppf(confidence) / sqrt(r)`` (noncentral
    Student t). A higher bar: fewer stolen models are caught. Returns the threshold with what it was fitted
    from (JSON-ready)."""
    from scipy.stats import nct, norm

    s = _calibration_scores(scores, alpha)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    r = len(s)
    mean, sd = _mean_sd(s)
    factor = float(nct.ppf(confidence, r - 1, float(norm.ppf(1 - alpha)) * math.sqrt(r))) / math.sqrt(r)
    return {"threshold": mean + factor * sd, "rule": "normal upper tolerance bound", "alpha": alpha,
            "confidence": confidence, "n_references": r, "mean": mean, "sd": sd, "factor": factor, "scores": s}


THRESHOLD_RULES = ("prediction", "tolerance")


def fit_threshold(scores: Sequence[float], alpha: float, rule: str = "prediction",
                  confidence: float = 0.9) -> dict[str, Any]:
    """The verdict's threshold by ``rule``: ``"prediction"`` (:func:`prediction_threshold`, false accusations
    at rate ``alpha`` on average) or ``"tolerance"`` (:func:`tolerance_threshold`, at most ``alpha`` with
    probability ``confidence``)."""
    if rule == "prediction":
        return prediction_threshold(scores, alpha)
    if rule == "tolerance":
        return tolerance_threshold(scores, alpha, confidence)
    raise ValueError(f"unknown threshold rule {rule!r}; choose one of {THRESHOLD_RULES}")


def verdict_by(score: float, matches: int, threshold: float, raw_critical: int | None = None) -> dict[str, bool]:
    """Which rule calls a suspect stolen: ``score`` at or above ``threshold``, and (with ``raw_critical``) its
    ``matches`` on the fingerprint at or above that critical count. Stolen when any of them holds: a
    relative score is blind to near-copies, which follow the source on the control set too."""
    by = {"score": score >= threshold}
    if raw_critical is not None:
        by["raw_cae_acc"] = matches >= raw_critical
    return by


def infer_family(suspect: torch.Tensor, calibration: Mapping[str, torch.Tensor], family_of: Mapping[str, str]) -> str:
    """Family of the calibration models whose answers on the probes agree most with ``suspect``'s (mean per family)."""
    if not calibration:
        raise ValueError("no calibration models")
    per_family: dict[str, list[float]] = defaultdict(list)
    for name, labels in calibration.items():
        if labels.shape != suspect.shape:
            raise ValueError(f"calibration model {name!r} answered {tuple(labels.shape)}, suspect {tuple(suspect.shape)}")
        per_family[family_of[name]].append(float((labels == suspect).float().mean()))
    return max(sorted(per_family), key=lambda f: sum(per_family[f]) / len(per_family[f]))


def family_nulls(scores: Mapping[str, float], family_of: Mapping[str, str]) -> dict[str, float]:
    """Mean CAEAcc of the calibration references of each family."""
    acc: dict[str, list[float]] = defaultdict(list)
    for name, s in scores.items():
        acc[family_of[name]].append(s)
    return {f: sum(v) / len(v) for f, v in acc.items()}


def family_calibrated_score(cae_acc: float, family: str, nulls: Mapping[str, float]) -> float:
    return cae_acc - nulls[family]


class FamilyNull:
    """The per-family null, fitted on calibration references through labels-only oracles.

    ``probe`` are the inputs whose answers identify a suspect's family (the fingerprint's queries,
    possibly with a control set); the fingerprint's own answers give CAEAcc.
    """

    def __init__(self, fingerprint, probe: torch.Tensor, calibration: Mapping[str, tuple[str, object]]):
        from conferprint.verify import verify_oracle  # local: verify/__init__ imports this module's siblings

        if not calibration:
            raise ValueError("the per-family null needs at least one calibration reference")
        self.fingerprint, self.probe = fingerprint, probe
        self.family_of = {name: fam for name, (fam, _) in calibration.items()}
        self.probe_labels = {name: torch.as_tensor(oracle(probe)) for name, (_, oracle) in calibration.items()}
        self.calibration_scores = {name: verify_oracle(oracle, fingerprint) for name, (_, oracle) in calibration.items()}
        self.nulls = family_nulls(self.calibration_scores, self.family_of)

    def score(self, oracle) -> dict[str, float | str]:
        from conferprint.verify import verify_oracle

        cae = verify_oracle(oracle, self.fingerprint)
        fam = infer_family(torch.as_tensor(oracle(self.probe)), self.probe_labels, self.family_of)
        return {"cae_acc": cae, "family": fam, "null": self.nulls[fam], "score": family_calibrated_score(cae, fam, self.nulls)}

    def to_json(self) -> dict:
        return {"nulls": self.nulls, "calibration_scores": self.calibration_scores, "family_of": self.family_of,
                "probe_size": len(self.probe)}
