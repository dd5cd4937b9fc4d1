"""Build the study's models into a zoo: the source, and groups of surrogates/references on D1 or D2."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from conferprint.data import Dataset
from conferprint.device import resolve_device
from conferprint.models import arch_info
from conferprint.training import TrainConfig, accuracy, teacher_labels, train_model
from conferprint.zoo import ModelSpec, Zoo

log = logging.getLogger(__name__)

EXECUTORS = ("local", "pool", "ray")


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


def fit_model(model: nn.Module, spec: ModelSpec, x: torch.Tensor, target: torch.Tensor, x_test: torch.Tensor,
              y_test: torch.Tensor, progress: bool = False, device: torch.device | str = "cpu",
              amp: bool = False) -> dict:
    """Train ``model`` as ``spec`` says on ``(x, target)``; the metrics the zoo stores with it."""
    cfg = TrainConfig(**spec.train)
    t0 = time.perf_counter()
    hist = train_model(model, x, target, cfg, seed=spec.seed, progress=progress, desc=spec.name, device=device, amp=amp)
    return {"epochs": cfg.epochs, "train_seconds": time.perf_counter() - t0, "final_loss": hist[-1],
            "test_acc": accuracy(model, x_test, y_test), "label_source": spec.labels,
            "data": spec.data.split("(")[0], "seed": spec.seed}


@dataclass
class Job:
    """One model to train: its spec, its training inputs and labels, and its teacher (surrogates)."""

    spec: ModelSpec
    split: str
    x: torch.Tensor
    y: torch.Tensor
    teacher: Trained | None = None


def collect_from_zoo(builder: "ZooBuilder", jobs: list[Job], found: dict[str, tuple[nn.Module, dict] | None],
                     trained_now: set[str]) -> list[Trained]:
    """Every job's model after a parallel executor ran: ``found`` holds the entries loaded before it
    started, the models it trained (``trained_now``) are read back from the zoo."""
    out = []
    for j in jobs:
        entry = found[j.spec.name] if j.spec.name not in trained_now else builder.zoo.load(j.spec)
        if entry is None:
            raise RuntimeError(f"{j.spec.name}: the worker finished but the zoo holds no valid entry")
        model, meta = entry
        model.to(builder.device)
        now = j.spec.name in trained_now
        out.append(Trained(j.spec.name, model, meta, meta.get("train_seconds", 0.0) if now else 0.0, now))
    return out


class ZooBuilder:
    """Trains (or reloads) models of one study; every model's seed is derived from the study seed and its name.

    ``executor="local"`` trains one model after the other in this process; ``"pool"`` trains them in
    local worker processes, one model per worker (:mod:`conferprint.experiments.pool_executor`;
    ``executor_options``: workers, threads); ``"ray"`` runs every
    model still missing from the zoo as a Ray task (:mod:`conferprint.experiments.ray_executor`)
    that writes into the same zoo folder, so a cluster with a shared filesystem trains a study in
    parallel and an interrupted run resumes from what finished.
    """

    def __init__(self, zoo: Zoo, data: Dataset, train: TrainConfig, seed: int, progress: bool = False,
                 executor: str = "local", executor_options: dict | None = None, device: str = "cpu",
                 amp: bool = False):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        self.zoo, self.data, self.train_cfg, self.seed, self.progress = zoo, data, train, seed, progress
        self.executor, self.executor_options = executor, dict(executor_options or {})
        if executor == "pool":  # bad options fail now, not after the source has trained
            from conferprint.experiments.pool_executor import check_options

            check_options(**self.executor_options)
        self.device, self.amp = resolve_device(device), amp
        self.mean, self.std = data.channel_stats()
        self._teacher_cache: dict[tuple[str, str, str], torch.Tensor] = {}

    def model_seed(self, name: str) -> int:
        # stable across runs and Python processes (no hash randomisation)
        return (self.seed * 1_000_003 + sum((i + 1) * ord(c) for i, c in enumerate(name))) % (2**31 - 1)

    def job(self, name: str, arch: str, role: str, split: str, x: torch.Tensor, y: torch.Tensor, labels: str,
            epochs: int, teacher: Trained | None = None) -> Job:
        cfg = TrainConfig(**{**self.train_cfg.to_dict(), "epochs": epochs})
        spec = ModelSpec(
            name=name, arch=arch, role=role, dataset=self.data.name, data=f"{split}(n={len(x)},seed={self.seed})",
            labels=labels, seed=self.model_seed(name), train=cfg.to_dict(), in_channels=self.data.in_channels,
            num_classes=self.data.num_classes, mean=self.mean, std=self.std,
            teacher_sha256=teacher.meta["sha256"] if teacher is not None else None,
            # bf16 training gives other weights: part of the model's identity, so a zoo trained in
            # fp32 is not reused for a bf16 run (or the reverse); fp32 specs are unchanged
            extra={"amp": "bf16"} if self.amp else {},
        )
        return Job(spec, split, x, y, teacher)

    def targets(self, job: Job) -> torch.Tensor:
        if job.spec.labels == "ground_truth":
            return job.y
        assert job.teacher is not None
        key = (job.teacher.meta["sha256"], job.split, job.spec.labels)
        if key not in self._teacher_cache:  # the thief queries the source once per input
            self._teacher_cache[key] = teacher_labels(job.teacher.model, job.x, job.spec.labels,  # type: ignore[arg-type]
                                                      job.spec.train["temperature"])
        return self._teacher_cache[key]

    def run(self, job: Job) -> Trained:
        t0 = time.perf_counter()
        model, meta, now = self.zoo.get_or_train(
            job.spec, lambda m: fit_model(m, job.spec, job.x, self.targets(job), self.data.x_test, self.data.y_test,
                                          self.progress, self.device, self.amp))
        model.to(self.device)  # reused entries load on the CPU
        log.info("%s %s: test acc %.4f", "trained" if now else "reused", job.spec.name, meta["test_acc"])
        return Trained(job.spec.name, model, meta, time.perf_counter() - t0, now)

    def run_all(self, jobs: list[Job]) -> list[Trained]:
        if self.executor == "ray" and jobs:
            from conferprint.experiments.ray_executor import run_jobs_on_ray

            return run_jobs_on_ray(self, jobs, **self.executor_options)
        if self.executor == "pool" and jobs:
            from conferprint.experiments.pool_executor import run_jobs_in_pool

            return run_jobs_in_pool(self, jobs, **self.executor_options)
        return [self.run(j) for j in jobs]

    def build(
        self, name: str, arch: str, role: str, split: str, x: torch.Tensor, y: torch.Tensor, labels: str,
        epochs: int, teacher: Trained | None = None,
    ) -> Trained:
        return self.run(self.job(name, arch, role, split, x, y, labels, epochs, teacher))

    def group_jobs(self, prefix: str, g: Group, split: str, x, y, teacher: Trained) -> list[Job]:
        return [self.job(f"{prefix}-{g.role}-{g.arch}-{g.labels}-{g.tag}{i}", g.arch, g.role, split, x, y, g.labels,
                         g.epochs, teacher if g.role == "surrogate" else None) for i in range(g.count)]

    def group(self, prefix: str, g: Group, split: str, x, y, teacher: Trained) -> list[Trained]:
        return self.run_all(self.group_jobs(prefix, g, split, x, y, teacher))
