"""scikit-learn's 1,797 real 8×8 handwritten digits: a small real dataset for fast tests."""
from __future__ import annotations

import numpy as np
import torch

from conferprint.data.base import Dataset


def load_digits(data_dir=None, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """``data_dir`` is ignored (the data ships inside scikit-learn). Split seeded."""
    from sklearn.datasets import load_digits as _sk

    d = _sk()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    k = int(round(len(y) * test_fraction))
    te, tr = perm[:k], perm[k:]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], "sklearn.datasets.load_digits")
