"""Does a validation ensemble — models CEM never optimises against — pick better fingerprint examples?
(issue: separation)

    python benchmarks/validation_selection.py --seeds 0 1 2

For each seed's default study (benchmarks/runs/quickstart-seed<N>/, made by
`benchmarks/quickstart_seeds.py`: run it first; validation models missing from its zoo are trained here) the
default's 2,048 candidates are optimised again exactly as its CEM does (`candidate_signals.candidates`;
the hard-Confer top 100 is the papers'-pool fingerprint, the default's until stop 19). The 16 *validation* models of
`ensemble_families.py --variants validation` (the testing models' recipe on D1, 8 surrogates and 8
references; stored in the seed's zoo as ``val-*``) never enter CEM's optimisation, so their verdict on a
candidate is not fitted to it. Each ranking is measured with all 16 and with 8 of them (one surrogate
and one reference per architecture: ``EIGHT``). Over the candidates adversarial for the source, the
100 kept by each ranking are scored as a fingerprint on the 8 + 8 testing models (calibrated = minus
the study's own control set):

- ``hard_confer``: Confer on the 26 training models alone (the default's ranking);
- ``val_power``: share of validation surrogates agreeing with the source minus share of validation
  references agreeing;
- ``confer_plus_val``: the sum of the two (with 16: the `validation` variant's ranking, its top 100
  that variant's fingerprint); ``rank_sum``: the sum of their ranks.

A diagnostic ceiling, not a method (it selects on testing models): the 100 candidates with the highest
held-out power on one half of the testing models (soft-label surrogates and the first reference of
each architecture, or the hard-label surrogates and the second references), scored on the other half.
If even this does not separate the other half, no ranking of these candidates can.
Writes benchmarks/results/validation-selection-fashion-mnist.json and
docs/results/validation-selection-fashion-mnist.md.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from conferprint.experiments.quickstart import DEFAULT
from conferprint.experiments.zoo_builder import Group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidate_signals import (  # noqa: E402  (the same replay of the default's CEM and the same scoring)
    agreement, as_fingerprint, auc_margin_cells, per_seed_main, power, replay, top)
from ensemble_families import with_validation  # noqa: E402  (the validation variant's models)

# the 8 of the 16 validation models measured first: one surrogate (soft and hard labels
# alternating) and the first reference per architecture
EIGHT = (Group("cnn_small", "surrogate", "soft", 1, 5), Group("lenet_bn", "surrogate", "hard", 1, 5),
         Group("mlp", "surrogate", "soft", 1, 8), Group("cnn", "surrogate", "hard", 1, 2),
         Group("cnn_small", "reference", "ground_truth", 1, 5), Group("lenet_bn", "reference", "ground_truth", 1, 5),
         Group("mlp", "reference", "ground_truth", 1, 8), Group("cnn", "reference", "ground_truth", 1, 2))


def halves(testing) -> np.ndarray:
    """0 or 1 per testing model: the n-th model of each (architecture, role) goes to half n mod 2."""
    seen: Counter = Counter()
    out = []
    for m in testing:
        key = (m.meta["arch"], m.meta["role"])
        out.append(seen[key] % 2)
        seen[key] += 1
    return np.array(out)


def run_seed(seed: int, data_dir) -> dict:
    r = replay(seed, data_dir, with_validation(DEFAULT))
    val16 = r.study.validation  # trained (or reused) by prepare_study
    names8 = {f"val-{g.role}-{g.arch}-{g.labels}-0" for g in EIGHT}
    sets = {"16": val16, "8": [m for m in val16 if m.name in names8]}
    assert len(sets["8"]) == 8, sorted(m.name for m in val16)
    confer, held_out = r.signals["hard_confer"], r.power
    rankings = {"hard_confer": confer}
    out = {"seed": seed, "adversarial": len(r.t), "cem_replay_seconds": r.seconds,
           "validation_train_seconds": sum(m.meta["train_seconds"] for m in val16),  # recorded when trained
           "validation_test_acc": {m.name: m.meta["test_acc"] for m in val16}, "corr_val_power_held_out": {},
           "corr_confer_held_out": float(np.corrcoef(confer, held_out)[0, 1]),
           "mean_power_all": float(held_out.mean()), "rankings": {}, "split_half_ceiling": []}
    for k, val in sets.items():
        val_power = power(agreement(val, r.xa, r.t), np.array([m.meta["role"] == "surrogate" for m in val]))
        out["corr_val_power_held_out"][k] = float(np.corrcoef(val_power, held_out)[0, 1])
        rankings.update({f"val_power ({k})": val_power, f"confer_plus_val ({k})": confer + val_power,
                         f"rank_sum ({k})": rankdata(confer) + rankdata(val_power)})
    for name, score in rankings.items():
        out["rankings"][name] = as_fingerprint(top(score), r.agree, r.ctl, r.is_surr)
    half = halves(r.study.testing)
    for pick in (0, 1):
        a, b = half == pick, half != pick
        out["split_half_ceiling"].append({"selected_on_half": pick, **as_fingerprint(
            top(power(r.agree[a], r.is_surr[a])), r.agree[b], r.ctl[b], r.is_surr[b])})
    return out


def write_md(payload: dict, path: Path) -> None:
    lines = ["# A validation ensemble for picking the fingerprint (Fashion-MNIST)", "",
             f"Command: `{payload['command']}`", "",
             "Each seed's default study; the default's candidates re-optimised as its CEM does; 16 validation models "
             "(D1, testing recipe, never optimised against), or 8 of them, rank them. Every ranking's top 100 is scored on the "
             "8 + 8 testing models (calibrated = minus the study's control set). The split-half ceiling selects on "
             "half of the testing models and scores the other half: a diagnostic, not a method.", "",
             "| seed | ranking | held-out power of the 100 | calibrated AUC / margin | raw AUC / margin |",
             "| --- | --- | --- | --- | --- |"]
    for r in payload["runs"]:
        for name, s in r["rankings"].items():
            lines.append(f"| {r['seed']} | {name} | {s['held_out_power']:.3f} | {auc_margin_cells(s)} |")
        for s in r["split_half_ceiling"]:
            lines.append(f"| {r['seed']} | ceiling: select on half {s['selected_on_half']}, score the other (4 + 4) | "
                         f"{s['held_out_power']:.3f} | {auc_margin_cells(s)} |")
    lines += ["", "| seed | adversarial candidates | corr(val power, held-out power), 16 / 8 | corr(hard Confer, held-out power) | "
              "mean held-out power, all | validation models' training s |", "| --- | --- | --- | --- | --- | --- |"]
    for r in payload["runs"]:
        c = r["corr_val_power_held_out"]
        lines.append(f"| {r['seed']} | {r['adversarial']} | {c['16']:+.3f} / {c['8']:+.3f} | "
                     f"{r['corr_confer_held_out']:+.3f} | {r['mean_power_all']:+.3f} | {r['validation_train_seconds']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return per_seed_main("validation_selection.py", "validation-selection-fashion-mnist", __doc__, run_seed, write_md,
                         argv)


if __name__ == "__main__":
    sys.exit(main())
