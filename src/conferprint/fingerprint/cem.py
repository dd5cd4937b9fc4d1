"""CEM — the Conferrable Ensemble Method (Lukas, Zhang & Kerschbaum, ICLR 2021); method.md, "CEM".

    L(x0, x') =   α · H(onehot(t), E(x'))
                − β · H(softmax(M(x0)), softmax(M(x')))
                + γ · H(softmax(M(x')), mean_S softmax(S(x')))

minimised with Adam on the perturbation, projected after every step onto the ε-ball and [0, 1];
each surrogate and reference is dropped at random at each step (member dropout).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conferprint.fingerprint.artifact import Fingerprint, concatenate
from conferprint.device import model_device
from conferprint.fingerprint.ensemble import (folded, freeze, keep_mask, project, shift_rank, shifts_within,
                                              with_shift_queries)
from conferprint.fingerprint.generate import Validation, generate_fingerprint

_LOG_EPS = 1e-12


@dataclass(frozen=True)
class CEM:
    eps: float = 0.1  # L∞ radius on [0, 1] pixels; C-IGM's tables use 0.15 and show 0.05 works (method.md)
    alpha: float = 1.0  # weight of the conferrability term
    beta: float = 0.1  # weight of moving the source off its clean output; 0.1 = best of the paper's sensitivity table
    gamma: float = 0.1  # weight of surrogate-source agreement; 0.1 = best of the paper's sensitivity table
    steps: int = 300  # Adam iterations (the paper's sensitivity study)
    lr: float = 0.01  # Adam learning rate on [0, 1] pixels (lost in extraction; method.md's default)
    dropout: float = 0.5  # member dropout rate (C-IGM: 0.5 raised held-out conferrability 0.243 -> 0.469)
    tau: float = 0.9  # keep if hard Confer on the training models ≥ τ (C-IGM: 1.0; re-implementations 0.85-0.95)
    target: Literal["source", "conferrable"] = "source"  # t = argmax M(x') (method.md), or argmax_{k≠y} E(x')_k
    size: int = 100  # fingerprint size (the papers' fingerprints have 100 examples)
    balance: bool = True  # balance the target classes of the kept examples
    batch_size: int = 256  # candidates optimised together
    max_candidates: int | None = 2048  # stop after this many candidates even if short of `size`
    # "first": stop as soon as `size` examples pass τ; "best": optimise all `max_candidates` and keep
    # the `size` with the highest Confer on the training models (τ is then a floor)
    search: Literal["first", "best"] = "first"
    # which candidates are optimised: "correct" (the papers: inputs the source classifies correctly, made
    # adversarial); "errors": inputs the source already misclassifies (its own mistakes on the candidate
    # data), kept wrong and made conferrable — their target is always the source's label and the β term is
    # off, since it would push the source off its clean label, here the mistake itself; "mixed": part of
    # `size` from each pool (`errors_share` of it from the errors pool), each pool given `max_candidates` (the correct
    # pool `correct_candidates` where set). A thief's
    # surrogate learns the source's labels, mistakes included; an independent model makes its own
    # (misclassified samples as a fingerprint: Guan et al., "Are You Stealing My Model?", ECCV 2022).
    candidates: Literal["correct", "errors", "mixed"] = "correct"
    # candidates="mixed": the share of `size` taken from the errors pool (rounded down), the rest from the
    # papers' pool; each part is its pool's best by Confer
    errors_share: float = 0.5
    # candidates="mixed": the correct pool's budget instead of `max_candidates` (None: the same); only
    # size − n_errors of its candidates are kept, so it may need fewer than the errors pool. Read only by "mixed"
    correct_candidates: int | None = None
    # bf16 autocast in the optimisation (the members' forward and backward); the selection's Confer and the
    # keys are computed in fp32. 1.22× faster per step on this project's CPU (median; benchmarks/cem_step.py --bf16)
    bf16: bool = False
    # how the kept examples are ranked: "confer", by hard Confer on the training models; "shift", the `rank_top` best
    # by Confer ordered by their mean Confer over the example's eight one-pixel translations
    # (fingerprint.ensemble.shift_rank). Alone it did not hold on new draws (docs/results/separation-summary.md §39, §41,
    # §42); with `query_shifts` it is the quickstart's default (§43, experiments/quickstart.DEFAULT)
    rank: Literal["confer", "shift"] = "confer"
    rank_top: int = 300
    # ask each kept example also as its one-pixel translations on which the source gives the key (one group of
    # queries per example: fingerprint.ensemble.with_shift_queries); a suspect's CAEAcc is then the mean over the
    # examples of the share of their queries it answers with the key. Up to nine queries an example (25 at radius 2)
    query_shifts: bool = False
    # the translations asked with `query_shifts`: 1, the eight one-pixel ones; 2, the 24 of at most two pixels
    # (fingerprint.ensemble.shifts_within; benchmarks/query_neighbourhood.py, summary §44)
    query_radius: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {self.eps}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.tau <= 1:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        if self.target not in ("source", "conferrable"):
            raise ValueError(f"target must be 'source' or 'conferrable', got {self.target!r}")
        if self.search not in ("first", "best"):
            raise ValueError(f"search must be 'first' or 'best', got {self.search!r}")
        if self.candidates not in ("correct", "errors", "mixed"):
            raise ValueError(f"candidates must be 'correct', 'errors' or 'mixed', got {self.candidates!r}")
        if not 0 < self.errors_share < 1:
            raise ValueError(f"errors_share must be in (0, 1), got {self.errors_share}")
        if self.candidates == "mixed" and not 1 <= self.n_errors <= self.size - 1:
            raise ValueError(f"candidates 'mixed' needs at least one example from each pool: size {self.size} "
                             f"with errors_share {self.errors_share} gives {self.n_errors} from the errors pool")
        if self.correct_candidates is not None and self.correct_candidates < 1:
            raise ValueError(f"correct_candidates must be ≥ 1 (or None: max_candidates), got {self.correct_candidates}")
        if self.search == "best" and self.max_candidates is None:
            raise ValueError("search 'best' optimises every candidate: give max_candidates")
        if self.rank not in ("confer", "shift"):
            raise ValueError(f"rank must be 'confer' or 'shift', got {self.rank!r}")
        if self.rank_top < 1:
            raise ValueError(f"rank_top must be ≥ 1, got {self.rank_top}")
        shifts_within(self.query_radius)  # 1 or 2, else ValueError
        if self.steps < 1 or self.size < 1 or self.batch_size < 1:
            raise ValueError("steps, size and batch_size must be ≥ 1")

    @property
    def n_errors(self) -> int:
        """How many of a mixed fingerprint's ``size`` examples come from the errors pool."""
        return int(self.size * self.errors_share + 1e-9)  # 0.29 · 100 is 28.999… in floating point

    def part(self, pool: str) -> "CEM":
        """The single-pool CEM that a ``candidates="mixed"`` CEM runs on ``pool`` ("correct" or "errors"): its share
        of ``size`` and its budget."""
        if self.candidates != "mixed" or pool not in ("correct", "errors"):
            raise ValueError(f"part({pool!r}) needs candidates 'mixed' and a pool 'correct' or 'errors'")
        budget = self.correct_candidates if pool == "correct" and self.correct_candidates is not None else self.max_candidates
        size = self.size - self.n_errors if pool == "correct" else self.n_errors
        return replace(self, candidates=pool, size=size, max_candidates=budget, correct_candidates=None, query_shifts=False)

    def loss(
        self,
        src_logits: torch.Tensor,
        clean_probs: torch.Tensor,
        surr_probs: Sequence[torch.Tensor],
        ref_probs: Sequence[torch.Tensor],
        y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example CEM loss and the target labels it used."""
        src_logp = F.log_softmax(src_logits, dim=1)
        src_p = src_logp.exp()
        surr_mean = torch.stack([src_p, *surr_probs]).mean(0)
        E = surr_mean if not ref_probs else surr_mean * (1.0 - torch.stack(list(ref_probs)).mean(0))
        if self.target == "source":
            t = src_logits.detach().argmax(1)
        else:
            t = E.detach().scatter(1, y[:, None], -1.0).argmax(1)
        l_alpha = -torch.log(E.gather(1, t[:, None]).squeeze(1) + _LOG_EPS)
        l_beta = -(clean_probs * src_logp).sum(1)  # H(softmax(M(x0)), softmax(M(x')))
        loss = self.alpha * l_alpha - self.beta * l_beta
        if surr_probs and self.gamma:
            s_mean = torch.stack(list(surr_probs)).mean(0)
            loss = loss + self.gamma * -(src_p * torch.log(s_mean + _LOG_EPS)).sum(1)
        return loss, t

    def attack(
        self,
        source: nn.Module,
        surrogates: Sequence[nn.Module],
        references: Sequence[nn.Module],
        x0: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        bar=None,
    ) -> torch.Tensor:
        """Optimise one batch of clean inputs ``x0`` (true labels ``y``); returns the perturbed inputs.

        Runs on the source's device (the members must be there too); the result comes back on ``x0``'s."""
        home = x0.device
        dev = model_device(source)
        x0, y = x0.to(dev), y.to(dev)
        src, surr, refs = freeze([source])[0], freeze(surrogates), freeze(references)
        with torch.no_grad():
            clean_probs = F.softmax(src.logits(x0), dim=1)
        delta = torch.zeros_like(x0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr)
        for _ in range(self.steps):
            x = x0 + delta
            ks, kr = keep_mask(len(surr), self.dropout, gen), keep_mask(len(refs), self.dropout, gen)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                sp = [F.softmax(m.logits(x).float(), 1) for m, k in zip(surr, ks) if k]
                rp = [F.softmax(m.logits(x).float(), 1) for m, k in zip(refs, kr) if k]
                src_logits = src.logits(x).float()
            loss, _ = self.loss(src_logits, clean_probs, sp, rp, y)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                delta.copy_(project(x0 + delta, x0, self.eps) - x0)
            if bar is not None:
                bar.update(1)
        return (x0 + delta).detach().to(home)

    def generate(
        self,
        source: nn.Module,
        surrogates: Sequence[nn.Module],
        references: Sequence[nn.Module],
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        seed: int,
        num_classes: int | None = None,
        source_sha256: str | None = None,
        progress: bool = False,
        validation: Validation | None = None,
    ) -> Fingerprint:
        """A fingerprint of ``self.size`` conferrable examples made from candidates ``(x, y)``.

        ``validation``: ``(surrogates, references)`` never optimised against; their held-out power
        (surrogates' minus references' agreement with the source) is added to Confer when ranking."""
        if self.query_shifts:  # the examples chosen as without, then each asked with its shifts
            plain = replace(self, query_shifts=False).generate(
                source, surrogates, references, x, y, seed=seed, num_classes=num_classes, source_sha256=source_sha256,
                progress=progress, validation=validation)
            plain.manifest = {**plain.manifest, "params": asdict(self)}
            return with_shift_queries(plain, source, shifts_within(self.query_radius))
        if self.candidates == "mixed":
            parts = [self.part("correct"), self.part("errors")]
            made = [c.generate(source, surrogates, references, x, y, seed=seed, num_classes=num_classes,
                               source_sha256=source_sha256, progress=progress, validation=validation) for c in parts]
            return concatenate(made, {**made[0].manifest, "params": asdict(self)})
        optimiser = self if self.candidates == "correct" else replace(self, target="source", beta=0.0)
        # the optimisation runs on the members with their BatchNorms folded, made once here; the selection, on the
        # models themselves
        src_f, *members = folded([source, *surrogates, *references])
        surr_f, refs_f = members[: len(surrogates)], members[len(surrogates):]
        rerank = None
        if self.rank == "shift":
            def rerank(xs, ts, ss):  # on the folded members, as the optimisation (labels equal up to rounding)
                return shift_rank(surr_f, refs_f, xs, ts, ss, self.rank_top)
        return generate_fingerprint(
            "cem", self, lambda x0, yb, gen, bar: optimiser.attack(src_f, surr_f, refs_f, x0, yb, gen, bar),
            source=source, surrogates=surrogates, references=references, x=x, y=y, size=self.size, tau=self.tau,
            balance=self.balance, batch_size=self.batch_size, max_candidates=self.max_candidates, steps=self.steps,
            seed=seed, num_classes=num_classes, source_sha256=source_sha256, progress=progress,
            exhaust=self.search == "best", validation=validation, pool=self.candidates, rerank=rerank,
        )
