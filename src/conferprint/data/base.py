from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from conferprint.errors import ConferprintError

log = logging.getLogger(__name__)


class DataNotFoundError(ConferprintError, FileNotFoundError):
    """No copy of a dataset was found in any of the places searched."""


class DataFormatError(ConferprintError, ValueError):
    """A dataset file exists but is not in the expected official format."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # float32 in [0, 1], (N, C, H, W)
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str  # where it was read from

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images (the models' normalisation)."""
        mean = self.x_train.mean(dim=(0, 2, 3))
        std = self.x_train.std(dim=(0, 2, 3))
        return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def uint8_to_float(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    return t.to(torch.float32).div_(255.0)


def split_defender_attacker(n: int, seed: int, defender_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, disjoint split of ``range(n)`` into defender (D1) and attacker (D2) indices."""
    if not 0.0 < defender_fraction < 1.0:
        raise ValueError(f"defender_fraction must be in (0, 1), got {defender_fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = int(round(n * defender_fraction))
    return perm[:k].sort().values, perm[k:].sort().values


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "conferprint"


def candidate_dirs(explicit: str | os.PathLike | None, subdir: str, system: list[str]) -> list[Path]:
    """Search order: the explicit folder, ``$CONFERPRINT_DATA`` (and its ``subdir``), system folders, the user cache."""
    dirs: list[Path] = []
    if explicit is not None:
        dirs += [Path(explicit), Path(explicit) / subdir]
    env = os.environ.get("CONFERPRINT_DATA")
    if env:
        dirs += [Path(env), Path(env) / subdir]
    dirs += [Path(s) for s in system]
    dirs.append(cache_dir() / subdir)
    return dirs


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically, checking the md5 of upstream's file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None and md5sum(Path(tmp)) != md5:
            raise DataFormatError(f"downloaded {url} but its md5 does not match {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def not_found(dataset: str, looked: list[Path], how: str, download_error: str | None = None) -> DataNotFoundError:
    lines = [f"{dataset} was not found. Looked in:"] + [f"  - {p}" for p in looked]
    if download_error:
        lines.append(f"Download into the cache failed: {download_error}")
    lines.append(how)
    return DataNotFoundError("\n".join(lines))
