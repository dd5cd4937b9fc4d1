"""Adapted extraction attacks: extraction plus something aimed at the fingerprint itself.

- ``adv_training``: extraction from scratch with multi-step PGD adversarial training (Madry et al.
  2018): every batch is replaced by its PGD examples against the model being trained, labelled with
  the source's labels of the clean inputs. Limits the transfer of adversarial examples — the paper's
  one successful removal attack.
- ``ground_truth``: a fraction ``p`` of the attacker's labels are ground truth, the rest the
  source's (Lukas et al. 2021's Ground-Truth attack, p = 0.5 … 0.8).
- ``dp_sgd``: extraction with DP-SGD (Abadi et al. 2016) through ``opacus`` (optional extra:
  ``pip install conferprint[dp]``); the architecture must have no BatchNorm (per-sample gradients).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from conferprint.attacks.base import AttackConfigError, AttackContext, Stolen, register
from conferprint.attacks.extraction import _ArchChecked
from conferprint.fingerprint.ensemble import project
from conferprint.training import _loss


def pgd_examples(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, eps: float, step_size: float, steps: int,
                 gen: torch.Generator) -> torch.Tensor:
    """Untargeted L∞ PGD with a random start against ``model`` (eval mode); parameters keep their gradients off."""
    was = model.training
    model.eval()
    x = project(x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps, x0, eps)
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        x = project(x.detach() + step_size * grad.sign(), x0, eps)
    model.train(was)
    return x.detach()


@register
@dataclass(frozen=True)
class AdvTraining(_ArchChecked):
    """Extraction from scratch with PGD adversarial training (Madry et al. 2018)."""

    name: ClassVar[str] = "adv_training"
    cite: ClassVar[str] = "Madry et al. 2018; Lukas et al. 2021, Sec. 5 and Fig. 4c"
    arch: str = "same"
    eps: float = 0.1
    step_size: float = 0.025
    steps: int = 7
    labels: str = "soft"
    epochs: int = 10
    lr: float = 0.05
    choices: ClassVar = {"labels": ("soft", "hard")}
    ranges: ClassVar = {"eps": (0.0, 1.0), "step_size": (0.0, 1.0), "steps": (1, 1000), "epochs": (1, 1000),
                        "lr": (1e-6, 10.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        arch = ctx.resolve_arch(self.arch)
        x, _ = ctx.attacker_data()
        target = ctx.query_source(x, self.labels)  # type: ignore[arg-type]

        def perturb(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            hard = tb if tb.ndim == 1 else tb.argmax(1)
            return pgd_examples(model, xb, hard, self.eps, self.step_size, self.steps, gen)

        model = ctx.train_fresh(arch, x, target, ctx.train_config(self.epochs, self.lr), self.name, perturb=perturb)
        return Stolen(model, arch, {"train_size": len(x)})


@register
@dataclass(frozen=True)
class GroundTruth(_ArchChecked):
    """A fraction ``p`` of the labels are ground truth, the rest the source's."""

    name: ClassVar[str] = "ground_truth"
    cite: ClassVar[str] = "Lukas et al. 2021, Sec. 5 and Fig. 4d (p = 0.5, 0.6, 0.7, 0.8)"
    arch: str = "same"
    p: float = 0.5
    labels: str = "soft"  # what the source provides for the rest
    epochs: int = 10
    lr: float = 0.05
    choices: ClassVar = {"labels": ("soft", "hard")}
    ranges: ClassVar = {"p": (0.0, 1.0), "epochs": (1, 1000), "lr": (1e-6, 10.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        arch = ctx.resolve_arch(self.arch)
        x, y = ctx.attacker_data()
        n_gt = int(round(self.p * len(x)))
        gt = torch.zeros(len(x), dtype=torch.bool)
        gt[torch.randperm(len(x), generator=ctx.generator(7))[:n_gt]] = True
        src = ctx.query_source(x[~gt], self.labels)  # type: ignore[arg-type]
        target = F.one_hot(y, ctx.num_classes).float()
        target[~gt] = src if src.ndim == 2 else F.one_hot(src, ctx.num_classes).float()
        model = ctx.train_fresh(arch, x, target, ctx.train_config(self.epochs, self.lr), self.name)
        return Stolen(model, arch, {"ground_truth_labels": n_gt, "source_labels": int((~gt).sum())})


@register
@dataclass(frozen=True)
class DPSGD(_ArchChecked):
    """Extraction with DP-SGD through opacus (per-sample clipping and Gaussian noise, RDP accountant)."""

    name: ClassVar[str] = "dp_sgd"
    cite: ClassVar[str] = "Abadi et al. 2016; Lukas et al. 2021, Sec. 5 (DP surrogates lost too much accuracy)"
    arch: str = "mlp"  # BatchNorm has no per-sample gradients
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    labels: str = "hard"
    epochs: int = 5
    lr: float = 0.1
    batch_size: int = 256
    choices: ClassVar = {"labels": ("soft", "hard")}
    ranges: ClassVar = {"noise_multiplier": (0.0, 100.0), "max_grad_norm": (1e-6, 1e6), "delta": (1e-12, 0.1),
                        "epochs": (1, 1000), "lr": (1e-6, 10.0), "batch_size": (1, 1 << 20)}

    def run(self, ctx: AttackContext) -> Stolen:
        try:
            from opacus import PrivacyEngine
            from opacus.validators import ModuleValidator
        except ImportError as e:
            raise AttackConfigError("attack 'dp_sgd' needs opacus: pip install 'conferprint[dp]'") from e
        arch = ctx.resolve_arch(self.arch)
        model = ctx.fresh_model(arch)
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            raise AttackConfigError(f"attack 'dp_sgd': params.arch {arch!r} cannot be trained with DP-SGD "
                                    f"({problems[0]}); choose one without BatchNorm, e.g. mlp")
        for m in model.modules():  # opacus' backward hooks forbid in-place activations (no effect on weights)
            if hasattr(m, "inplace"):
                m.inplace = False
        x, _ = ctx.attacker_data()
        target = ctx.query_source(x, self.labels)  # type: ignore[arg-type]
        data = torch.utils.data.TensorDataset(x, target)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # opacus samples batches and noise from the global RNG (restored on exit); its notices about
            # secure RNG and full backward hooks do not concern an attack simulation
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            torch.manual_seed(ctx.seed)
            loader = torch.utils.data.DataLoader(data, batch_size=self.batch_size, shuffle=True)
            opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
            engine = PrivacyEngine(accountant="rdp")
            private, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                                       noise_multiplier=self.noise_multiplier,
                                                       max_grad_norm=self.max_grad_norm)
            private.train()
            for _ in range(self.epochs):
                for xb, tb in loader:
                    if len(xb) == 0:  # Poisson sampling can draw an empty batch
                        continue
                    opt.zero_grad(set_to_none=True)
                    _loss(private(xb), tb, 1.0).backward()
                    opt.step()
            epsilon = float(engine.get_epsilon(self.delta))
        private.remove_hooks()  # hand back a plain module
        return Stolen(model.eval(), arch, {"epsilon": epsilon, "delta": self.delta, "train_size": len(x)})
