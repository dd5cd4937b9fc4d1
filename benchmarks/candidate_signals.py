"""Which of the training ensemble's signals predicts how a CEM candidate behaves on held-out models?
(issue: separation)

    python benchmarks/candidate_signals.py --seeds 0 1 2

For each seed's default study (benchmarks/runs/quickstart-seed<N>/, made by
`benchmarks/quickstart_seeds.py`: run it first) it optimises the default's 2,048 D1
candidates with the default's CEM on the papers' candidate pool (``candidates="correct"``, the default's
whole fingerprint until stop 19, half of it since), in the candidate order and random stream
`CEM.generate` uses, so the 100 kept by the default rule are that pool's fingerprint. For every candidate adversarial for
the source it then compares signals computed on the 26 training models:

- ``hard_confer``: Transfer(S) · (1 − Transfer(R)), the default's ranking;
- ``soft_confer``: the same with the members' mean probabilities of the source's label;
- ``surrogate_transfer``: Transfer(S) alone; ``reference_non_transfer``: 1 − Transfer(R) alone;
- ``source_confidence``: the source's probability of its own label;

with its held-out discriminative power: the share of held-out surrogates that agree with the source
on it minus the share of held-out references that do (8 + 8 testing models). Reported per signal:
the Pearson correlation over the adversarial candidates, the held-out power of the 100 it ranks
best, and the calibrated and raw AUC and margin of those 100 as a fingerprint (control: the study's
own control set). The testing models only evaluate; nothing is chosen on them here.
Writes benchmarks/results/candidate-signals-fashion-mnist.json and
docs/results/candidate-signals-fashion-mnist.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint, prepare_study, versions
from conferprint.training import predict_labels, predict_logits
from conferprint.verify import separation_stats

from _common import PAPERS_POOL_CEM

ROOT = Path(__file__).resolve().parents[1]
SIZE = DEFAULT.cem.size
SIGNALS = ("hard_confer", "soft_confer", "surrogate_transfer", "reference_non_transfer", "source_confidence")


def candidates(study, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The default's candidates optimised as `CEM.generate` does (same order, same random stream)."""
    cem, src = PAPERS_POOL_CEM, study.source.model
    surr = [m.model for m in study.training_role("surrogate")]
    refs = [m.model for m in study.training_role("reference")]
    gen = torch.Generator().manual_seed(seed)
    correct = (predict_labels(src, study.x1) == study.y1).nonzero().squeeze(1)
    order = correct[torch.randperm(len(correct), generator=gen)][: cem.max_candidates]
    xa = torch.cat([cem.attack(src, surr, refs, study.x1[order[s: s + cem.batch_size]],
                               study.y1[order[s: s + cem.batch_size]], gen)
                    for s in range(0, len(order), cem.batch_size)])
    return xa, study.y1[order]


