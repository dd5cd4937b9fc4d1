"""Architecture registry.

Every model takes inputs in [0, 1] with shape ``(N, C, H, W)``; the per-channel normalisation
lives inside the model (:class:`Normalize`), so attacks and fingerprints work in pixel space.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from conferprint.models import cifar, small
from conferprint.models.common import AverageEnsemble, Normalize

__all__ = ["ArchInfo", "ARCHITECTURES", "build_model", "arch_info", "list_architectures", "Normalize", "AverageEnsemble",
           "ensemble_arch"]


@dataclass(frozen=True)
class ArchInfo:
    name: str
    family: str  # architectures of one family share their inductive biases (used in reports)
    input_size: int  # 28 or 32 (8 for the digits test net)
    builder: Callable[..., nn.Module]
    channels_last: bool  # weights and inputs in channels_last: pays on a CPU for the convolutional nets' CEM and training
    # the layout it trains in on a CPU, where it differs (train_model switches for the run and back); None = channels_last.
    # LeNet's 6-map convolutions train faster contiguous, while its CEM passes stay faster in channels_last
    # (python benchmarks/memory_layout.py; benchmarks/results/memory-layout.json)
    train_channels_last: bool | None = None


ARCHITECTURES: dict[str, ArchInfo] = {
    a.name: a
    for a in [
        ArchInfo("mlp", "mlp", 28, small.MLP, False),
        ArchInfo("cnn", "cnn", 28, small.CNN, True),
        ArchInfo("cnn_small", "cnn", 28, small.CNNSmall, True),
        ArchInfo("cnn_wide", "cnn", 28, small.CNNWide, True),
        ArchInfo("lenet_bn", "lenet", 28, small.LeNetBN, True, train_channels_last=False),
        # 32×32 variants of the small networks: CIFAR-10 at the scale a CPU allows
        ArchInfo("mlp32", "mlp", 32, partial(small.MLP, size=32), False),
        ArchInfo("cnn32", "cnn", 32, partial(small.CNN, size=32), True),
        ArchInfo("cnn_small32", "cnn", 32, partial(small.CNNSmall, size=32), True),
        ArchInfo("lenet_bn32", "lenet", 32, partial(small.LeNetBN, size=32), True, train_channels_last=False),
        ArchInfo("digits_linear", "linear", 8, small.DigitsLinear, False),
        ArchInfo("digits_cnn", "cnn", 8, small.DigitsCNN, False),
        ArchInfo("resnet20", "resnet", 32, cifar.resnet20, True),
        ArchInfo("resnet56", "resnet", 32, cifar.resnet56, True),
        ArchInfo("vgg16_bn", "vgg", 32, cifar.vgg16_bn, True),
        ArchInfo("vgg19_bn", "vgg", 32, cifar.vgg19_bn, True),
        ArchInfo("densenet_small", "densenet", 32, cifar.densenet_small, True),
        ArchInfo("mobilenetv2", "mobilenet", 32, cifar.mobilenetv2, True),
    ]
}


def list_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


_ENSEMBLE = re.compile(r"^ensemble([1-9][0-9]?)-(.+)$")


def ensemble_arch(arch: str, members: int) -> str:
    """The name of an average of ``members`` models of ``arch`` (e.g. ``ensemble3-cnn_small``)."""
    name = f"ensemble{members}-{arch}"
    arch_info(name)
    return name


def arch_info(name: str) -> ArchInfo:
    """The registry entry of ``name``; ``ensemble<k>-<arch>`` is k models of ``arch`` averaged."""
    m = _ENSEMBLE.match(name)
    if m is not None:
        k, base = int(m.group(1)), arch_info(m.group(2))
        return ArchInfo(name, base.family, base.input_size,
                        lambda **kw: AverageEnsemble([base.builder(**kw) for _ in range(k)]), base.channels_last,
                        base.train_channels_last)
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(list_architectures())}"
                         " (and ensemble<k>-<arch>)") from None


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build architecture ``name``; with ``seed`` the initial weights are reproducible.

    The seed is applied inside :func:`torch.random.fork_rng`, so the caller's global RNG state
    is left exactly as it was.
    """
    info = arch_info(name)
    mean = mean if mean is not None else (0.5,) * in_channels
    std = std if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} entries, got {len(mean)} and {len(std)}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        body = info.builder(in_channels=in_channels, num_classes=num_classes)
    model = nn.Sequential(Normalize(mean, std), body)
    if info.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # read by training.train_model (a plain attribute: not saved, set again when a saved model is rebuilt)
    model.train_channels_last = info.channels_last if info.train_channels_last is None else info.train_channels_last
    return model
