"""Transferability and conferrability (method.md, "Scores"), hard and soft."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conferprint.training import predict_logits


def labels_of(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Top-1 labels of every model on ``x``: shape (len(models), N)."""
    if not models:
        return torch.empty(0, len(x), dtype=torch.long, device=x.device)
    return torch.stack([predict_logits(m, x).argmax(1) for m in models])


def transfer(labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Transfer(Models, x)``: share of models (rows of ``labels``) predicting ``target``; 0 for no models."""
    if labels.shape[0] == 0:
        return torch.zeros(labels.shape[1], device=target.device)
    return (labels == target[None, :]).float().mean(0)


def confer(surrogate_labels: torch.Tensor, reference_labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Confer(S, R, x) = Transfer(S, x) · (1 − Transfer(R, x))``."""
    return transfer(surrogate_labels, target) * (1.0 - transfer(reference_labels, target))


def soft_conferrability(surrogate_probs: Sequence[torch.Tensor], reference_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``E(x)_k = mean_{m ∈ {M} ∪ S} softmax(m(x))_k · (1 − mean_{r ∈ R} softmax(r(x))_k)``.

    ``surrogate_probs`` holds the source's probabilities and the surrogates'; with no references
    the second factor is 1.
    """
    surr = torch.stack(list(surrogate_probs)).mean(0)
    if len(reference_probs) == 0:
        return surr
    return surr * (1.0 - torch.stack(list(reference_probs)).mean(0))


def probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.softmax(model(x), dim=1)
