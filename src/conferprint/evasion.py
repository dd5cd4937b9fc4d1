"""Non-evasiveness (Lukas et al. 2021, Sec. 5, after Hitaj et al. 2019): can a thief spot the fingerprint's queries?

The thief trains a binary detector (a small CNN) to tell benign inputs from adversarial ones that it
makes itself — FGM, PGD and CW on its *own* surrogate, from its own data — and would answer the
queries it flags with a random label. We report, per ε, the detector's ROC AUC on our fingerprint
against benign test inputs, and what the detector costs the thief: the share of benign queries it
flags (and so answers wrongly) at the operating point that catches 90 % of the fingerprint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from conferprint.fingerprint.foolbox_baselines import Plain
from conferprint.models import build_model
from conferprint.training import TrainConfig, predict_logits, train_model
from conferprint.verify.metrics import roc_auc


@dataclass(frozen=True)
class DetectorConfig:
    arch: str = "cnn_small"
    methods: tuple[str, ...] = ("fgm", "pgd", "cw")  # Hitaj et al.'s detector sees FGM, CW and PGD examples
    epsilons: tuple[float, ...] = (0.025, 0.05, 0.1, 0.15)  # the thief's examples span these radii
    train_size: int = 4000  # benign inputs; as many adversarial ones are made from other inputs
    epochs: int = 8
    lr: float = 0.05
    attack_steps: int = 20  # PGD/CW iterations for the thief's own examples (cheaper than Table I)
    cw_binary_steps: int = 3

    def __post_init__(self) -> None:
        if not self.methods or not self.epsilons:
            raise ValueError("the detector needs at least one attack method and one epsilon")
        if self.train_size < 2 or self.epochs < 1:
            raise ValueError("train_size must be ≥ 2 and epochs ≥ 1")


def thief_examples(thief: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: DetectorConfig, seed: int) -> torch.Tensor:
    """Adversarial versions of ``x`` against the thief's own model: methods and radii in turn."""
    gen = torch.Generator().manual_seed(seed)
    combos = [(m, e) for m in cfg.methods for e in cfg.epsilons]
    out = torch.empty_like(x)
    for c, idx in enumerate(torch.arange(len(x)).chunk(len(combos))):
        if len(idx) == 0:
            continue
        method, eps = combos[c % len(combos)]
        plain = Plain(method=method, eps=eps, steps=cfg.attack_steps, step_size=eps / 4, cw_confidence=0.0,
                      cw_binary_steps=cfg.cw_binary_steps)
        out[idx] = plain.perturb(thief, x[idx], y[idx], gen)
    return out


def train_detector(thief: nn.Module, x: torch.Tensor, cfg: DetectorConfig = DetectorConfig(), *, seed: int,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """A binary detector (class 1 = adversarial) from the thief's data ``x`` and the thief's model."""
    n = min(cfg.train_size, len(x) // 2)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    benign, source = x[perm[:n]], x[perm[n: 2 * n]]
    labels = predict_logits(thief, source).argmax(1)  # the thief attacks its own model's labels
    adv = thief_examples(thief, source, labels, cfg, seed)
    xs = torch.cat([benign, adv])
    ys = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    det = build_model(cfg.arch, in_channels=x.shape[1], num_classes=2, mean=tuple(mean) if mean else None,
                      std=tuple(std) if std else None, seed=seed)
    train_model(det, xs, ys, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=128, augment=False), seed=seed)
    return det.eval()


def adversarial_score(detector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The detector's probability that each input is adversarial."""
    return predict_logits(detector, x).softmax(1)[:, 1]


def evasion_stats(detector: nn.Module, fingerprint: torch.Tensor, benign: torch.Tensor, catch: float = 0.9) -> dict:
    """ROC AUC (fingerprint positive, benign negative) and the benign share flagged when ``catch`` of the
    fingerprint is flagged."""
    fp_s, bn_s = adversarial_score(detector, fingerprint), adversarial_score(detector, benign)
    # the threshold that flags at least `catch` of the fingerprint
    k = max(1, math.ceil(catch * len(fp_s)))
    thr = float(fp_s.sort(descending=True).values[k - 1])
    return {"roc_auc": roc_auc(fp_s.tolist(), bn_s.tolist()), "catch": catch, "threshold": thr,
            "benign_flagged": int((bn_s >= thr).sum()) / len(bn_s),
            "fingerprint_flagged": int((fp_s >= thr).sum()) / len(fp_s),
            "n_fingerprint": len(fp_s), "n_benign": len(bn_s)}

