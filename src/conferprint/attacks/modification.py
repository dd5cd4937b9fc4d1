"""Model modification: the thief changes a copy of the source's weights.

Fine-tuning in the four variants of Uchida et al. (2017) as evaluated by Lukas et al. (2021, Sec. 5):
FTLL (fine-tune the last layer only), FTAL (all layers), RTLL (re-initialise the last layer and
train only it), RTAL (re-initialise the last layer, train all). Iterative magnitude pruning after
Zhu & Gupta (2017): the sparsity of every convolution and linear weight rises along their cubic
schedule over ``steps`` rounds, each followed by fine-tuning with the pruned weights held at zero.
All of them train on the attacker's data (D2) labelled by the source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from conferprint.attacks.base import Attack, AttackContext, Stolen, register
from conferprint.training import train_model

LABELS = ("soft", "hard", "ground_truth")


def last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear output layer")
    return linears[-1]


def _reinit(layer: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer.reset_parameters()


@dataclass(frozen=True)
class _FineTune(Attack):
    epochs: int = 5
    lr: float = 0.01  # peak learning rate (one-cycle); the source was trained at 0.05
    labels: str = "soft"
    fraction: float = 1.0  # share of D2 used

    last_only: ClassVar[bool] = False
    reinit: ClassVar[bool] = False
    choices: ClassVar = {"labels": LABELS}
    ranges: ClassVar = {"epochs": (1, 1000), "lr": (1e-6, 10.0), "fraction": (1e-3, 1.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        model = ctx.copy_source()
        n = max(1, round(self.fraction * len(ctx.attacker_indices)))
        x, y = ctx.attacker_data(torch.randperm(len(ctx.attacker_indices), generator=ctx.generator(1))[:n])
        target = ctx.labels_for(x, y, self.labels)  # type: ignore[arg-type]
        head = last_linear(model)
        if self.reinit:
            _reinit(head, ctx.seed)
        if self.last_only:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in head.parameters():
                p.requires_grad_(True)

            def set_mode(m: nn.Module) -> None:  # frozen layers keep their BatchNorm statistics
                m.eval()
                head.train()
        else:
            set_mode = None
        cfg = ctx.train_config(self.epochs, self.lr)
        train_model(model, x, target, cfg, seed=ctx.seed, progress=ctx.progress, desc=self.name,
                    params=list(head.parameters()) if self.last_only else None, set_mode=set_mode)
        for p in model.parameters():
            p.requires_grad_(True)
        return Stolen(model.eval(), ctx.source_arch, {"train_size": n})


@register
@dataclass(frozen=True)
class FTLL(_FineTune):
    """Fine-tune the last layer (all others frozen, BatchNorm statistics included)."""

    name: ClassVar[str] = "ftll"
    cite: ClassVar[str] = "Uchida et al. 2017; Lukas et al. 2021, Sec. 5"
    last_only: ClassVar[bool] = True


@register
@dataclass(frozen=True)
class FTAL(_FineTune):
    """Fine-tune all layers."""

    name: ClassVar[str] = "ftal"
    cite: ClassVar[str] = "Uchida et al. 2017; Lukas et al. 2021, Sec. 5"


@register
@dataclass(frozen=True)
class RTLL(_FineTune):
    """Re-initialise the last layer and train only it."""

    name: ClassVar[str] = "rtll"
    cite: ClassVar[str] = "Uchida et al. 2017; Lukas et al. 2021, Sec. 5"
    last_only: ClassVar[bool] = True
    reinit: ClassVar[bool] = True
    lr: float = 0.05


@register
@dataclass(frozen=True)
class RTAL(_FineTune):
    """Re-initialise the last layer and train all layers."""

    name: ClassVar[str] = "rtal"
    cite: ClassVar[str] = "Uchida et al. 2017; Lukas et al. 2021, Sec. 5"
    reinit: ClassVar[bool] = True
    lr: float = 0.05


def prunable(model: nn.Module) -> list[nn.Parameter]:
    """Weights of convolutions and linear layers (biases and normalisation are left alone)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> float:
    ws = prunable(model)
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


@register
@dataclass(frozen=True)
class Pruning(Attack):
    """Iterative layer-wise magnitude pruning to ``rate`` with fine-tuning between steps (Zhu & Gupta 2017)."""

    name: ClassVar[str] = "pruning"
    cite: ClassVar[str] = "Zhu & Gupta 2017; rates 0.7, 0.8, 0.9 as in Lukas et al. 2021, Table 2"
    rate: float = 0.8
    steps: int = 5
    epochs_per_step: int = 1
    lr: float = 0.01
    labels: str = "soft"
    choices: ClassVar = {"labels": LABELS}
    ranges: ClassVar = {"rate": (0.0, 0.999), "steps": (1, 100), "epochs_per_step": (1, 100), "lr": (1e-6, 10.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        model = ctx.copy_source()
        x, y = ctx.attacker_data()
        target = ctx.labels_for(x, y, self.labels)  # type: ignore[arg-type]
        weights = prunable(model)
        masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]

        def apply() -> None:
            with torch.no_grad():
                for w, m in zip(weights, masks):
                    w.mul_(m)

        history = []
        for k in range(1, self.steps + 1):
            s = self.rate * (1 - (1 - k / self.steps) ** 3)  # Zhu & Gupta's cubic schedule
            with torch.no_grad():
                for i, w in enumerate(weights):
                    n_zero = int(round(s * w.numel()))
                    mask = torch.ones(w.numel(), dtype=torch.bool)
                    if n_zero > 0:
                        mask[w.detach().abs().flatten().argsort()[:n_zero]] = False  # smallest magnitudes go
                    masks[i] = mask.view_as(w)
            apply()
            train_model(model, x, target, ctx.train_config(self.epochs_per_step, self.lr), seed=ctx.seed + k,
                        progress=ctx.progress, desc=f"{self.name} {s:.2f}", after_step=apply)
            history.append(round(s, 4))
        return Stolen(model.eval(), ctx.source_arch, {"sparsity_schedule": history, "sparsity": sparsity(model)})
