"""Classic adversarial examples on the source alone, through foolbox 3 — the baselines CEM is compared with.

``Plain(method=...)`` wraps foolbox's implementations (Rauber et al. 2017/2020) behind the
fingerprint interface of CEM: the examples are generated on the source only, the kept ones are those
that fool it, the verification key is the source's label. Defaults follow the C-IGM paper's Table I
(method.md): 100 iterations, step 0.01 for the iterative L∞ attacks, DeepFool with 10 candidate
classes, CW-L2 with confidence κ = 50 and learning rate 0.01.

- ``fgm``: the fast gradient (sign) method, L∞ (Goodfellow et al. 2015);
- ``bim``: the basic iterative method / IGM, L∞, no random start (Kurakin et al. 2016);
- ``pgd``: projected gradient descent, L∞, random start (Madry et al. 2018);
- ``cw``: Carlini & Wagner's L2 attack (2017), a minimum-norm attack; its examples are then clipped
  into the L∞ ball of radius ``eps`` so every method obeys the same budget (those that stop fooling
  the source after clipping are dropped by the selection);
- ``deepfool``: DeepFool, L∞ (Moosavi-Dezfooli et al. 2016), also clipped to ``eps``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from conferprint.device import model_device
from conferprint.fingerprint.artifact import Fingerprint
from conferprint.fingerprint.ensemble import project
from conferprint.fingerprint.generate import generate_fingerprint

METHODS = ("fgm", "bim", "pgd", "cw", "deepfool")


def foolbox_attack(method: str, *, steps: int, step_size: float, eps: float, cw_confidence: float, cw_lr: float,
                   cw_binary_steps: int, deepfool_candidates: int):
    try:
        import foolbox as fb
    except ImportError as e:  # pragma: no cover - foolbox is a dependency
        raise ImportError("the classic baselines need foolbox 3: pip install foolbox") from e
    if method == "fgm":
        return fb.attacks.LinfFastGradientAttack(random_start=False)
    if method == "bim":
        return fb.attacks.LinfBasicIterativeAttack(abs_stepsize=step_size, steps=steps, random_start=False)
    if method == "pgd":
        return fb.attacks.LinfProjectedGradientDescentAttack(abs_stepsize=step_size, steps=steps, random_start=True)
    if method == "cw":
        return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw_binary_steps, steps=steps, stepsize=cw_lr,
                                                confidence=cw_confidence)
    if method == "deepfool":
        return fb.attacks.LinfDeepFoolAttack(steps=steps, candidates=deepfool_candidates)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def run_foolbox(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, attack, eps: float, minimal: bool,
                gen: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial examples of ``x0`` against ``model``, inside the L∞ ball of radius ``eps`` and [0, 1]."""
    import foolbox as fb

    model.eval()
    home, dev = x0.device, model_device(model)
    x0, labels = x0.to(dev), labels.to(dev)
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=dev)
    with torch.random.fork_rng(devices=[]):  # foolbox's random starts draw from the global RNG
        if gen is not None:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        _, clipped, _ = attack(fmodel, x0, labels, epsilons=None if minimal else eps)
    return project(clipped.detach(), x0, eps).to(home)


@dataclass(frozen=True)
class Plain:
    method: str = "pgd"
    eps: float = 0.1
    steps: int = 100  # C-IGM Table I
    step_size: float = 0.01  # C-IGM Table I (IGM, PGD)
    cw_confidence: float = 50.0  # κ, C-IGM Table I
    cw_lr: float = 0.01  # C-IGM Table I
    cw_binary_steps: int = 5  # our choice (the table gives none)
    deepfool_candidates: int = 10  # "Grads", C-IGM Table I
    size: int = 100
    balance: bool = True
    batch_size: int = 256
    max_candidates: int | None = 2048

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {self.eps}")
        if self.steps < 1 or self.size < 1 or self.batch_size < 1:
            raise ValueError("steps, size and batch_size must be ≥ 1")

    def attack(self):
        return foolbox_attack(self.method, steps=self.steps, step_size=self.step_size, eps=self.eps,
                              cw_confidence=self.cw_confidence, cw_lr=self.cw_lr,
                              cw_binary_steps=self.cw_binary_steps, deepfool_candidates=self.deepfool_candidates)

    def perturb(self, source: nn.Module, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return run_foolbox(source, x0, y, self.attack(), self.eps, self.method == "cw", gen)

    def generate(self, source: nn.Module, surrogates: Sequence[nn.Module], references: Sequence[nn.Module],
                 x: torch.Tensor, y: torch.Tensor, *, seed: int, num_classes: int | None = None,
                 source_sha256: str | None = None, progress: bool = False) -> Fingerprint:
        """Source-only: ``surrogates`` and ``references`` are accepted for the common interface and ignored."""
        steps = 1 if self.method == "fgm" else self.steps

        def optimise(x0, yb, gen, bar):
            out = self.perturb(source, x0, yb, gen)
            if bar is not None:
                bar.update(steps)
            return out

        return generate_fingerprint(
            self.method, self, optimise, source=source, surrogates=(), references=(), x=x, y=y, size=self.size,
            tau=0.0, balance=self.balance, batch_size=self.batch_size, max_candidates=self.max_candidates,
            steps=steps, seed=seed, num_classes=num_classes, source_sha256=source_sha256, progress=progress)
