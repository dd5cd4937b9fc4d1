"""Fewer CEM candidates per pool: what the default's CEM budget buys (separation summary §31).

    python benchmarks/cem_budget.py --seeds 15 16 17 18 19 20 13 14 0 1 2 3 4 5 6

The default's CEM optimises two pools of 2,048 candidates each (the source's correct answers and its mistakes on D1)
and keeps the 25 and the 75 with the highest Confer on the training models. That is the quickstart's second-largest
cost after training (73–127 s on this CPU). CEM optimises its candidates a batch of 256 at a time in a seeded order,
each batch drawing its random start and member dropout from one generator in turn, so a smaller budget optimises
exactly a prefix of the same candidates: CEM with ``max_candidates=k`` keeps the best of the first ``k`` of each pool.
This benchmark therefore needs no new optimisation: it replays both pools once (`mix_share.pools_of`, checked to
give back the draw's fingerprint; cached in ``pools-seed<N>/mix-share``, the same cache as `pool_control.py`'s, whose
files may be hard-linked in to skip the replay) and ranks each budget's prefix as CEM would.

Budgets (correct answers, mistakes): the study's (2,048, 2,048); the correct pool cut to 1,536, 1,024 or 512 (only 25
of its examples are kept); both pools at 1,536 or 1,024. Each is scored as the quickstart scores, with the default's
control set (500 PGD, ε 0.1, 50 steps since §30; made here with the draw's seed, or hard-linked from
`control_recipe.py`'s ``steps 50``) and the threshold refitted on the draw's 12 calibration references. A budget's
cost is its share of the pools' measured optimisation seconds (batches cost alike). The rule that decides is in §31,
committed before any budget was scored.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT

from _common import run_draws  # run as a script: its folder is on sys.path
from candidate_signals import agreement  # (models, examples): 1 where a model gives the key
from mix_share import POOLS, evaluate, pools_of, top  # the replayed pools and the quickstart's scoring
from control_recipe import cheapest_eligible  # the cost levers' rule (§30, §31)
from pool_control import draw_cell, make_control, open_draw, seed_table, totals_cells

log = logging.getLogger("cem_budget")
STEM = "cem-budget-fashion-mnist"
BUDGETS = {  # name: candidates optimised per pool (correct answers, mistakes)
    "study": (2048, 2048),
    "correct 1536": (1536, 2048), "correct 1024": (1024, 2048), "correct 512": (512, 2048),
    "both 1536": (1536, 1536), "both 1024": (1024, 1024),
}


def prefix(c: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """A replayed pool as CEM with ``max_candidates=k`` would have optimised it: its first ``k`` candidates (arrays
    per candidate are cut on their last axis; the pool's scalars are kept)."""
    n = len(c["t"])
    return {key: v[..., :k] if v.ndim >= 1 and v.shape[-1] == n else v for key, v in c.items()}


def picks(pools: dict[str, dict[str, np.ndarray]], budget: tuple[int, int], n_correct: int, n_errors: int) -> dict[str, np.ndarray]:
    """Per pool, the indices (into the full replay) that CEM with this budget keeps."""
    return {"correct": top(prefix(pools["correct"], budget[0]), n_correct),
            "errors": top(prefix(pools["errors"], budget[1]), n_errors)}


def run_seed(seed: int, work: Path, data_dir, progress: bool = False, smoke: bool = False) -> dict:
    cfg, study, fp, everyone, is_surr = open_draw(seed, work, data_dir, progress, smoke)
    control = cfg.pgd if smoke else DEFAULT.control
    ctl_fp = make_control(control, f"fp-seed{seed}-control-steps{control.steps}", work, study, seed, progress)
    folder = work / f"pools-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    pools = pools_of(folder, seed, study, fp)  # testing models' then calibration references' answers per candidate
    n = len(study.testing)
    ctl = agreement(everyone, ctl_fp.inputs, ctl_fp.keys).mean(1)
    cem = cfg.cem
    sizes = {p: len(pools[p]["t"]) for p in POOLS}
    seconds = {p: float(pools[p]["seconds"]) for p in POOLS}
    per_pool = (cem.size - cem.n_errors, cem.n_errors)
    full = picks(pools, (sizes["correct"], sizes["errors"]), *per_pool)
    settings = {}
    for name, budget in BUDGETS.items():
        # the smoke run's pools are small: each budget at its share of 2,048
        budget = tuple(max(1, b * sizes[p] // 2048) if smoke else min(b, sizes[p]) for b, p in zip(budget, POOLS))
        idx = picks(pools, budget, *per_pool)
        if len(idx["correct"]) + len(idx["errors"]) < cem.size:
            settings[name] = None  # too few kept candidates in this prefix
            continue
        answers = np.concatenate([pools[p]["agree"][:, idx[p]] for p in POOLS], axis=1)
        ev = evaluate(answers, ctl, is_surr, n)
        ev.update({"budget": list(budget), "seconds": sum(seconds[p] * b / sizes[p] for p, b in zip(POOLS, budget)),
                   "train_confer": float(np.concatenate([pools[p]["hard"][idx[p]] for p in POOLS]).astype(np.float64).mean()),
                   "same_as_study": int(sum(len(np.intersect1d(idx[p], full[p])) for p in POOLS))})
        settings[name] = ev
    st = settings["study"]
    log.info("seed %d: study AUC %.3f margin %+.3f d' %.2f | %s", seed, st["roc_auc"], st["margin"], st["d_prime"],
             " | ".join(f"{k} {v['margin']:+.3f} {v['d_prime']:.2f} {v['seconds']:.0f}s" for k, v in settings.items()
                        if k != "study" and v is not None))
    return {"seed": seed, "settings": settings, "models": [m.name for m in study.testing], "pool_seconds": seconds}


def decide(runs: list[dict]) -> dict:
    """§31's rule, `control_recipe`'s :func:`cheapest_eligible` for a cost lever, on every budget but the study's; a
    budget that keeps too few candidates on some draw is left out (not eligible)."""
    whole = tuple(k for k in BUDGETS if all(r["settings"][k] is not None for r in runs))
    return cheapest_eligible(runs, whole, whole[1:])


def write_markdown(payload: dict, path: Path) -> None:
    runs = payload["runs"]
    names = list(BUDGETS)
    lines = ["# Fewer CEM candidates per pool — Fashion-MNIST", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each draw of the default study (separation.py's zoo and fingerprint; CEM's pools replayed, nothing "
             "retrained). A budget keeps the best of the first k candidates of each pool, as CEM with that "
             "`max_candidates` does. Score: CAEAcc on the fingerprint − CAEAcc on the default's control (50 PGD steps). "
             "Cells: calibrated AUC / margin / d′ (surrogates, references called stolen by the threshold refitted on the "
             "12 calibration references); kept examples shared with the study's 100. Met: AUC ≥ 0.95 and margin > 0.", "",
             *seed_table(runs, names, lambda s: "too few kept" if s is None else f"{draw_cell(s)}; {s['same_as_study']}")]
    if runs:
        t = decide(runs)
        lines += ["", f"Over {len(runs)} draws:", "",
                  "| budget (correct, mistakes) | goal met | mean d′ | d′ change against `study` (± se, up on) | mean gap | "
                  "stolen: surrogates, references | mean s to optimise | eligible by §31's rule |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name in names:
            if name not in t:
                lines.append(f"| {name} {BUDGETS[name]} | too few kept on some draw | | | | | | no |")
                continue
            x = t[name]
            ok = "–" if name == "study" else ("yes" if x["eligible"] else "no")
            lines.append(f"| {name} {BUDGETS[name]} | {totals_cells(x)} | {x['seconds_mean']:.1f} | {ok} |")
        lines += ["", f"Chosen by §31's rule (the cheapest eligible): **{t['chosen'] or 'none; the study budget stays'}**."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    def extra(payload: dict) -> None:
        payload["totals"] = decide(payload["runs"])

    return run_draws(argv, script="cem_budget.py", stem=STEM, description=__doc__.split("\n\n")[0],
                     work_name="cem-budget", write_md=write_markdown, extra=extra,
                     run_draw=lambda seed, args, work: run_seed(seed, work, args.data_dir, args.progress, args.smoke))


if __name__ == "__main__":
    sys.exit(main())
