"""CIFAR-10 from the official "python version" layout (``cifar-10-batches-py``).

The official batches are pickles by format. They are read only from a folder the user names (or
the package's own download into the user cache), never from a file someone sent.
"""
from __future__ import annotations

import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from conferprint.data.base import (
    DataFormatError, Dataset, cache_dir, candidate_dirs, download, not_found, uint8_to_float,
)

log = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = "test_batch"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
HOW = (
    f"Download {URL}, unpack it, and pass the folder holding `cifar-10-batches-py` (or that folder) "
    "with --data-dir or $CONFERPRINT_DATA."
)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # official format; path chosen by the user
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a format error here
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataFormatError(f"{path}: missing b'data' or b'labels'")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFormatError(f"{path}: data shape {data.shape} with {len(labels)} labels, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


def _find(data_dir, allow_download: bool) -> Path:
    looked = candidate_dirs(data_dir, "cifar-10-batches-py", [])
    for d in looked:
        if all((d / f).is_file() for f in TRAIN + [TEST]):
            return d
    err = None
    if allow_download:
        root = cache_dir()
        archive = root / "cifar-10-python.tar.gz"
        try:
            if not archive.is_file():
                log.info("downloading %s", URL)
                download(URL, archive, MD5, timeout=60)
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
            return root / "cifar-10-batches-py"
        except (OSError, DataFormatError, tarfile.TarError) as e:
            err = str(e)
    raise not_found("CIFAR-10", looked, HOW, err)


def load_cifar10(data_dir: str | os.PathLike | None = None, *, allow_download: bool = True) -> Dataset:
    d = _find(data_dir, allow_download)
    parts = [_read_batch(d / f) for f in TRAIN]
    x_test, y_test = _read_batch(d / TEST)
    return Dataset(
        name="cifar10",
        x_train=uint8_to_float(np.concatenate([p[0] for p in parts])),
        y_train=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        x_test=uint8_to_float(x_test),
        y_test=torch.from_numpy(y_test),
        classes=list(CLASSES),
        source=str(d),
    )
