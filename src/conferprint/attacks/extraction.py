"""Model extraction: the thief trains a fresh model from the source's answers.

- ``retrain``: the attacker's data (D2) labelled by the source (soft labels: distillation, Hinton
  et al. 2015), with the source's architecture (``arch: same``) or any other;
- ``blackbox``: the same from top-1 labels only (Lukas et al. 2021's "Black-Box" attack);
- ``jagielski``: the source's softmax outputs treated as logits and re-softened with temperature T'
  (Jagielski et al. 2020, "High accuracy and high fidelity extraction");
- ``papernot``: a substitute trained on a small seed set that grows every round by Jacobian-based
  augmentation ``x + λ·sign(∇_x substitute(x)[source label])`` labelled by the source (Papernot et
  al. 2017, "Practical black-box attacks");
- ``knockoff``: a transfer set from another domain, random selection, labelled by the source
  (Orekondy et al. 2019) — MNIST digits for Fashion-MNIST (:mod:`conferprint.data.transfer`);
- ``transfer``: a model pre-trained on another dataset (ground truth there), its head replaced and
  the whole fine-tuned on the source's labels (Lukas et al. 2021: ImageNet32 → CIFAR-10);
- ``ensemble``: n surrogates, each trained on a disjoint part of D2, deployed as their average.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from conferprint.attacks.base import Attack, AttackContext, Stolen, register
from conferprint.attacks.modification import LABELS, last_linear
from conferprint.models import arch_info, build_model, ensemble_arch
from conferprint.models.common import AverageEnsemble
from conferprint.training import train_model

TRANSFER_SETS = ("auto", "mnist", "imagenet32")
_TRAIN_RANGES = {"epochs": (1, 1000), "lr": (1e-6, 10.0), "fraction": (1e-3, 1.0)}


class _ArchChecked(Attack):
    def __post_init__(self) -> None:
        arch = getattr(self, "arch", "same")
        if arch != "same":
            arch_info(arch)  # ValueError names the known architectures


def _subset(ctx: AttackContext, fraction: float, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, round(fraction * len(ctx.attacker_indices)))
    return ctx.attacker_data(torch.randperm(len(ctx.attacker_indices), generator=ctx.generator(salt))[:n])


@register
@dataclass(frozen=True)
class Retrain(_ArchChecked):
    """Train a fresh ``arch`` on D2 labelled by the source (distillation)."""

    name: ClassVar[str] = "retrain"
    cite: ClassVar[str] = "Hinton et al. 2015; Lukas et al. 2021, Sec. 5 (retraining, other architectures)"
    arch: str = "same"
    labels: str = "soft"
    epochs: int = 10
    lr: float = 0.05
    temperature: float = 1.0
    fraction: float = 1.0
    choices: ClassVar = {"labels": ("soft", "hard")}
    ranges: ClassVar = {**_TRAIN_RANGES, "temperature": (0.01, 100.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        arch = ctx.resolve_arch(self.arch)
        x, _ = _subset(ctx, self.fraction, 2)
        target = ctx.query_source(x, self.labels, self.temperature)  # type: ignore[arg-type]
        model = ctx.train_fresh(arch, x, target, ctx.train_config(self.epochs, self.lr, temperature=self.temperature),
                                self.name)
        return Stolen(model, arch, {"train_size": len(x)})


@register
@dataclass(frozen=True)
class BlackBox(Retrain):
    """Retraining from the source's top-1 labels only."""

    name: ClassVar[str] = "blackbox"
    cite: ClassVar[str] = "Lukas et al. 2021, Sec. 5 (Black-Box attack)"
    labels: str = "hard"
    choices: ClassVar = {"labels": ("hard",)}


