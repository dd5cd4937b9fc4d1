"""Trained models on disk: ``<name>.safetensors`` + ``<name>.json`` (spec, metrics, sha256).

Entries are written atomically (temporary file + :func:`os.replace`, weights before metadata), so an
interrupted run leaves either a complete entry or none. An entry is reused only when its recorded
spec equals the requested one and its weights still hash to the recorded sha256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conferprint._io import atomic_write, atomic_write_text
from conferprint.models import build_model
from conferprint.errors import ConferprintError

log = logging.getLogger(__name__)

ROLES = ("source", "surrogate", "reference", "stolen")


class ZooError(ConferprintError, RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a trained model (its identity in the zoo)."""

    name: str
    arch: str
    role: str  # source | surrogate | reference | stolen
    dataset: str
    data: str  # which data it was trained on, e.g. "D1" or "D2"
    labels: str  # ground_truth | soft | hard
    seed: int
    train: dict  # TrainConfig as a dict
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    teacher_sha256: str | None = None  # the labelling model, for surrogates
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise ValueError(f"invalid model name {self.name!r}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelSpec":
        """The inverse of :meth:`to_json` (e.g. a zoo entry's ``spec``)."""
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def build(self) -> nn.Module:
        return build_model(self.arch, in_channels=self.in_channels, num_classes=self.num_classes,
                           mean=self.mean, std=self.std, seed=self.seed)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load safetensors weights into ``model`` (strict: every key, every shape)."""
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for malformed files
        raise ZooError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ZooError(f"{path}: weights do not fit this architecture: {e}") from e
    return model


class Zoo:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def paths(self, name: str) -> tuple[Path, Path]:
        return self.root / f"{name}.safetensors", self.root / f"{name}.json"

    def meta(self, name: str) -> dict | None:
        _, jpath = self.paths(name)
        if not jpath.is_file():
            return None
        try:
            return json.loads(jpath.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable zoo metadata %s: %s", jpath, e)
            return None

    def load(self, spec: ModelSpec) -> tuple[nn.Module, dict] | None:
        """The stored model for ``spec``, or ``None`` when absent, stale or corrupt."""
        meta = self.meta(spec.name)
        if meta is None:
            return None
        if meta.get("spec") != json.loads(json.dumps(spec.to_json())):
            log.info("zoo entry %s was trained with another spec; retraining", spec.name)
            return None
        wpath, _ = self.paths(spec.name)
        if not wpath.is_file() or sha256_file(wpath) != meta.get("sha256"):
            log.warning("zoo entry %s: weights missing or hash mismatch; retraining", spec.name)
            return None
        model = load_weights(spec.build(), wpath)
        model.eval()
        return model, meta

    def save(self, spec: ModelSpec, model: nn.Module, metrics: dict[str, Any]) -> dict:
        wpath, jpath = self.paths(spec.name)
        state = state_dict_for_save(model)
        # one metadata key: safetensors writes a metadata map in a per-process hash order, so two keys made
        # the file (and its sha256) differ between processes for the same weights
        header = {"conferprint": json.dumps({"arch": spec.arch, "name": spec.name}, sort_keys=True)}
        atomic_write(wpath, lambda tmp: save_file(state, tmp, metadata=header))
        meta = {"name": spec.name, "arch": spec.arch, "role": spec.role, "spec": spec.to_json(),
                "sha256": sha256_file(wpath), **metrics}
        atomic_write_text(jpath, json.dumps(meta, indent=2, sort_keys=True))
        return json.loads(json.dumps(meta))

    def get_or_train(self, spec: ModelSpec, train: Callable[[nn.Module], dict[str, Any]]) -> tuple[nn.Module, dict, bool]:
        """Load ``spec`` from the zoo, or build it, call ``train(model) -> metrics`` and store it.

        Returns ``(model, metadata, trained_now)``.
        """
        found = self.load(spec)
        if found is not None:
            return found[0], found[1], False
        model = spec.build()
        metrics = train(model)
        model.eval()
        return model, self.save(spec, model, metrics), True
