"""Fashion-MNIST (Xiao et al. 2017) from the four official gzip IDX files."""
from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import torch

from conferprint.data.base import (
    DataFormatError, Dataset, cache_dir, candidate_dirs, download, not_found, uint8_to_float,
)

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# md5 of upstream's files; checked on download only (Debian recompressed its copies).
UPSTREAM_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIRS = ["/usr/share/datasets/fashion-mnist"]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
HOW = (
    "Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four files\n"
    f"{', '.join(FILES.values())} from {URL} into a folder and pass it with --data-dir\n"
    "or $CONFERPRINT_DATA."
)


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read a (gzip-compressed) IDX file of unsigned bytes, validating its header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataFormatError(f"{path}: cannot read ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataFormatError(f"{path}: IDX data type 0x{raw[2]:02x}, expected unsigned byte (0x08)")
    ndim = raw[3]
    if ndim != expected_ndim:
        raise DataFormatError(f"{path}: {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataFormatError(f"{path}: header says {shape} ({count} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(data_dir, allow_download: bool) -> Path:
    looked = candidate_dirs(data_dir, "fashion-mnist", SYSTEM_DIRS)
    for d in looked:
        if all((d / f).is_file() for f in FILES.values()):
            return d
    err = None
    if allow_download:
        target = cache_dir() / "fashion-mnist"
        try:
            for f in FILES.values():
                if not (target / f).is_file():
                    log.info("downloading %s", URL + f)
                    download(URL + f, target / f, UPSTREAM_MD5[f])
            return target
        except (OSError, DataFormatError) as e:
            err = str(e)
    raise not_found("Fashion-MNIST", looked, HOW, err)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, *, allow_download: bool = True) -> Dataset:
    d = _find(data_dir, allow_download)
    arrays = {k: read_idx(d / f, 3 if k.endswith("images") else 1) for k, f in FILES.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataFormatError(f"{d}: {split} has {n_img} images but {n_lab} labels")
        if arrays[f"{split}_labels"].max(initial=0) >= len(CLASSES):
            raise DataFormatError(f"{d}: {split} labels outside 0..9")
    return Dataset(
        name="fashion-mnist",
        x_train=uint8_to_float(arrays["train_images"]),
        y_train=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        x_test=uint8_to_float(arrays["test_images"]),
        y_test=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        classes=list(CLASSES),
        source=str(d),
    )
