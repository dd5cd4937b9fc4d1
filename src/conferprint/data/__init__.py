"""Datasets as in-memory tensors: images float32 in [0, 1], shape (N, C, H, W); labels int64.

Loaders read the official formats from a folder the user names; see :mod:`conferprint.data.locate`
for the search order and the error raised when nothing is found.
"""
from conferprint.data.base import Dataset, DataNotFoundError, DataFormatError, split_defender_attacker
from conferprint.data.fashion_mnist import load_fashion_mnist
from conferprint.data.cifar10 import load_cifar10
from conferprint.data.digits import load_digits
from conferprint.data.cinic10 import load_cinic10
from conferprint.data.imagenet32 import load_imagenet32, IMAGENET32_SUBSET_100

LOADERS = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "digits": load_digits,
    "cinic10": load_cinic10,
    "imagenet32": load_imagenet32,
}


def load_dataset(name: str, data_dir=None, **kwargs) -> Dataset:
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}") from None
    return loader(data_dir, **kwargs)


__all__ = [
    "Dataset", "DataNotFoundError", "DataFormatError", "split_defender_attacker", "load_dataset", "LOADERS",
    "load_fashion_mnist", "load_cifar10", "load_digits", "load_cinic10", "load_imagenet32", "IMAGENET32_SUBSET_100",
]
