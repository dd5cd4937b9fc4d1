"""Shared machinery of the ensemble attacks: frozen members, member dropout, projection, selection."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conferprint.fingerprint.artifact import Fingerprint
from conferprint.fingerprint.scores import confer, labels_of
from conferprint.models.common import fold_batchnorm
from conferprint.training import predict_labels, uses_channels_last


class Member:
    """A frozen ensemble member: eval mode, no parameter gradients, inputs in its memory layout, and its BatchNorms
    folded into the convolutions before them (:func:`~conferprint.models.common.fold_batchnorm`: the same function up
    to rounding, 1.1–1.7× faster through the small CNNs' forward and backward on a CPU). ``model`` itself is put in
    eval mode with its parameters frozen, as before the folding; the member calls its folded copy. ``fold=False``
    calls ``model`` itself (bit for bit its own outputs: where a criterion checked on the model must hold exactly)."""

    def __init__(self, model: nn.Module, fold: bool = True):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = fold_batchnorm(model) if fold else model  # the folded copy's parameters are frozen as the model's
        self.channels_last = uses_channels_last(self.model)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def freeze(models: Sequence[nn.Module], fold: bool = True) -> list[Member]:
    return [Member(m, fold) for m in models]


def folded(models: Sequence[nn.Module]) -> list[nn.Module]:
    """Each model frozen and folded (a :class:`Member`'s model), once for a whole generation run: the attack's own
    :func:`freeze` on every batch then finds nothing left to fold."""
    return [m.model for m in freeze(models)]


def keep_mask(n: int, rate: float, gen: torch.Generator) -> list[bool]:
    """Member dropout: drop each of ``n`` members with probability ``rate``, keeping at least one."""
    if n == 0:
        return []
    if rate <= 0:
        return [True] * n
    keep = (torch.rand(n, generator=gen) >= rate).tolist()
    if not any(keep):
        keep[int(torch.randint(0, n, (1,), generator=gen))] = True
    return keep


def project(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip to the L∞ ball of radius ``eps`` around ``x0`` and to the pixel range [0, 1]."""
    return torch.min(torch.max(x, x0 - eps), x0 + eps).clamp_(0.0, 1.0)


def select_conferrable(
    source: nn.Module,
    surrogates: Sequence[nn.Module],
    references: Sequence[nn.Module],
    x_adv: torch.Tensor,
    y: torch.Tensor,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep examples adversarial for the source whose hard ``Confer`` on the training models ≥ τ.

    Returns ``(keep mask, source labels, confer scores)``.
    """
    target = predict_labels(source, x_adv)
    # with no surrogates the source alone plays {M} ∪ S, for which Transfer is 1 by construction
    surr = labels_of(surrogates, x_adv) if surrogates else target[None, :]
    scores = confer(surr, labels_of(references, x_adv), target)
    keep = (target != y) & (scores >= tau - 1e-9)
    return keep, target, scores


def balanced_pick(targets: torch.Tensor, scores: torch.Tensor, size: int, num_classes: int, balance: bool) -> torch.Tensor:
    """Indices of at most ``size`` examples; with ``balance`` round-robin over target classes,
    best ``scores`` first within a class (ties by position, so the pick is deterministic)."""
    order = sorted(range(len(targets)), key=lambda i: (-float(scores[i]), i))
    if not balance:
        return torch.tensor(order[:size], dtype=torch.long)
    per_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i in order:
        per_class[int(targets[i])].append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < size and any(depth < len(c) for c in per_class):
        for c in per_class:
            if depth < len(c) and len(picked) < size:
                picked.append(c[depth])
        depth += 1
    return torch.tensor(picked, dtype=torch.long)


# the eight one-pixel translations (rows, columns) around an example
SHIFTS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
# the twenty-four translations of at most two pixels each way (summary §42)
SHIFTS2 = tuple((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0))


def shifts_within(radius: int) -> tuple[tuple[int, int], ...]:
    """The translations of at most ``radius`` pixels each way that shift queries use: 1, the eight one-pixel
    ones (`SHIFTS`, the default since summary §43); 2, the twenty-four of `SHIFTS2`."""
    if radius not in (1, 2):
        raise ValueError(f"the shift queries' radius must be 1 or 2 pixels, got {radius!r}")
    return SHIFTS if radius == 1 else SHIFTS2


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (N, C, H, W) moved by ``dy`` rows and ``dx`` columns, the uncovered border zero."""
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"a shift must be smaller than the image ({h}×{w}), got ({dy}, {dx})")
    p = max(abs(dy), abs(dx))
    return F.pad(x, (p, p, p, p))[..., p - dy: p - dy + h, p - dx: p - dx + w]


def shift_confer(surrogates: Sequence[nn.Module], references: Sequence[nn.Module], x: torch.Tensor,
                 target: torch.Tensor, shifts: Sequence[tuple[int, int]] = SHIFTS) -> torch.Tensor:
    """The mean hard ``Confer`` of the models over the translations ``shifts`` of each example (default the eight
    one-pixel ones), the keys ``target`` fixed: whether an example stays conferrable around itself, not only at
    itself."""
    if not shifts:
        raise ValueError("shifts is empty")
    return torch.stack([confer(labels_of(surrogates, xs), labels_of(references, xs), target)
                        for xs in (shifted(x, dy, dx) for dy, dx in shifts)]).mean(0)


def with_shift_queries(fp: Fingerprint, source: nn.Module, shifts: Sequence[tuple[int, int]] = SHIFTS) -> Fingerprint:
    """``fp`` with each example asked also as each of its translations ``shifts`` (default the eight one-pixel ones)
    on which ``source`` gives the example's key: the example's rows are itself, then those copies, one group
    (`Fingerprint.groups`), and a suspect's CAEAcc is the mean over the examples of the share of their queries it
    answers with the key. A copy the source answers otherwise is not asked (a fingerprint stores the source's answers).
    Originals are translated with their examples (the perturbation stays within ε); true labels and Confer are
    the example's. The manifest's ``stats`` gain ``queries`` and ``query_shifts_kept`` (mean copies per example).
    Summary §43: asked this way, the same 100 examples separated thieves from strangers on more draws."""
    if fp.groups is not None or fp.decoys is not None:
        raise ValueError("add shift queries to a fingerprint without groups or decoys")
    if not shifts:
        raise ValueError("shifts is empty")
    moved = [shifted(fp.inputs, dy, dx) for dy, dx in shifts]
    kept = torch.stack([predict_labels(source, xs).cpu() == fp.keys for xs in moved])
    order = []  # (example, None: itself, or the index of its shift), each example's rows together
    for i in range(len(fp)):
        order += [(i, None)] + [(i, j) for j in range(len(shifts)) if kept[j, i]]
    idx = torch.tensor([i for i, _ in order])

    def rows(t: torch.Tensor, copies: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([t[i] if j is None else copies[j][i] for i, j in order]).contiguous()

    originals = None if fp.originals is None else rows(fp.originals, [shifted(fp.originals, dy, dx) for dy, dx in shifts])
    stats = {**(fp.manifest.get("stats") or {}), "queries": len(order), "query_shifts_kept": float(kept.sum()) / len(fp)}
    return Fingerprint(rows(fp.inputs, moved), fp.keys[idx], originals,
                       None if fp.original_labels is None else fp.original_labels[idx],
                       None if fp.train_confer is None else fp.train_confer[idx], None,
                       {**fp.manifest, "stats": stats}, groups=idx)


def shift_rank(surrogates: Sequence[nn.Module], references: Sequence[nn.Module], x: torch.Tensor, target: torch.Tensor,
               scores: torch.Tensor, top: int) -> torch.Tensor:
    """A ranking of the kept examples ``x`` (keys ``target``, hard Confer ``scores``) for :func:`balanced_pick`: the
    ``top`` best by Confer first, ordered by :func:`shift_confer`, then the rest; ties by Confer, then by position.
    Returned as scores (higher is better) that give exactly that order."""
    n = len(scores)
    by_confer = sorted(range(n), key=lambda i: (-float(scores[i]), i))[:top]
    key = torch.full((n,), -1.0, dtype=torch.float64)
    if by_confer:
        idx = torch.tensor(by_confer, dtype=torch.long)
        key[idx] = shift_confer(surrogates, references, x[idx], target[idx]).double().cpu()
    order = sorted(range(n), key=lambda i: (-float(key[i]), -float(scores[i]), i))
    rank = torch.empty(n, dtype=torch.float64)
    rank[torch.tensor(order, dtype=torch.long)] = torch.arange(n, 0, -1, dtype=torch.float64)
    return rank