def signals(study, xa: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every signal of the training models, per candidate (``t``: the source's labels)."""
    def probs_of_t(models) -> torch.Tensor:  # (models, N): each member's probability of the source's label
        return torch.stack([F.softmax(predict_logits(m.model, xa), 1).gather(1, t[:, None]).squeeze(1) for m in models])

    def agree(models) -> torch.Tensor:
        return torch.stack([(predict_labels(m.model, xa) == t).float() for m in models])

    surr, refs = study.training_role("surrogate"), study.training_role("reference")
    s_t, r_t = agree(surr).mean(0), agree(refs).mean(0)
    return {"hard_confer": s_t * (1 - r_t), "soft_confer": probs_of_t(surr).mean(0) * (1 - probs_of_t(refs).mean(0)),
            "surrogate_transfer": s_t, "reference_non_transfer": 1 - r_t,
            "source_confidence": F.softmax(predict_logits(study.source.model, xa), 1).gather(1, t[:, None]).squeeze(1)}


@dataclass
class Replay:
    """A seed's default candidates replayed (`candidates`), kept where adversarial for the source."""

    study: Any
    seconds: float  # the replay's optimisation time
    candidates: int  # optimised, adversarial or not
    xa: torch.Tensor  # the adversarial ones and their source labels
    t: torch.Tensor
    signals: dict[str, np.ndarray]  # the training-ensemble signals, per candidate
    agree: np.ndarray  # (testing models, candidates): 1 where the model gives the source's label
    is_surr: np.ndarray  # per testing model
    ctl: np.ndarray  # per testing model: its agreement on the study's control set

    @property
    def power(self) -> np.ndarray:
        """Held-out power per candidate."""
        return power(self.agree, self.is_surr)


def agreement(models, xa: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """(models, candidates): 1 where the model gives the source's label (on any device; the result on the CPU)."""
    return torch.stack([(predict_labels(m.model, xa) == t.to(xa.device)).float() for m in models]).cpu().numpy()


def power(agree: np.ndarray, is_surr: np.ndarray) -> np.ndarray:
    """Per candidate: share of the surrogates among ``agree``'s models agreeing minus share of the references."""
    return agree[is_surr].mean(0) - agree[~is_surr].mean(0)


def as_fingerprint(top: np.ndarray, agree: np.ndarray, ctl: np.ndarray, is_surr: np.ndarray) -> dict:
    """The candidates ``top`` scored as a fingerprint on the models of ``agree`` (calibrated = minus ``ctl``)."""
    raw = agree[:, top].mean(1)
    cal = raw - ctl
    return {"held_out_power": float(power(agree[:, top], is_surr).mean()),
            "calibrated": separation_stats(cal[is_surr].tolist(), cal[~is_surr].tolist()),
            "raw": separation_stats(raw[is_surr].tolist(), raw[~is_surr].tolist())}


def top(score: np.ndarray) -> np.ndarray:
    """The ``SIZE`` best candidates by ``score``, ties by candidate order (as the default's pick)."""
    return np.argsort(-score, kind="stable")[:SIZE]


@dataclass
class DefaultStudy:
    """A seed's finished default study (benchmarks/runs/quickstart-seed<N>/) with what every scoring needs."""

    study: Any
    dir: Path
    is_surr: np.ndarray  # per testing model
    ctl: np.ndarray  # per testing model: its agreement on the study's control set


def default_study(seed: int, data_dir, config=DEFAULT) -> DefaultStudy:
    """Seed ``seed``'s default study, made by `benchmarks/quickstart_seeds.py`; models of ``config`` missing
    from its zoo (the default's or any it adds) are trained here. Exits with a clear message if the study never ran."""
    study_dir = ROOT / "benchmarks" / "runs" / f"quickstart-seed{seed}"
    control = control_fingerprint(study_dir)
    if control is None:
        raise SystemExit(f"{study_dir}: no finished default study of seed {seed} (no control set); "
                         f"run `python benchmarks/quickstart_seeds.py --seeds {seed}` first")
    study = prepare_study(config, study_dir / "zoo", seed=seed, data_dir=data_dir)
    return DefaultStudy(study, study_dir, np.array([m.meta["role"] == "surrogate" for m in study.testing]),
                        agreement(study.testing, control.inputs, control.keys).mean(1))


def replay(seed: int, data_dir, config=DEFAULT) -> Replay:
    """Seed ``seed``'s default study (``config``'s models: the default's and any it adds) and its candidates."""
    d = default_study(seed, data_dir, config)
    study = d.study
    t0 = time.perf_counter()
    xa, y = candidates(study, seed)
    seconds = time.perf_counter() - t0
    t = predict_labels(study.source.model, xa)
    adv = (t != y).nonzero().squeeze(1)
    sig = {k: v[adv].numpy() for k, v in signals(study, xa, t).items()}
    xa, t = xa[adv], t[adv]
    return Replay(study, seconds, len(y), xa, t, sig, agreement(study.testing, xa, t), d.is_surr, d.ctl)


def run_seed(seed: int, data_dir) -> dict:
    r = replay(seed, data_dir)
    power_ = r.power
    out = {"seed": seed, "candidates": r.candidates, "adversarial": len(r.t), "seconds": r.seconds,
           "mean_power_all": float(power_.mean()), "signals": {}}
    for name in SIGNALS:
        v = r.signals[name]
        f = as_fingerprint(top(v), r.agree, r.ctl, r.is_surr)
        out["signals"][name] = {"corr": float(np.corrcoef(v, power_)[0, 1]), "top_power": f["held_out_power"],
                                "calibrated": f["calibrated"], "raw": f["raw"]}
    return out


def auc_margin_cells(s: dict) -> str:
    """The "calibrated AUC / margin | raw AUC / margin" cells of a fingerprint's separation stats."""
    c, w = s["calibrated"], s["raw"]
    return f"{c['roc_auc']:.3f} / {c['margin']:+.3f} | {w['roc_auc']:.3f} / {w['margin']:+.3f}"


def write_md(payload: dict, path: Path) -> None:
    lines = ["# Which training-ensemble signal predicts a CEM candidate's held-out behaviour (Fashion-MNIST)", "",
             f"Command: `{payload['command']}`", "",
             "Each seed's default study: the default's 2,048 candidates optimised by its CEM; over the candidates "
             "adversarial for the source, each signal of the 26 training models against the held-out power "
             "(share of the 8 held-out surrogates agreeing with the source minus share of the 8 held-out references). "
             "'top 100': the 100 candidates the signal ranks best, scored as a fingerprint (calibrated = minus the "
             "study's control set). hard_confer's top 100 is the papers'-pool fingerprint (the default's until stop 19).", "",
             "| seed | signal | corr with held-out power | held-out power, top 100 | calibrated AUC / margin | raw AUC / margin |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in payload["runs"]:
        for name, s in r["signals"].items():
            lines.append(f"| {r['seed']} | {name} | {s['corr']:+.3f} | {s['top_power']:.3f} | {auc_margin_cells(s)} |")
        lines.append(f"| {r['seed']} | (all {r['adversarial']} adversarial) | | {r['mean_power_all']:.3f} | | |")
    path.write_text("\n".join(lines) + "\n")


def per_seed_main(script: str, stem: str, doc: str, run_seed, write_md, argv: list[str] | None) -> int:
    """The command line of a per-seed study: ``--seeds``, ``--data-dir``; after every seed,
    benchmarks/results/<stem>.json and docs/results/<stem>.md hold the runs so far."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    payload = {"command": f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
               "runs": [], "versions": versions()}
    for seed in args.seeds:
        payload["runs"].append(run_seed(seed, args.data_dir))
        atomic_write_text(ROOT / "benchmarks" / "results" / f"{stem}.json", json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / f"{stem}.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    return per_seed_main("candidate_signals.py", "candidate-signals-fashion-mnist", __doc__, run_seed, write_md, argv)


if __name__ == "__main__":
    sys.exit(main())
