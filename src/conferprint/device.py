"""Where the work runs: ``--device auto|cpu|cuda``.

On a CUDA device the models and the training data live on the GPU. On either device training may
run under bf16 autocast (``amp``, off by default; on CPU it pays where the CPU has bf16 units,
e.g. AVX-512 BF16). Inputs and outputs of the library's public
functions stay CPU tensors; models stored in the zoo are always saved from CPU copies.
"""
from __future__ import annotations

import torch
from torch import nn

from conferprint.errors import ConferprintError


class DeviceError(ConferprintError, RuntimeError):
    pass


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error that says so."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but this torch build sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"device must be auto, cpu or cuda, got {spec!r}")
    return dev


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
