"""Label-only scores that control for architecture affinity (issue: separation).

Control difference (adopted; docs/results/separation-fashion-mnist.md): query a *control* set as
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

All inputs are label vectors; nothing here sees logits.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch


def control_difference(cae_fingerprint: float, cae_control: float) -> float:
    """``CAEAcc(fingerprint) − CAEAcc(control)``: the adopted calibrated score."""
    return cae_fingerprint - cae_control


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
