"""CINIC-10 (Darlow et al. 2018) from its official layout: ``{train,valid,test}/<class>/*.png``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from conferprint.data.base import DataFormatError, Dataset, candidate_dirs, not_found, uint8_to_float
from conferprint.data.cifar10 import CLASSES

HOW = (
    "Download CINIC-10 from https://datashare.ed.ac.uk/handle/10283/3192, unpack it, and pass the folder "
    "holding train/, valid/ and test/ with --data-dir or $CONFERPRINT_DATA."
)


def _read_split(folder: Path, limit_per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for k, cls in enumerate(CLASSES):
        cdir = folder / cls
        if not cdir.is_dir():
            raise DataFormatError(f"{folder}: class folder {cls!r} is missing")
        files = sorted(p for p in cdir.iterdir() if p.suffix.lower() == ".png")
        for p in files[:limit_per_class]:
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise DataFormatError(f"{p}: not a readable PNG ({e})") from e
            if arr.shape != (32, 32, 3):
                raise DataFormatError(f"{p}: image is {arr.shape[:2]}, expected 32×32")
            images.append(arr)
            labels.append(k)
    if not images:
        raise DataFormatError(f"{folder}: no PNG images")
    return np.stack(images).transpose(0, 3, 1, 2), np.asarray(labels, dtype=np.int64)


def load_cinic10(
    data_dir: str | os.PathLike | None = None, *, include_valid: bool = True, limit_per_class: int | None = None
) -> Dataset:
    """Training set = ``train`` (+ ``valid`` when ``include_valid``); test set = ``test``."""
    looked = candidate_dirs(data_dir, "cinic-10", [])
    root = next((d for d in looked if all((d / s).is_dir() for s in ("train", "valid", "test"))), None)
    if root is None:
        raise not_found("CINIC-10", looked, HOW)
    splits = ["train", "valid"] if include_valid else ["train"]
    parts = [_read_split(root / s, limit_per_class) for s in splits]
    x_test, y_test = _read_split(root / "test", limit_per_class)
    return Dataset(
        name="cinic10",
        x_train=uint8_to_float(np.concatenate([p[0] for p in parts])),
        y_train=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        x_test=uint8_to_float(x_test),
        y_test=torch.from_numpy(y_test),
        classes=list(CLASSES),
        source=str(root),
    )
