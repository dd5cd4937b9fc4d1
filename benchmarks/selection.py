"""Which CEM examples to keep, at which ε, against which control set? (issue: separation)

    python benchmarks/selection.py --seeds 0 1 2 --eps 0.1 0.05

Reuses (or trains) the quickstart `default` study of each seed in benchmarks/runs/quickstart-seed<N>/
(the same models `benchmarks/quickstart_seeds.py` uses). For each ε it optimises the same 2,048 D1
candidates with CEM against the study's 26 training models once, then compares selection rules on
those candidates:

- ``first-tau0.9-balanced``: the old default — the first candidates past τ = 0.9, balanced over
  target classes (what ``CEM(search="first")`` keeps);
- ``best-balanced`` / ``best-unbalanced``: every adversarial candidate ranked by its hard Confer on
  the training models, the 100 best kept, with or without class balance (``CEM(search="best")``);

and, for each, the label-only score CAEAcc(fingerprint) − CAEAcc(control) with three PGD control
sets (ε 0.1 × 100 = the old control, ε 0.1 × 500, ε 0.05 × 500). Every number is from the 8 + 8
held-out testing models. Writes benchmarks/results/selection-fashion-mnist.json and
docs/results/selection-fashion-mnist.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, prepare_study, versions
from conferprint.fingerprint import CEM, PGD
from conferprint.fingerprint.ensemble import balanced_pick
from conferprint.fingerprint.scores import confer, labels_of
from conferprint.training import predict_labels
from conferprint.verify import separation_stats

from _common import PAPERS_POOL_CEM  # run as a script: its folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
SIZE, CANDIDATES, BATCH = 100, 2048, 256
CONTROLS = {"pgd0.1x100": (0.1, 100), "pgd0.1x500": (0.1, 500), "pgd0.05x500": (0.05, 500)}


def first_past_tau(t, c, adv, num_classes: int, tau: float = 0.9) -> torch.Tensor:
    """What search="first" keeps: candidates in order, a batch at a time, until every class has its quota."""
    quota, ok = math.ceil(SIZE / num_classes), (c >= tau - 1e-9) & adv
    for end in range(BATCH, len(t) + BATCH, BATCH):
        idx = ok[:end].nonzero().squeeze(1)
        if bool((torch.bincount(t[idx], minlength=num_classes) >= quota).all()) or end >= len(t):
            return idx[balanced_pick(t[idx], c[idx], SIZE, num_classes, True)]
    raise AssertionError("unreachable")


def run_seed(seed: int, eps_list: list[float], data_dir) -> dict:
    study = prepare_study(DEFAULT, ROOT / "benchmarks" / "runs" / f"quickstart-seed{seed}" / "zoo", seed=seed,
                          data_dir=data_dir)
    src, surr, refs = study.source.model, study.training_role("surrogate"), study.training_role("reference")
    nc = study.data.num_classes
    testing = study.testing
    controls = {}
    for name, (eps, size) in CONTROLS.items():
        ctl = PGD(eps=eps, step_size=eps / 10, size=size, batch_size=BATCH, max_candidates=4096).generate(
            src, [], [], study.x1, study.y1, seed=seed + 100, num_classes=nc)
        controls[name] = {m.name: float((predict_labels(m.model, ctl.inputs) == ctl.keys).float().mean()) for m in testing}
    out = {"seed": seed, "source_test_acc": study.source.meta["test_acc"], "settings": []}
    for eps in eps_list:
        cem = CEM(eps=eps, steps=PAPERS_POOL_CEM.steps, target="conferrable", batch_size=BATCH)
        gen = torch.Generator().manual_seed(seed)  # the candidate order generate_fingerprint draws
        correct = (predict_labels(src, study.x1) == study.y1).nonzero().squeeze(1)
        order = correct[torch.randperm(len(correct), generator=gen)][:CANDIDATES]
        t0 = time.perf_counter()
        xa = torch.cat([cem.attack(src, [m.model for m in surr], [m.model for m in refs], study.x1[order[s: s + BATCH]],
                                   study.y1[order[s: s + BATCH]], gen) for s in range(0, len(order), BATCH)])
        seconds = time.perf_counter() - t0
        t, ya = predict_labels(src, xa), study.y1[order]
        c = confer(labels_of([m.model for m in surr], xa), labels_of([m.model for m in refs], xa), t)
        adv = t != ya
        ok = adv.nonzero().squeeze(1)
        picks = {"first-tau0.9-balanced": first_past_tau(t, c, adv, nc),
                 "best-balanced": ok[balanced_pick(t[ok], c[ok], SIZE, nc, True)],
                 "best-unbalanced": ok[balanced_pick(t[ok], c[ok], SIZE, nc, False)]}
        labels = {m.name: predict_labels(m.model, xa) for m in testing}
        for rule, pick in picks.items():
            rows = []
            for m in testing:
                cae = float((labels[m.name][pick] == t[pick]).float().mean()) if len(pick) else float("nan")
                rows.append({"name": m.name, "role": m.meta["role"], "arch": m.arch, "cae_acc": cae,
                             **{f"diff_{k}": cae - v[m.name] for k, v in controls.items()}})
            entry = {"eps": eps, "rule": rule, "size": len(pick), "attack_seconds": seconds,
                     "adversarial_rate": float(adv.float().mean()), "past_tau0.9": int(((c >= 0.9) & adv).sum()),
                     "train_confer": float(c[pick].mean()) if len(pick) else None,
                     "held_out_confer": held_out_confer(rows), "models": rows}
            if len(pick):
                entry["raw"] = sep(rows, "cae_acc")
                entry.update({f"diff_{k}": sep(rows, f"diff_{k}") for k in controls})
            out["settings"].append(entry)
    return out


def held_out_confer(rows) -> float:
    s = [r["cae_acc"] for r in rows if r["role"] == "surrogate"]
    r = [r["cae_acc"] for r in rows if r["role"] == "reference"]
    return sum(s) / len(s) * (1 - sum(r) / len(r))


def sep(rows, key) -> dict:
    return separation_stats([r[key] for r in rows if r["role"] == "surrogate"],
                            [r[key] for r in rows if r["role"] == "reference"])


def write_md(payload: dict, path: Path) -> None:
    f = lambda d, k: "–" if d is None else f"{d[k]:.3f}" if k == "roc_auc" else f"{d[k]:+.3f}"  # noqa: E731
    lines = ["# CEM selection, ε and control set (Fashion-MNIST)", "", f"Command: `{payload['command']}`", "",
             "Same 2,048 candidates per seed and ε, optimised once (50 Adam steps, most conferrable target, "
             "26 training models); 100 examples kept by each rule. AUC / margin over the 8 + 8 held-out models; "
             "margin = min(surrogate) − max(reference), positive = separated under one threshold.", "",
             "| seed | ε | rule | kept | held-out Confer | raw AUC | raw margin | "
             + " | ".join(f"CEM − {k} AUC | margin" for k in CONTROLS) + " |",
             "| --- " * (7 + 2 * len(CONTROLS)) + "|"]
    for run in payload["runs"]:
        for e in run["settings"]:
            lines.append(f"| {run['seed']} | {e['eps']} | {e['rule']} | {e['size']} | {e['held_out_confer']:.3f} | "
                         f"{f(e.get('raw'), 'roc_auc')} | {f(e.get('raw'), 'margin')} | "
                         + " | ".join(f"{f(e.get('diff_' + k), 'roc_auc')} | {f(e.get('diff_' + k), 'margin')}"
                                      for k in CONTROLS) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.05])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    payload = {"command": "python benchmarks/selection.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "runs": [], "versions": versions()}
    for seed in args.seeds:
        payload["runs"].append(run_seed(seed, args.eps, args.data_dir))
        atomic_write_text(ROOT / "benchmarks" / "results" / "selection-fashion-mnist.json", json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / "selection-fashion-mnist.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
