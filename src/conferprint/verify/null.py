"""The null distribution of CAEAcc for independent models, and the p-value of a suspect.

Model: an independent model agrees with the fingerprint's key on each example with a rate ``p``
that varies from model to model, ``p ~ Beta(a, b)``; given ``p``, its matches on ``m`` examples
are binomial. The count of matches is then beta-binomial, which carries both sources of spread:
the finite fingerprint and the differences between independent models (architecture affinity
makes the second large, see docs/results/separation-summary.md).

``a, b`` are fitted by moments to the CAEAcc of reference models that generation did not use:
mean ``μ`` and between-model variance ``v(1 + 1/r) − μ(1 − μ)/n`` (``v`` the sample variance of
the ``r`` scores, inflated to a predictive variance because ``μ`` is itself estimated; the
binomial part removed), with an intra-class correlation of at least ``RHO_MIN`` so that a handful of
look-alike references never yields an over-confident, nearly binomial null. The p-value of ``k``
matches out of ``m`` is ``P(X ≥ k)``, ``X ~ BetaBinomial(m, a, b)``. With few references the tail
is an extrapolation of this model; :meth:`NullModel.empirical_p` gives the model-free rank p-value
(never below ``1/(r + 1)``) beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.stats import betabinom

RHO_MIN = 0.02
MIN_REFERENCES = 2


@dataclass(frozen=True)
class NullModel:
    scores: tuple[float, ...]  # CAEAcc of the independent references on this fingerprint
    model_ids: tuple[str, ...]  # who they are (names or sha256), for the record
    n: int  # fingerprint size the scores were measured on
    a: float
    b: float

    @classmethod
    def fit(cls, scores: Sequence[float], n: int, model_ids: Sequence[str] | None = None) -> "NullModel":
        s = np.asarray(list(scores), dtype=float)
        if s.ndim != 1 or len(s) < MIN_REFERENCES:
            raise ValueError(f"a null needs CAEAcc scores of at least {MIN_REFERENCES} independent models, got {len(s)}")
        if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
            raise ValueError("null scores must be CAEAcc values in [0, 1]")
        if n < 1:
            raise ValueError(f"fingerprint size must be ≥ 1, got {n}")
        ids = tuple(model_ids) if model_ids is not None else tuple(f"reference-{i}" for i in range(len(s)))
        if len(ids) != len(s):
            raise ValueError(f"{len(ids)} model ids for {len(s)} scores")
        r = len(s)
        mu = float(np.clip(s.mean(), 0.5 / n, 1 - 0.5 / n))
        var_between = float(s.var(ddof=1)) * (1 + 1 / r) - mu * (1 - mu) / n
        rho = min(max(var_between / (mu * (1 - mu)), RHO_MIN), 0.999)
        total = 1 / rho - 1
        return cls(tuple(float(v) for v in s), ids, int(n), mu * total, (1 - mu) * total)

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    def p_value(self, k: int, m: int) -> float:
        """P(an independent model agrees on ≥ k of m examples)."""
        if m < 0 or k < 0:
            raise ValueError(f"need k, m ≥ 0, got k={k}, m={m}")
        if k <= 0:
            return 1.0
        if k > m:
            return 0.0
        return float(betabinom.sf(k - 1, m, self.a, self.b))

    def critical_count(self, m: int, alpha: float) -> int:
        """Smallest k with p_value(k, m) ≤ alpha; ``m + 1`` when no count of m examples gets there."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        sf = betabinom.sf(np.arange(-1, m), m, self.a, self.b)  # sf[k] = P(X ≥ k), k = 0..m
        ok = np.nonzero(sf <= alpha)[0]
        return int(ok[0]) if len(ok) else m + 1

    def empirical_p(self, score: float) -> float:
        """Rank p-value among the references: (1 + #{reference ≥ score}) / (r + 1)."""
        return (1 + sum(v >= score - 1e-12 for v in self.scores)) / (len(self.scores) + 1)

    def to_json(self) -> dict[str, Any]:
        return {"distribution": "beta-binomial", "scores": list(self.scores), "model_ids": list(self.model_ids),
                "n": self.n, "a": self.a, "b": self.b, "rho_min": RHO_MIN}

    @classmethod
    def from_json(cls, d: Any) -> "NullModel":
        """Rebuild from a manifest entry; raises ValueError naming what is wrong."""
        if not isinstance(d, dict) or d.get("distribution") != "beta-binomial":
            raise ValueError("null: expected an object with distribution 'beta-binomial'")
        scores, ids, n, a, b = (d.get(k) for k in ("scores", "model_ids", "n", "a", "b"))
        if not isinstance(scores, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
            raise ValueError("null: 'scores' must be a list of numbers")
        if not isinstance(ids, list) or len(ids) != len(scores) or not all(isinstance(v, str) for v in ids):
            raise ValueError("null: 'model_ids' must be one string per score")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError("null: 'n' must be a positive integer")
        for name, v in (("a", a), ("b", b)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"null: {name!r} must be a positive finite number")
        if len(scores) < MIN_REFERENCES or any(not 0 <= v <= 1 for v in scores):
            raise ValueError(f"null: needs ≥ {MIN_REFERENCES} scores in [0, 1]")
        return cls(tuple(float(v) for v in scores), tuple(ids), n, float(a), float(b))
