"""Labels-only oracles: a suspect is a callable from inputs to top-1 labels, nothing more.

A local model, an ONNX file and a remote API all become an :data:`Oracle`, so verification
cannot peek at logits by accident.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from conferprint.training import predict_labels
from conferprint.errors import ConferprintError

Oracle = Callable[[torch.Tensor], torch.Tensor]


class OracleError(ConferprintError, RuntimeError):
    """A suspect answered something that is not one label per query."""


def model_oracle(model: nn.Module, batch_size: int = 512) -> Oracle:
    def oracle(x: torch.Tensor) -> torch.Tensor:
        return predict_labels(model, x, batch_size)

    return oracle


def random_oracle(num_classes: int, seed: int) -> Oracle:
    """A suspect that answers uniformly at random (a sanity baseline: CAEAcc ≈ 1/classes)."""
    gen = torch.Generator().manual_seed(seed)

    def oracle(x: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, num_classes, (len(x),), generator=gen)

    return oracle


def query_labels(oracle: Oracle, x: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Ask ``oracle`` and check its answer: one integer label per input, inside the class range."""
    labels = torch.as_tensor(oracle(x))
    if labels.ndim != 1 or len(labels) != len(x):
        raise OracleError(f"suspect answered shape {tuple(labels.shape)} for {len(x)} queries; expected ({len(x)},)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise OracleError(f"suspect answered {labels.dtype} labels; expected integers")
    labels = labels.to(torch.int64)
    if len(labels) and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        raise OracleError(f"suspect answered labels outside 0..{(num_classes or 0) - 1}")
    return labels