@register
@dataclass(frozen=True)
class Jagielski(_ArchChecked):
    """Soft labels softmax(p / T') from the source's probabilities p (Jagielski et al. 2020)."""

    name: ClassVar[str] = "jagielski"
    cite: ClassVar[str] = "Jagielski et al. 2020; Lukas et al. 2021, Appendix A.5.1, Eq. 11"
    arch: str = "same"
    temperature: float = 0.5  # T' (the paper's value was lost in extraction; documented choice)
    epochs: int = 10
    lr: float = 0.05
    ranges: ClassVar = {"epochs": (1, 1000), "lr": (1e-6, 10.0), "temperature": (1e-3, 100.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        arch = ctx.resolve_arch(self.arch)
        x, _ = ctx.attacker_data()
        target = F.softmax(ctx.query_source(x, "soft") / self.temperature, dim=1)
        model = ctx.train_fresh(arch, x, target, ctx.train_config(self.epochs, self.lr), self.name)
        return Stolen(model, arch, {"train_size": len(x)})


@register
@dataclass(frozen=True)
class Papernot(_ArchChecked):
    """Jacobian-based dataset augmentation over ``rounds`` rounds (Papernot et al. 2017, Alg. 1)."""

    name: ClassVar[str] = "papernot"
    cite: ClassVar[str] = "Papernot et al. 2017 (seed set 150, λ = 0.1, ρ = 6 rounds)"
    arch: str = "same"
    seed_size: int = 150
    rounds: int = 6
    step: float = 0.1  # λ
    epochs: int = 10  # per round
    lr: float = 0.05
    ranges: ClassVar = {"seed_size": (1, 10**7), "rounds": (0, 20), "step": (0.0, 1.0), "epochs": (1, 1000),
                        "lr": (1e-6, 10.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        arch = ctx.resolve_arch(self.arch)
        n = min(self.seed_size, len(ctx.attacker_indices))
        x, _ = ctx.attacker_data(torch.randperm(len(ctx.attacker_indices), generator=ctx.generator(3))[:n])
        labels = ctx.query_source(x, "hard")
        sizes = []
        for r in range(self.rounds + 1):
            # retrained on the grown set each round, as in Alg. 1
            model = ctx.train_fresh(arch, x, labels,
                                    ctx.train_config(self.epochs, self.lr, batch_size=min(ctx.train.batch_size, 128)),
                                    f"{self.name} round {r}", salt=r)
            sizes.append(len(x))
            if r == self.rounds:
                break
            # λ·sign of the gradient of the substitute's score for the source's label; λ alternates
            # sign every few rounds in the paper (periodic step size), kept simple: fixed sign
            xg = x.clone().requires_grad_(True)
            score = model(xg).gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(score, xg)
            new = (x + self.step * grad.sign()).clamp(0, 1).detach()
            x = torch.cat([x, new])
            labels = torch.cat([labels, ctx.query_source(new, "hard")])
        return Stolen(model, arch, {"set_sizes": sizes})


@register
@dataclass(frozen=True)
class Knockoff(_ArchChecked):
    """A transfer set from another domain, random selection, labelled by the source (Orekondy et al. 2019)."""

    name: ClassVar[str] = "knockoff"
    cite: ClassVar[str] = "Orekondy et al. 2019 (random selection); Lukas et al. 2021, Appendix A.5.1"
    arch: str = "same"
    transfer_set: str = "auto"  # auto: MNIST digits for Fashion-MNIST, CIFAR-100 for CIFAR-10
    budget: int = 5000  # queries to the source
    labels: str = "soft"
    epochs: int = 30
    lr: float = 0.05
    choices: ClassVar = {"labels": ("soft", "hard"), "transfer_set": TRANSFER_SETS}
    ranges: ClassVar = {"budget": (1, 10**8), "epochs": (1, 1000), "lr": (1e-6, 10.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        from conferprint.data.transfer import load_transfer_set

        arch = ctx.resolve_arch(self.arch)
        pool, _, name = load_transfer_set(self.transfer_set, ctx.data, ctx.data_dir)
        pick = torch.randperm(len(pool), generator=ctx.generator(4))[: self.budget]
        x = pool[pick]
        target = ctx.query_source(x, self.labels)  # type: ignore[arg-type]
        model = ctx.train_fresh(arch, x, target, ctx.train_config(self.epochs, self.lr), self.name)
        return Stolen(model, arch, {"transfer_set": name, "train_size": len(x)})


@register
@dataclass(frozen=True)
class Transfer(_ArchChecked):
    """Pre-train on another dataset's ground truth, replace the head, fine-tune on the source's labels of D2."""

    name: ClassVar[str] = "transfer"
    cite: ClassVar[str] = "Lukas et al. 2021, Sec. 5 and Fig. 4b (ImageNet32 -> CIFAR-10)"
    arch: str = "same"
    pretrain_set: str = "auto"
    pretrain_epochs: int = 10
    epochs: int = 1  # the paper: the pre-trained model passed 80 % after one epoch
    lr: float = 0.01
    labels: str = "soft"
    fraction: float = 1.0
    choices: ClassVar = {"labels": LABELS, "pretrain_set": TRANSFER_SETS}
    ranges: ClassVar = {"pretrain_epochs": (1, 1000), **_TRAIN_RANGES}

    def run(self, ctx: AttackContext) -> Stolen:
        from conferprint.data.transfer import load_transfer_set

        arch = ctx.resolve_arch(self.arch)
        pool, pool_y, name = load_transfer_set(self.pretrain_set, ctx.data, ctx.data_dir)
        k = int(pool_y.max()) + 1
        # the pre-trained model has its own head (k classes of the other dataset) and normalisation
        mean = tuple(round(float(v), 4) for v in pool.mean(dim=(0, 2, 3)))
        std = tuple(round(float(v), 4) for v in pool.std(dim=(0, 2, 3)).clamp_min(1e-3))
        pre = build_model(arch, in_channels=ctx.data.in_channels, num_classes=k, mean=mean, std=std,
                          seed=ctx.seed + 11)
        train_model(pre, pool, pool_y, ctx.train_config(self.pretrain_epochs, 0.05), seed=ctx.seed + 11,
                    progress=ctx.progress, desc=f"{self.name} pre-train")
        # keep every pre-trained weight (normalisation included) but the head, which gets the
        # source's classes and a fresh initialisation
        model = ctx.fresh_model(arch, salt=12)
        head = next(n for n, m in model.named_modules() if m is last_linear(model))
        fresh = model.state_dict()
        model.load_state_dict({n: fresh[n] if n.startswith(head + ".") else t for n, t in pre.state_dict().items()})
        x, y = _subset(ctx, self.fraction, 5)
        target = ctx.labels_for(x, y, self.labels)  # type: ignore[arg-type]
        train_model(model, x, target, ctx.train_config(self.epochs, self.lr), seed=ctx.seed,
                    progress=ctx.progress, desc=self.name)
        return Stolen(model.eval(), arch, {"pretrain_set": name, "pretrain_size": len(pool), "train_size": len(x)})


@register
@dataclass(frozen=True)
class Ensemble(_ArchChecked):
    """``members`` surrogates on disjoint parts of D2, deployed as the average of their softmax outputs."""

    name: ClassVar[str] = "ensemble"
    cite: ClassVar[str] = "Lukas et al. 2021, Sec. 5 (ensemble attack, n = 3)"
    arch: str = "same"
    members: int = 3
    labels: str = "soft"
    epochs: int = 10
    lr: float = 0.05
    choices: ClassVar = {"labels": ("soft", "hard")}
    ranges: ClassVar = {"members": (1, 99), "epochs": (1, 1000), "lr": (1e-6, 10.0)}

    def run(self, ctx: AttackContext) -> Stolen:
        arch = ctx.resolve_arch(self.arch)
        parts = torch.randperm(len(ctx.attacker_indices), generator=ctx.generator(6)).chunk(self.members)
        members = []
        for i, part in enumerate(parts):
            x, _ = ctx.attacker_data(part)
            members.append(ctx.train_fresh(arch, x, ctx.query_source(x, self.labels),  # type: ignore[arg-type]
                                           ctx.train_config(self.epochs, self.lr), f"{self.name} member {i}", salt=i))
        name = ensemble_arch(arch, self.members)
        model = build_model(name, in_channels=ctx.data.in_channels, num_classes=ctx.num_classes,
                            mean=ctx.mean, std=ctx.std)
        body: AverageEnsemble = model[1]
        for dst, src in zip(body.members, members):
            dst.load_state_dict(src[1].state_dict())
        return Stolen(model.eval(), name, {"part_sizes": [len(p) for p in parts]})
