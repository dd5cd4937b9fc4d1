"""Build the study's models into a zoo: the source, and groups of surrogates/references on D1 or D2."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from conferprint.data import Dataset
from conferprint.models import arch_info
from conferprint.training import TrainConfig, accuracy, teacher_labels, train_model
from conferprint.zoo import ModelSpec, Zoo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """``count`` models of one architecture, role and label source."""

    arch: str
    role: Literal["surrogate", "reference"]
    labels: Literal["soft", "hard", "ground_truth"]
    count: int
    epochs: int
    tag: str = ""  # distinguishes two groups of the same kind in model names

    def __post_init__(self) -> None:
        arch_info(self.arch)
        if self.role not in ("surrogate", "reference"):
            raise ValueError(f"group role must be 'surrogate' or 'reference', got {self.role!r}")
        if self.labels not in ("soft", "hard", "ground_truth"):
            raise ValueError(f"group labels must be soft, hard or ground_truth, got {self.labels!r}")
        if self.role == "reference" and self.labels != "ground_truth":
            raise ValueError("references are trained on ground truth")
        if self.role == "surrogate" and self.labels == "ground_truth":
            raise ValueError("surrogates are trained on the source's labels (soft or hard)")
        if self.count < 0 or self.epochs < 1:
            raise ValueError("count must be ≥ 0 and epochs ≥ 1")


@dataclass
class Trained:
    name: str
    model: nn.Module
    meta: dict
    seconds: float
    trained_now: bool

    @property
    def arch(self) -> str:
        return self.meta["arch"]


class ZooBuilder:
    """Trains (or reloads) models of one study; every model's seed is derived from the study seed and its name."""

    def __init__(self, zoo: Zoo, data: Dataset, train: TrainConfig, seed: int, progress: bool = False):
        self.zoo, self.data, self.train_cfg, self.seed, self.progress = zoo, data, train, seed, progress
        self.mean, self.std = data.channel_stats()
        self._teacher_cache: dict[tuple[str, str, str], torch.Tensor] = {}

    def model_seed(self, name: str) -> int:
        # stable across runs and Python processes (no hash randomisation)
        return (self.seed * 1_000_003 + sum((i + 1) * ord(c) for i, c in enumerate(name))) % (2**31 - 1)

    def build(
        self, name: str, arch: str, role: str, split: str, x: torch.Tensor, y: torch.Tensor, labels: str,
        epochs: int, teacher: Trained | None = None,
    ) -> Trained:
        cfg = TrainConfig(**{**self.train_cfg.to_dict(), "epochs": epochs})
        spec = ModelSpec(
            name=name, arch=arch, role=role, dataset=self.data.name, data=f"{split}(n={len(x)},seed={self.seed})",
            labels=labels, seed=self.model_seed(name), train=cfg.to_dict(), in_channels=self.data.in_channels,
            num_classes=self.data.num_classes, mean=self.mean, std=self.std,
            teacher_sha256=teacher.meta["sha256"] if teacher is not None else None,
        )

        def fit(model: nn.Module) -> dict:
            if labels == "ground_truth":
                target = y
            else:
                assert teacher is not None
                key = (teacher.meta["sha256"], split, labels)
                if key not in self._teacher_cache:  # the thief queries the source once per input
                    self._teacher_cache[key] = teacher_labels(teacher.model, x, labels, cfg.temperature)
                target = self._teacher_cache[key]
            t0 = time.perf_counter()
            hist = train_model(model, x, target, cfg, seed=spec.seed, progress=self.progress, desc=name)
            return {"epochs": epochs, "train_seconds": time.perf_counter() - t0, "final_loss": hist[-1],
                    "test_acc": accuracy(model, self.data.x_test, self.data.y_test), "label_source": labels,
                    "data": split, "seed": spec.seed}

        t0 = time.perf_counter()
        model, meta, now = self.zoo.get_or_train(spec, fit)
        log.info("%s %s: test acc %.4f", "trained" if now else "reused", name, meta["test_acc"])
        return Trained(name, model, meta, time.perf_counter() - t0, now)

    def group(self, prefix: str, g: Group, split: str, x, y, teacher: Trained) -> list[Trained]:
        out = []
        for i in range(g.count):
            name = f"{prefix}-{g.role}-{g.arch}-{g.labels}-{g.tag}{i}"
            out.append(self.build(name, g.arch, g.role, split, x, y, g.labels, g.epochs,
                                  teacher if g.role == "surrogate" else None))
        return out
