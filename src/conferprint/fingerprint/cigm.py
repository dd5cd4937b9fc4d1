"""C-IGM — the earlier variant (arXiv version; method.md, "C-IGM").

    M_E(x) = (1 − Ref(R, x)) · Surr({M} ∪ S, x)   (per class, mean softmax)
    L_E    = −M_E(x)[t]

optimised with the Iterative Gradient Method: signed gradient steps of ``step_size`` for
``steps`` iterations, clipped to the ε-ball and [0, 1] after every step. Member dropout as in CEM.
The target ``t ≠ y`` is a seeded random wrong class, or the currently most conferrable wrong class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conferprint.fingerprint.artifact import Fingerprint
from conferprint.fingerprint.ensemble import folded, freeze, keep_mask, project
from conferprint.fingerprint.generate import generate_fingerprint
from conferprint.fingerprint.scores import soft_conferrability


@dataclass(frozen=True)
class CIGM:
    eps: float = 0.15  # C-IGM's tables (method.md)
    step_size: float = 0.01  # C-IGM's IGM step (Table I)
    steps: int = 100  # C-IGM's IGM iterations (Table I)
    dropout: float = 0.5  # member dropout (C-IGM)
    tau: float = 1.0  # C-IGM kept only examples with Confer = 1 on the training models
    target: Literal["random", "conferrable"] = "conferrable"
    size: int = 100
    balance: bool = True
    batch_size: int = 256
    max_candidates: int | None = 2048

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {self.eps}")
        if self.target not in ("random", "conferrable"):
            raise ValueError(f"target must be 'random' or 'conferrable', got {self.target!r}")

    def attack(
        self,
        source: nn.Module,
        surrogates: Sequence[nn.Module],
        references: Sequence[nn.Module],
        x0: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        bar=None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One batch; with ``targets`` given they are used for every step (else chosen per ``self.target``)."""
        src, surr, refs = freeze([source])[0], freeze(surrogates), freeze(references)
        if targets is None and self.target == "random":
            num_classes = int(src.logits(x0[:1]).shape[1])
            offset = torch.randint(1, num_classes, (len(y),), generator=gen)
            targets = (y + offset) % num_classes
        x = x0.clone()
        for _ in range(self.steps):
            x.requires_grad_(True)
            ks, kr = keep_mask(len(surr), self.dropout, gen), keep_mask(len(refs), self.dropout, gen)
            sp = [F.softmax(src.logits(x), 1)] + [F.softmax(m.logits(x), 1) for m, k in zip(surr, ks) if k]
            rp = [F.softmax(m.logits(x), 1) for m, k in zip(refs, kr) if k]
            me = soft_conferrability(sp, rp)
            t = targets if targets is not None else me.detach().scatter(1, y[:, None], -1.0).argmax(1)
            loss = -me.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = project(x - self.step_size * grad.sign(), x0, self.eps)
            if bar is not None:
                bar.update(1)
        return x.detach()

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
        src_f, *members = folded([source, *surrogates, *references])  # once for the run, as CEM.generate does
        surr_f, refs_f = members[: len(surrogates)], members[len(surrogates):]
        return generate_fingerprint(
            "c-igm", self, lambda x0, yb, gen, bar: self.attack(src_f, surr_f, refs_f, x0, yb, gen, bar),
            source=source, surrogates=surrogates, references=references, x=x, y=y, size=self.size, tau=self.tau,
            balance=self.balance, batch_size=self.batch_size, max_candidates=self.max_candidates, steps=self.steps,
            seed=seed, num_classes=num_classes, source_sha256=source_sha256, progress=progress,
        )
