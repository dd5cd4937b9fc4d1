from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conferprint.data import load_digits
from conferprint.models import build_model
from conferprint.training import TrainConfig, teacher_labels, train_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    return load_digits(seed=0)


def _train(arch, x, y, seed, epochs=25):
    m = build_model(arch, in_channels=1, num_classes=10, seed=seed)
    train_model(m, x, y, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, augment=False), seed=seed)
    return m.eval()


@pytest.fixture(scope="session")
def digit_models(digits):
    """A source, 2 surrogates (its soft labels) and 2 references (ground truth) on real 8×8 digits."""
    x, y = digits.x_train, digits.y_train
    half = len(x) // 2
    x1, y1 = x[:half], y[:half]
    source = _train("digits_cnn", x1, y1, seed=1)
    soft = teacher_labels(source, x1, "soft")
    surrogates = [_train(a, x1, soft, seed=10 + i) for i, a in enumerate(["digits_cnn", "digits_linear"])]
    references = [_train(a, x1, y1, seed=20 + i) for i, a in enumerate(["digits_cnn", "digits_linear"])]
    return {"source": source, "surrogates": surrogates, "references": references, "x": x1, "y": y1}
