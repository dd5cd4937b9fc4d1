from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; the statistics are saved with the weights."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AverageEnsemble(nn.Module):
    """Members' softmax outputs averaged; returns the log of the mean (so argmax and CE behave as logits).

    The removal attack "ensemble of n surrogates" (Lukas et al. 2021) deploys this as one model.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


# the modules fold_batchnorm traces: PyTorch's layers and this package's architectures (pure functions of the input)
_TRACEABLE = ("torch.nn.", "conferprint.models.")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm that directly follows a convolution folded into that convolution's weights
    and bias: for a model in eval mode, whose BatchNorm is then a fixed per-channel affine map, the same function
    with one pass over the activations fewer, forward and backward.

    For frozen models only — the ensemble members the attacks optimise against (``fingerprint.ensemble.Member``):
    the result is a traced copy (``torch.fx``; ``torch.nn.utils.fusion.fuse_conv_bn_eval`` folds each pair) whose
    weights no longer follow the original's, marked ``batchnorm_folded``. The original is left as it is. Returned
    itself: a model with any module in training mode, one without a foldable BatchNorm, one already folded, and one
    with a module that is neither PyTorch's nor this package's architectures' (a tracer runs ``forward`` once with
    placeholders: a wrapper that counts calls, draws noise or branches on the data would be traced wrongly or not
    at all), or that ``torch.fx`` still cannot trace. The outputs equal the original's up to
    floating-point rounding (the products are formed in another order), not bit for bit. On the 2-core CPU CEM's
    input gradients run 1.12–1.25×, 1.58–1.73× and 1.16–1.22× faster for cnn_small, LeNet and cnn, and CEM's step on
    the default preset's ensemble 1.28–1.32× (two runs of ``python benchmarks/fold_batchnorm.py``)."""
    mods = list(model.modules())
    if getattr(model, "batchnorm_folded", False) or any(m.training for m in mods) \
            or not any(isinstance(m, nn.BatchNorm2d) for m in mods) \
            or not all(type(m).__module__.startswith(_TRACEABLE) for m in mods):
        return model
    from torch import fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from conferprint.training import weights_channels_last

    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as e:  # noqa: BLE001 - folding is an optimisation; any model still works unfolded
        log.debug("fold_batchnorm: %s cannot be traced (%s); used unfolded", type(model).__name__, e)
        return model
    modules = dict(traced.named_modules())
    folds = 0
    for node in list(traced.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        conv = node.args[0] if isinstance(bn, nn.BatchNorm2d) and node.args else None
        if not (isinstance(conv, fx.Node) and conv.op == "call_module" and isinstance(modules.get(conv.target), nn.Conv2d)
                and len(conv.users) == 1 and bn.track_running_stats and bn.running_mean is not None):
            continue
        fused = fuse_conv_bn_eval(modules[conv.target], bn)
        parent, _, name = conv.target.rpartition(".")
        setattr(traced.get_submodule(parent), name, fused)
        modules[conv.target] = fused
        node.replace_all_uses_with(conv)
        traced.graph.erase_node(node)
        folds += 1
    if not folds:
        return model
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    if weights_channels_last(model):  # the copy keeps the model's layout
        traced = traced.to(memory_format=torch.channels_last)
    traced.batchnorm_folded = True  # folding it again would only trace it again
    return traced
