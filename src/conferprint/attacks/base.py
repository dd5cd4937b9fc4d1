"""What every removal attack gets (:class:`AttackContext`), returns (:class:`Stolen`), and how it is named.

The attacker works from its own half of the data (D2) and the source model, never from D1: the
context hands out D2 only, through :meth:`AttackContext.attacker_data`, and records every training
index it gave away in ``touched`` (the tests assert that it never meets D1). Queries to the source go
through :meth:`AttackContext.query_source`, which counts them.

Attacks are frozen dataclasses registered under a name; :func:`make_attack` builds one from a
config mapping and refuses unknown keys and ill-typed or out-of-range values with a message that
names the key.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from conferprint.data import Dataset
from conferprint.errors import ConferprintError
from conferprint.models import build_model
from conferprint.training import TrainConfig, predict_logits, train_model

LabelMode = Literal["soft", "hard", "ground_truth"]


class AttackConfigError(ConferprintError, ValueError):
    """An attack name, parameter key or value that the registry refuses."""


@dataclass
class Stolen:
    """The attacker's model, its architecture name (a registry name) and what the attack reports."""

    model: nn.Module
    arch: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackContext:
    source: nn.Module
    source_arch: str
    data: Dataset  # shapes, classes and normalisation; its training set is read only through `attacker_data`
    attacker_indices: torch.Tensor  # D2: indices into data.x_train
    seed: int
    train: TrainConfig = TrainConfig()  # the study's training settings; attacks override epochs and lr
    data_dir: str | None = None  # where transfer sets from other domains are looked for
    progress: bool = False
    touched: set[int] = field(default_factory=set)
    source_queries: int = 0

    def __post_init__(self) -> None:
        self.attacker_indices = torch.as_tensor(self.attacker_indices, dtype=torch.long)
        if self.attacker_indices.numel() == 0:
            raise ValueError("the attacker has no data (empty D2)")
        self.mean, self.std = self.data.channel_stats()

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 7919 + salt) % (2**63 - 1))

    def attacker_data(self, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """D2 images and ground-truth labels (all, or the given positions within D2); recorded in ``touched``."""
        idx = self.attacker_indices if positions is None else self.attacker_indices[positions]
        self.touched.update(int(i) for i in idx)
        return self.data.x_train[idx], self.data.y_train[idx]

    def query_source(self, x: torch.Tensor, mode: Literal["soft", "hard", "logits"], temperature: float = 1.0) -> torch.Tensor:
        """The source's answers on ``x``: probabilities (soft), top-1 labels (hard) or raw logits."""
        self.source_queries += len(x)
        logits = predict_logits(self.source, x)
        if mode == "logits":
            return logits
        if mode == "soft":
            return F.softmax(logits / temperature, dim=1)
        if mode == "hard":
            return logits.argmax(1)
        raise ValueError(f"mode must be soft, hard or logits, got {mode!r}")

    def labels_for(self, x: torch.Tensor, y: torch.Tensor, mode: LabelMode) -> torch.Tensor:
        return y if mode == "ground_truth" else self.query_source(x, mode)

    def fresh_model(self, arch: str, salt: int = 0) -> nn.Module:
        return build_model(arch, in_channels=self.data.in_channels, num_classes=self.num_classes,
                           mean=self.mean, std=self.std, seed=(self.seed * 31 + salt) % (2**31 - 1))

    def train_fresh(self, arch: str, x: torch.Tensor, target: torch.Tensor, cfg: TrainConfig, desc: str, *,
                    salt: int = 0, **hooks: Any) -> nn.Module:
        """A fresh ``arch`` (initialisation salted by ``salt``) trained on ``(x, target)`` with seed
        ``seed + salt``; ``hooks`` go to :func:`~conferprint.training.train_model` (e.g. ``perturb``)."""
        model = self.fresh_model(arch, salt)
        train_model(model, x, target, cfg, seed=self.seed + salt, progress=self.progress, desc=desc, **hooks)
        return model.eval()

    def copy_source(self) -> nn.Module:
        """A deep copy: modification attacks never touch the defender's model itself."""
        return copy.deepcopy(self.source)

    def resolve_arch(self, arch: str) -> str:
        return self.source_arch if arch == "same" else arch

    def train_config(self, epochs: int, lr: float | None = None, **extra: Any) -> TrainConfig:
        return dataclasses.replace(self.train, epochs=epochs, **({"lr": lr} if lr is not None else {}), **extra)


class Attack:
    """Base of the registered attacks (frozen dataclasses). Subclasses set ``name`` and ``cite``."""

    name: ClassVar[str] = ""
    cite: ClassVar[str] = ""
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}  # allowed values of string parameters
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}  # inclusive bounds of numeric parameters

    def run(self, ctx: AttackContext) -> Stolen:  # pragma: no cover - interface
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


ATTACKS: dict[str, type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    if not cls.name or cls.name in ATTACKS:
        raise ValueError(f"attack name {cls.name!r} is empty or already registered")
    ATTACKS[cls.name] = cls
    return cls


def list_attacks() -> list[str]:
    return sorted(ATTACKS)


def check_type(where: str, value: Any, kind: type) -> Any:
    """``value`` as a config value of type ``kind`` (bool, int, float — ints accepted — or str);
    refused with a message that names ``where``. Other kinds pass unchecked."""
    if kind is bool:
        if not isinstance(value, bool):
            raise AttackConfigError(f"{where}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AttackConfigError(f"{where}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AttackConfigError(f"{where}: expected a finite number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise AttackConfigError(f"{where}: expected a string, got {value!r}")
    return value


def read_config_file(path: str | os.PathLike) -> Any:
    """The YAML document at ``path``; an unreadable or malformed file is an :class:`AttackConfigError`."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise AttackConfigError(f"{path}: cannot read the config ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise AttackConfigError(f"{path}: not valid YAML ({e})") from e


def _check_value(where: str, key: str, value: Any, default: Any, cls: type[Attack]) -> Any:
    value = check_type(f"{where}.{key}", value, type(default))
    if key in cls.choices and value not in cls.choices[key]:
        raise AttackConfigError(f"{where}.{key}: {value!r} is not one of {', '.join(map(str, cls.choices[key]))}")
    if key in cls.ranges:
        lo, hi = cls.ranges[key]
        if not lo <= value <= hi:
            raise AttackConfigError(f"{where}.{key}: {value!r} is outside [{lo}, {hi}]")
    return value


def make_attack(name: Any, params: Any = None, where: str = "attack") -> Attack:
    """Build attack ``name`` from ``params`` (a mapping); every refusal names the offending key."""
    if not isinstance(name, str) or name not in ATTACKS:
        raise AttackConfigError(f"{where}.name: unknown attack {name!r}; known: {', '.join(list_attacks())}")
    cls = ATTACKS[name]
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise AttackConfigError(f"{where}.params: expected a mapping of parameter names to values, got {params!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    checked = {}
    for key, value in params.items():
        if key not in fields:
            raise AttackConfigError(f"{where}.params.{key}: unknown parameter of attack {name!r}; "
                                    f"known: {', '.join(sorted(fields)) or '(none)'}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        checked[key] = _check_value(f"{where}.params", key, value, default, cls)
    try:
        return cls(**checked)
    except (TypeError, ValueError) as e:
        raise AttackConfigError(f"{where}.params: {e}") from e
