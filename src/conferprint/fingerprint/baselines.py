"""Plain adversarial examples on the source alone — the baseline CEM has to beat.

PGD (Madry et al. 2018; untargeted, cross-entropy, signed steps, random start) and IGM/BIM
(Kurakin et al. 2016; the same without random start) with the C-IGM paper's defaults. Verified
exactly like CEM: the fingerprint's key is the source's label on the example. (Issue 5 adds the
foolbox-backed FGM, CW-L2, DeepFool and IPGuard behind this same interface.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conferprint.device import model_device
from conferprint.fingerprint.artifact import Fingerprint
from conferprint.fingerprint.ensemble import freeze, project, shifts_within, with_shift_queries
from conferprint.fingerprint.generate import generate_fingerprint


def iterative_gradient_attack(
    model: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    targeted: bool,
    random_start: bool = False,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Signed-gradient steps on the cross-entropy to ``labels``: towards them if ``targeted``, away otherwise."""
    m = freeze([model])[0]
    home, dev = x0.device, model_device(model)
    x0, labels = x0.to(dev), labels.to(dev)
    x = x0.clone()
    if random_start:
        x = project(x + ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(dev), x0, eps)
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(m.logits(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            step = -grad.sign() if targeted else grad.sign()
            x = project(x + step_size * step, x0, eps)
    return x.detach().to(home)


@dataclass(frozen=True)
class PGD:
    eps: float = 0.1
    step_size: float = 0.01  # C-IGM Table I
    steps: int = 100  # C-IGM Table I
    random_start: bool = True
    size: int = 100
    balance: bool = True
    batch_size: int = 256
    max_candidates: int | None = 2048
    tau: float = 0.0  # a plain attack keeps every example that fools the source
    # ask each kept example also as its translations within `query_radius` pixels on which the source gives the
    # key (fingerprint.ensemble.with_shift_queries), as CEM(query_shifts=True) does: for a control set asked the
    # way its fingerprint is (benchmarks/query_neighbourhood.py, summary §44)
    query_shifts: bool = False
    query_radius: int = 1

    def __post_init__(self) -> None:
        shifts_within(self.query_radius)  # 1 or 2, else ValueError

    def generate(
        self,
        source: nn.Module,
        surrogates: Sequence[nn.Module],
        references: Sequence[nn.Module],
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        seed: int,
        num_classes: int | None = None,
        source_sha256: str | None = None,
        progress: bool = False,
    ) -> Fingerprint:
        """The attack and the selection see the source alone; ``surrogates`` and ``references`` are
        accepted for a common interface and deliberately ignored (a plain, source-only baseline)."""

        def optimise(x0, yb, gen, bar):
            out = iterative_gradient_attack(source, x0, yb, eps=self.eps, step_size=self.step_size, steps=self.steps,
                                            targeted=False, random_start=self.random_start, gen=gen)
            if bar is not None:
                bar.update(self.steps)
            return out

        fp = generate_fingerprint(
            "pgd" if self.random_start else "igm", self, optimise, source=source, surrogates=(),
            references=(), x=x, y=y, size=self.size, tau=self.tau, balance=self.balance,
            batch_size=self.batch_size, max_candidates=self.max_candidates, steps=self.steps, seed=seed,
            num_classes=num_classes, source_sha256=source_sha256, progress=progress,
        )
        return with_shift_queries(fp, source, shifts_within(self.query_radius)) if self.query_shifts else fp
