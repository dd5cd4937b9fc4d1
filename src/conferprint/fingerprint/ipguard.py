"""IPGuard (Cao, Jia & Gong, "IPGuard: Protecting Intellectual Property of Deep Neural Networks via
Fingerprinting the Classification Boundary", AsiaCCS 2021): fingerprint data points that lie on the
source's classification boundary, verified, like CEM, by label agreement.

A point on the boundary between classes ``i`` and ``j`` has ``g_i(x) = g_j(x) > g_t(x)`` for every
other class ``t`` (``g`` the logits). Relaxed with a margin ``k``, we minimise by Adam over the input
(kept in [0, 1], and in an L∞ ball of radius ``eps`` around the start when ``eps`` is set)

    L(x) = ReLU(|g_i(x) − g_j(x)| − k) + ReLU(max_{t≠i,j} g_t(x) − min(g_i(x), g_j(x)) + k)

which is zero exactly when ``i`` and ``j`` are the two largest logits, ahead of every other class by
at least ``k``, and within ``k`` of each other. ``i`` is the source's label of the start point and
``j`` its runner-up (``pair="second"``) or a seeded random other class (``pair="random"``). A point is
kept when it meets the criterion; its key is the source's label. Defaults (ours where the paper's
values are not restated here): k = 0.1, Adam lr 0.01, 500 steps, unbounded (IPGuard constrains
only the pixel range; set ``eps`` to compare at a common budget).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from conferprint.device import model_device
from conferprint.fingerprint.artifact import Fingerprint
from conferprint.fingerprint.ensemble import freeze, project
from conferprint.fingerprint.generate import generate_fingerprint
from conferprint.training import predict_logits


def boundary_loss(logits: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float) -> torch.Tensor:
    """IPGuard's relaxed boundary loss per example (zero on the boundary band of width ``k``)."""
    gi = logits.gather(1, i[:, None]).squeeze(1)
    gj = logits.gather(1, j[:, None]).squeeze(1)
    others = logits.scatter(1, i[:, None], float("-inf")).scatter(1, j[:, None], float("-inf")).amax(1)
    return torch.relu((gi - gj).abs() - k) + torch.relu(others - torch.minimum(gi, gj) + k)


def top_two_gap(logits: torch.Tensor) -> torch.Tensor:
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


@dataclass(frozen=True)
class IPGuard:
    k: float = 0.1
    lr: float = 0.01
    steps: int = 500
    eps: float | None = None
    pair: Literal["second", "random"] = "second"
    size: int = 100
    balance: bool = True
    batch_size: int = 256
    max_candidates: int | None = 2048

    def __post_init__(self) -> None:
        if self.k <= 0 or self.lr <= 0 or self.steps < 1:
            raise ValueError("k and lr must be > 0 and steps ≥ 1")
        if self.eps is not None and not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1] or None, got {self.eps}")
        if self.pair not in ("second", "random"):
            raise ValueError(f"pair must be 'second' or 'random', got {self.pair!r}")

    def pairs(self, source: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        logits = predict_logits(source, x0)
        top = logits.topk(2, dim=1).indices
        i = top[:, 0]
        if self.pair == "second":
            return i, top[:, 1]
        k = logits.shape[1]
        j = (i + torch.randint(1, k, (len(i),), generator=gen)) % k  # any class but i
        return i, j

    def perturb(self, source: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # unfolded: the points are kept by the source's own top-two gap (on_boundary), which must see what this saw
        member = freeze([source], fold=False)[0]
        home, dev = x0.device, model_device(source)
        i, j = (t.to(dev) for t in self.pairs(source, x0, gen))
        x0 = x0.to(dev)
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        for _ in range(self.steps):
            loss = boundary_loss(member.logits(x), i, j, self.k)
            done = loss == 0  # on the band: frozen there (Adam's momentum would carry it off)
            if bool(done.all()):
                break
            before = x.detach().clone()
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                x.copy_(project(x, x0, self.eps) if self.eps is not None else x.clamp(0, 1))
                x[done] = before[done]
        return x.detach().to(home)

    def on_boundary(self, source: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The kept criterion: top-two logit gap at most ``k`` (the point sits on the boundary band)."""
        return top_two_gap(predict_logits(source, x)) <= self.k + 1e-6

    def generate(self, source: nn.Module, surrogates: Sequence[nn.Module], references: Sequence[nn.Module],
                 x: torch.Tensor, y: torch.Tensor, *, seed: int, num_classes: int | None = None,
                 source_sha256: str | None = None, progress: bool = False) -> Fingerprint:
        """Source-only: ``surrogates`` and ``references`` are accepted for the common interface and ignored."""

        def optimise(x0, yb, gen, bar):
            out = self.perturb(source, x0, gen)
            if bar is not None:
                bar.update(self.steps)
            return out

        return generate_fingerprint(
            "ipguard", self, optimise, source=source, surrogates=(), references=(), x=x, y=y, size=self.size,
            tau=0.0, balance=self.balance, batch_size=self.batch_size, max_candidates=self.max_candidates,
            steps=self.steps, seed=seed, num_classes=num_classes, source_sha256=source_sha256, progress=progress,
            accept=lambda xa, target, yb: self.on_boundary(source, xa))
