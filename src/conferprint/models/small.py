"""Small networks for 28×28 grayscale inputs (Fashion-MNIST), their 32×32 variants (CIFAR-10 on a CPU)
and 8×8 digits (tests).

Where a ReLU meets a max-pooling, the pooling comes first. ReLU is monotone, so the two commute exactly: the
same outputs and, bit for bit, the same gradients (where a window's maximum is ≤ 0 both orders pass a zero
gradient), with the ReLU and its backward pass on a quarter of the values. On the 2-core CPU the zoo's loop
trains cnn_small 1.08–1.14× faster and LeNet 1.00–1.03× (two runs), the larger cnn within the machine's noise,
and CEM's input gradients run 1.00–1.15× faster (``python benchmarks/pool_order.py``, which checks that both
orders train the same weights bit for bit). The swapped modules have no parameters, so the parameters keep their
indices and models saved before the swap load unchanged.
"""
from __future__ import annotations

from torch import nn


def _conv_block(cin: int, cout: int, bn: bool, pool: bool = False) -> list[nn.Module]:
    """3×3 convolution, BatchNorm, (2×2 max-pooling,) ReLU: pooling before the ReLU (module docstring)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.ReLU(inplace=True)]


def MLP(in_channels: int = 1, num_classes: int = 10, size: int = 28) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * size * size, 256), nn.ReLU(inplace=True),
        nn.Linear(256, 128), nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


def _cnn(in_channels: int, num_classes: int, c1: int, c2: int, hidden: int, size: int = 28) -> nn.Module:
    return nn.Sequential(
        *_conv_block(in_channels, c1, True, pool=True),  # size/2
        *_conv_block(c1, c2, True, pool=True),  # size/4
        nn.Flatten(),
        nn.Linear(c2 * (size // 4) ** 2, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def CNN(in_channels: int = 1, num_classes: int = 10, size: int = 28) -> nn.Module:
    """Two conv blocks (32, 64) with BatchNorm and a 128-unit head (among the default preset's testing models)."""
    return _cnn(in_channels, num_classes, 32, 64, 128, size)


def CNNSmall(in_channels: int = 1, num_classes: int = 10, size: int = 28) -> nn.Module:
    return _cnn(in_channels, num_classes, 16, 32, 64, size)


def CNNWide(in_channels: int = 1, num_classes: int = 10, size: int = 28) -> nn.Module:
    return _cnn(in_channels, num_classes, 48, 96, 256, size)


def LeNetBN(in_channels: int = 1, num_classes: int = 10, size: int = 28) -> nn.Module:
    """LeNet-5 (5×5 convolutions, 6 and 16 maps) with BatchNorm."""
    side = ((size // 2) - 4) // 2  # 5 for 28×28 inputs, 6 for 32×32
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, bias=False), nn.BatchNorm2d(6), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Conv2d(6, 16, 5, bias=False), nn.BatchNorm2d(16), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


def DigitsLinear(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """Flatten + Linear on 8×8 scikit-learn digits: the smallest real model, for tests."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))


def DigitsCNN(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(inplace=True),  # 4×4
        nn.Flatten(), nn.Linear(16 * 16, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes),
    )
