"""The generation driver shared by CEM, C-IGM and the single-model baselines.

Candidates are inputs the source classifies correctly (``pool="correct"``; or, ``pool="errors"``, the
inputs it misclassifies), drawn in a seeded order; they are
optimised a batch at a time until every target class has enough conferrable examples (or the
candidate budget is spent); the kept examples are balanced over target classes. With
``exhaust=True`` the whole candidate budget is optimised and the ``size`` best-scoring examples
are kept (the search CEM's ``search="best"`` uses), instead of the first ones that pass τ.
With ``validation`` models — a surrogate and reference set the optimisation never saw — the ranking
adds their held-out power (share of validation surrogates giving the source's label minus share of
validation references giving it) to the training models' Confer.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from conferprint.fingerprint.artifact import Fingerprint
from conferprint.errors import ConferprintError
from conferprint.fingerprint.ensemble import balanced_pick, select_conferrable
from conferprint.fingerprint.scores import labels_of, transfer
from conferprint.training import predict_labels

log = logging.getLogger(__name__)

class GenerationError(ConferprintError, RuntimeError):
    """Generation produced no usable example."""


Validation = tuple[Sequence[nn.Module], Sequence[nn.Module]]  # (surrogates, references) never optimised against


def validation_power(validation: Validation, x_adv: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per example: ``Transfer`` to the validation surrogates minus ``Transfer`` to the validation
    references (each side 0 when it has no model)."""
    surrogates, references = validation
    return transfer(labels_of(surrogates, x_adv), target) - transfer(labels_of(references, x_adv), target)


# optimise(x0, y, gen, bar) -> x_adv for one batch of candidates
Optimise = Callable[[torch.Tensor, torch.Tensor, torch.Generator, "tqdm | None"], torch.Tensor]


def generate_fingerprint(
    method_name: str,
    params: object,
    optimise: Optimise,
    *,
    source: nn.Module,
    surrogates: Sequence[nn.Module],
    references: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    size: int,
    tau: float,
    balance: bool,
    batch_size: int,
    max_candidates: int | None,
    steps: int,
    seed: int,
    num_classes: int | None = None,
    source_sha256: str | None = None,
    progress: bool = False,
    accept: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    exhaust: bool = False,
    validation: Validation | None = None,
    pool: str = "correct",
    rerank: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Fingerprint:
    """``accept(x_adv, source_labels, y) -> bool mask`` replaces the default selection (adversarial for
    the source and Confer ≥ τ on the training models), e.g. IPGuard's boundary criterion.
    ``validation``: ``(surrogates, references)`` whose held-out power is added to the ranking (τ still
    applies to Confer alone); the stored ``train_confer`` stays the training models' Confer.
    ``pool``: "correct" optimises the candidates the source classifies correctly, "errors" those it
    misclassifies (an example is then kept while the source still disagrees with the true label).
    ``rerank(x_adv, keys, confer) -> scores`` ranks all kept examples once the search is over (higher first),
    instead of their Confer; not with ``validation``."""
    if validation is not None and not (validation[0] or validation[1]):
        validation = None
    if rerank is not None and validation is not None:
        raise ValueError("rerank and validation are two rankings: give one")
    if size < 1:
        raise ValueError(f"fingerprint size must be ≥ 1, got {size}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} candidate inputs but {len(y)} labels")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError("candidate inputs must lie in [0, 1]")
    t0 = time.perf_counter()
    num_classes = num_classes or int(y.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    if pool not in ("correct", "errors"):
        raise ValueError(f"pool must be 'correct' or 'errors', got {pool!r}")
    right = predict_labels(source, x) == y
    eligible = (right if pool == "correct" else ~right).nonzero().squeeze(1)
    if len(eligible) == 0:
        raise GenerationError(f"{method_name}: the source classifies {'none' if pool == 'correct' else 'all'} of the "
                              f"{len(y)} candidates correctly, so none is eligible (pool {pool!r})")
    order = eligible[torch.randperm(len(eligible), generator=gen)]
    budget = len(order) if max_candidates is None else min(len(order), max_candidates)
    quota = math.ceil(size / num_classes) if balance else size
    kept_x, kept_x0, kept_y, kept_t, kept_s, kept_r = [], [], [], [], [], []
    used = 0
    adversarial = 0
    n_batches = math.ceil(budget / batch_size)
    bar = tqdm(total=n_batches * steps, desc=f"{method_name} generation", disable=not progress, leave=False, unit="step")
    for start in range(0, budget, batch_size):
        idx = order[start: min(start + batch_size, budget)]
        x0, yb = x[idx], y[idx]
        x_adv = optimise(x0, yb, gen, bar).detach()
        if accept is None:
            keep, target, scores = select_conferrable(source, surrogates, references, x_adv, yb, tau)
        else:
            target = predict_labels(source, x_adv)
            keep = accept(x_adv, target, yb)
            scores = keep.float()
        rank = scores if validation is None else scores + validation_power(validation, x_adv, target)
        used += len(idx)
        adversarial += int((target != yb).sum())
        kept_x.append(x_adv[keep]); kept_x0.append(x0[keep]); kept_y.append(yb[keep])
        kept_t.append(target[keep]); kept_s.append(scores[keep]); kept_r.append(rank[keep])
        counts = torch.bincount(torch.cat(kept_t), minlength=num_classes)
        bar.set_postfix(kept=int(counts.sum()))
        enough = bool((counts >= quota).all()) if balance else int(counts.sum()) >= size
        if enough and not exhaust:
            break
    bar.close()
    xs, x0s, ys, ts, ss, rs = (torch.cat(v) for v in (kept_x, kept_x0, kept_y, kept_t, kept_s, kept_r))
    if len(ts) == 0:
        raise GenerationError(
            f"{method_name}: none of {used} candidates became a kept example ({adversarial} fooled the source; "
            f"τ = {tau}). Raise eps, steps or the learning rate, lower τ, or allow more candidates."
        )
    if rerank is not None:
        rs = rerank(xs, ts, ss)
    pick = balanced_pick(ts, rs, size, num_classes, balance)
    if len(pick) < size:
        log.warning("%s kept only %d of the %d requested examples from %d candidates", method_name, len(pick), size, used)
    stats = {
        "candidates_used": used,
        "adversarial_rate": adversarial / max(1, used),
        "conferrable_found": int(len(ts)),
        "mean_train_confer": float(ss[pick].mean()) if len(pick) else 0.0,
        "seconds": time.perf_counter() - t0,
        "n_surrogates": len(surrogates),
        "n_references": len(references),
    }
    if validation is not None:
        stats.update(n_validation_surrogates=len(validation[0]), n_validation_references=len(validation[1]),
                     mean_validation_power=float((rs - ss)[pick].mean()) if len(pick) else 0.0)
    params_dict = asdict(params) if hasattr(params, "__dataclass_fields__") else dict(params)  # type: ignore[arg-type]
    return Fingerprint(
        inputs=xs[pick].contiguous(), keys=ts[pick].contiguous(), originals=x0s[pick].contiguous(),
        original_labels=ys[pick].contiguous(), train_confer=ss[pick].contiguous(),
        manifest={"method": method_name, "params": params_dict, "seed": seed, "num_classes": num_classes,
                  "source_sha256": source_sha256, "stats": stats},
    )
