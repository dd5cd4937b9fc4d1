"""A control set made from CEM's own other candidates (separation summary §29).

    python benchmarks/pool_control.py --seeds 0 1 2 3 4 5 6 13 14 15 16 17 18 19 20

The quickstart scores a suspect by CAEAcc on the fingerprint minus CAEAcc on a control set: 500 untargeted PGD
examples at ε 0.1 on the source, from images it classifies correctly. §23 split the score's spread within a group:
half of it is the models' *affinity* (a model that follows the source on one fingerprint example tends to on the
others), which the PGD control does not remove and which more examples cannot shrink. The fingerprint is another kind
of example than that control: CEM's, 75 from the source's own mistakes and 25 from its correct answers, at ε 0.05.
This benchmark builds the control from the same CEM run instead: its other optimised candidates, the ones not kept,
in the fingerprint's 3 : 1 split of the two pools, so that the control shares the fingerprint's kind and the
subtraction removes a model's readiness to follow *these* examples, not only PGD's.

For each draw of the default study already in `separation.py`'s work folder (zoo and fingerprints reused through
hard links; nothing is retrained), both of CEM's pools are optimised again exactly as `CEM.generate` does
(`mix_share.pools_of`, which checks that the replay gives back the draw's fingerprint example for example) with
every testing model's and calibration reference's answer per candidate. The controls (500 each; 375 from the mistakes
pool, 125 from the correct answers; eligible: adversarial for the source, not in the fingerprint):

- ``pool-random``: eligible candidates at random (seeded by the draw);
- ``pool-transfer``: the eligible candidates the 16 *training* references follow most (mean probability of the
  source's label), i.e. CEM's examples that independent models follow too;
- ``… + study``: the mean of that control's CAEAcc and the study's PGD control's (as §15 combined controls).

Each is scored as the quickstart scores (CAEAcc − CAEAcc on the control) on the 8 + 8 testing models, with the
verdict's threshold refitted on the draw's 12 calibration references (the prediction bound, α 0.05); the study's own
control is the baseline row. Nothing is chosen on the testing models here: the rule that decides is in §29.
Writes benchmarks/results/pool-control-fashion-mnist.json and docs/results/pool-control-fashion-mnist.md after every
draw (rows of earlier commands kept); the replayed pools are cached in the work folder, so a rerun only rescores.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import TINY, QuickstartConfig, make_fingerprint, _references, prepare_study

from _common import run_draws, separated  # run as a script: its folder is on sys.path
from candidate_signals import agreement  # (models, examples): 1 where a model gives the key
from mix_share import POOLS, evaluate, pools_of, top  # the replayed pools and the quickstart's scoring

log = logging.getLogger("pool_control")
STEM = "pool-control-fashion-mnist"
CONTROL_SIZE = 500  # the study's PGD control has 500 examples
CONTROLS = ("study", "pool-random", "pool-transfer", "pool-random + study", "pool-transfer + study")


def study_config(smoke: bool) -> QuickstartConfig:
    if not smoke:
        from separation import DRAWS  # the default as the draws were made

        return DRAWS
    # every code path on the tiny preset with the default's kind of CEM (two pools, best by Confer) and calibration
    # references; its numbers mean nothing
    return replace(TINY, cem=replace(TINY.cem, candidates="mixed", errors_share=0.75, search="best", balance=False),
                   calibration=_references(("cnn_small", 1), ("mlp", 1), count=2), threshold="calibrated")


def control_split(size: int, errors_share: float) -> dict[str, int]:
    """How many of the control's ``size`` examples come from each pool: the fingerprint's split (rounded as
    `CEM.n_errors` rounds)."""
    n_err = int(size * errors_share + 1e-9)
    return {"correct": size - n_err, "errors": n_err}


def eligible(c: dict[str, np.ndarray], fingerprint_idx: np.ndarray) -> np.ndarray:
    """A pool's candidates a control may hold: adversarial for the source (its label is not the truth), not in the
    fingerprint."""
    ok = c["t"] != c["y"]
    ok[fingerprint_idx] = False
    return np.flatnonzero(ok)


def pool_controls(pools: dict[str, dict[str, np.ndarray]], fp_idx: dict[str, np.ndarray], split: dict[str, int],
                  seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Each control's candidates per pool: ``pool-random`` (seeded) and ``pool-transfer`` (highest mean probability
    of the source's label over the training references, ties by position)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {"pool-random": {}, "pool-transfer": {}}
    for pool in POOLS:
        ok, n = eligible(pools[pool], fp_idx[pool]), split[pool]
        if len(ok) < n:
            raise SystemExit(f"the {pool} pool has {len(ok)} eligible candidates, fewer than the control's {n}")
        out["pool-random"][pool] = np.sort(rng.choice(ok, size=n, replace=False))
        p_ref = pools[pool]["p_ref"].astype(np.float64).mean(0)[ok]
        out["pool-transfer"][pool] = ok[np.argsort(-p_ref, kind="stable")[:n]]
    return out


def within_group_corr(f: np.ndarray, c: np.ndarray, is_surr: np.ndarray) -> float | None:
    """Mean over the two roles of the correlation, across a role's testing models, of CAEAcc on the fingerprint
    and on the control: how much of a model's level the control carries."""
    rs = [float(np.corrcoef(f[m], c[m])[0, 1]) for m in (is_surr, ~is_surr) if m.sum() > 2 and f[m].std() > 0 and c[m].std() > 0]
    return float(np.mean(rs)) if rs else None


def open_draw(seed: int, work: Path, data_dir, progress: bool, smoke: bool):
    """The draw's study (separation.py's zoo hard-linked into ``work``; the tiny preset with ``smoke``) and its CEM
    fingerprint, with the config they were made with; the scored models are the testing models then the calibration
    references, ``is_surr`` marking the testing surrogates."""
    from separation import link_draw  # the zoo and fingerprints of separation.py's draw, hard-linked

    cfg = study_config(smoke)
    if not smoke:
        link_draw(seed, work)
    study = prepare_study(cfg, work / f"zoo-seed{seed}", seed=seed, data_dir=data_dir, progress=progress)
    fp, _ = make_fingerprint(cfg.cem, f"fp-seed{seed}-cem-pool", work, study.source, study.training_role("surrogate"),
                              study.training_role("reference"), study.x1, study.y1, seed, study.data.num_classes, progress)
    everyone = list(study.testing) + list(study.calibration)
    is_surr = np.array([m.meta["role"] == "surrogate" for m in study.testing])
    return cfg, study, fp, everyone, is_surr


def make_control(method, name: str, work: Path, study, seed: int, progress: bool = False):
    """A control set of the draw's source (``method`` on its D1 candidates, the study's control seed), made or reused
    as ``work/name``."""
    return make_fingerprint(method, name, work, study.source, [], [], study.x1, study.y1, seed + 100,
                             study.data.num_classes, progress)[0]


def draw_cell(s: dict) -> str:
    """One draw's result for one setting in the reports: calibrated AUC / margin / d′ (surrogates, references called
    stolen), "met" where issue 3's goal is."""
    met = " met" if separated(s["roc_auc"], s["margin"]) else ""
    return (f"{s['roc_auc']:.3f} / {s['margin']:+.3f} / {s['d_prime']:.2f} "
            f"({s['surrogates_stolen']}, {s['references_stolen']}){met}")


def seed_table(runs: list[dict], names: list[str], cell: Callable[[dict], str] = draw_cell) -> list[str]:
    """The reports' per-draw table: a row per draw, a column per setting in ``names``, ``cell(setting's result)``."""
    return (["| seed | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |"]
            + [f"| {r['seed']} | " + " | ".join(cell(r["settings"][name]) for name in names) + " |" for r in runs])


def totals_cells(x: dict) -> str:
    """A setting's :func:`totals` in the reports: goal met | mean d′ | paired change (± se), up on | mean gap |
    surrogates, references called stolen."""
    se = f" ± {x['d_prime_change_se']:.2f}" if x["d_prime_change_se"] is not None else ""
    return (f"{x['met']} | {x['d_prime_mean']:.2f} | {x['d_prime_change']:+.2f}{se}, {x['up']} | {x['gap_mean']:.3f} | "
            f"{x['surrogates_stolen']}, {x['references_stolen']}")


def run_seed(seed: int, work: Path, data_dir, progress: bool = False, smoke: bool = False) -> dict:
    cfg, study, fp, everyone, is_surr = open_draw(seed, work, data_dir, progress, smoke)
    ctl_fp = make_control(cfg.control or cfg.pgd, f"fp-seed{seed}-control", work, study, seed, progress)
    t0 = time.perf_counter()
    folder = work / f"pools-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    pools = pools_of(folder, seed, study, fp)  # testing models' then calibration references' answers per candidate
    replay_seconds = time.perf_counter() - t0
    for pool in POOLS:  # a cache written before mix_share kept the labels and the members' probabilities
        if not {"y", "p_ref"} <= set(pools[pool]):
            raise SystemExit(f"{folder / 'mix-share' / (pool + '.npz')}: an older cache without 'y' and 'p_ref'; delete it to replay")
    cem = cfg.cem
    fp_idx = {"correct": top(pools["correct"], cem.size - cem.n_errors), "errors": top(pools["errors"], cem.n_errors)}
    size = CONTROL_SIZE if not smoke else 40
    chosen = pool_controls(pools, fp_idx, control_split(size, cem.errors_share), seed)

    n = len(study.testing)
    answers = np.concatenate([pools[p]["agree"][:, fp_idx[p]] for p in POOLS], axis=1)  # the fingerprint
    study_ctl = agreement(everyone, ctl_fp.inputs, ctl_fp.keys).mean(1)
    ctl = {"study": study_ctl}
    for name, idx in chosen.items():
        ctl[name] = np.concatenate([pools[p]["agree"][:, idx[p]] for p in POOLS], axis=1).mean(1)
        ctl[f"{name} + study"] = (ctl[name] + study_ctl) / 2
    f = answers.mean(1)
    settings = {}
    for name in CONTROLS:
        ev = evaluate(answers, ctl[name], is_surr, n)
        c = ctl[name][:n]
        ev.update({"control_mean_surrogates": float(c[is_surr].mean()), "control_mean_references": float(c[~is_surr].mean()),
                   "control_mean_calibration": float(ctl[name][n:].mean()),
                   "corr_with_fingerprint": within_group_corr(f[:n], c, is_surr),
                   "sd_surrogates": float(np.std(np.array(ev["scores"])[is_surr], ddof=1)),
                   "sd_references": float(np.std(np.array(ev["scores"])[~is_surr], ddof=1))})
        settings[name] = ev
    st = settings["study"]
    log.info("seed %d: study AUC %.3f margin %+.3f d' %.2f | %s", seed, st["roc_auc"], st["margin"], st["d_prime"],
             " | ".join(f"{k} {v['roc_auc']:.3f} {v['margin']:+.3f} {v['d_prime']:.2f}" for k, v in settings.items() if k != "study"))
    return {"seed": seed, "settings": settings, "models": [m.name for m in study.testing],
            "fingerprint_cae": [float(v) for v in f[:n]],
            "eligible": {p: int(len(eligible(pools[p], fp_idx[p]))) for p in POOLS},
            "control_power_pool": {k: float(ctl[k][:n][is_surr].mean() - ctl[k][:n][~is_surr].mean()) for k in ctl},
            "replay_seconds": replay_seconds,  # this run's: the optimisation, or only reloading the cached pools
            "optimise_seconds": {p: float(pools[p]["seconds"]) for p in POOLS}}


def totals(runs: list[dict], names: tuple[str, ...] = CONTROLS) -> dict:
    """Per control of ``names`` (the first is the baseline), over the draws: goal met, mean d′ and gap, verdicts,
    and the paired change of d′ against the baseline."""
    out = {}
    for name in names:
        s = [r["settings"][name] for r in runs]
        dd = [r["settings"][name]["d_prime"] - r["settings"][names[0]]["d_prime"] for r in runs]
        out[name] = {"draws": len(s), "met": sum(separated(x["roc_auc"], x["margin"]) for x in s),
                     "d_prime_mean": float(np.mean([x["d_prime"] for x in s])), "gap_mean": float(np.mean([x["gap"] for x in s])),
                     "surrogates_stolen": sum(x["surrogates_stolen"] for x in s),
                     "references_stolen": sum(x["references_stolen"] for x in s),
                     "corr_mean": float(np.mean(corr)) if (corr := [x["corr_with_fingerprint"] for x in s
                                                                     if x.get("corr_with_fingerprint") is not None]) else None,
                     "d_prime_change": float(np.mean(dd)),
                     "d_prime_change_se": float(np.std(dd, ddof=1) / np.sqrt(len(dd))) if len(dd) > 1 else None,
                     "up": sum(d > 0 for d in dd)}
    return out


def candidates(runs: list[dict]) -> dict:
    """:func:`totals` with §29's rule per pool control."""
    out = totals(runs)
    base = out["study"]
    for name in CONTROLS[1:]:  # §29's rule: more draws met and no more references called stolen
        t = out[name]
        t["candidate"] = t["met"] > base["met"] and t["references_stolen"] <= base["references_stolen"]
    return out


def write_markdown(payload: dict, path: Path) -> None:
    runs = payload["runs"]
    lines = ["# A control set from CEM's own candidates — Fashion-MNIST", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each draw of the default study (separation.py's zoo, fingerprint and PGD control; nothing retrained). Score: "
             "CAEAcc on the fingerprint − CAEAcc on the control; `study` is the quickstart's (500 PGD, ε 0.1). The pool "
             "controls hold 500 of CEM's other candidates (375 mistakes, 125 correct answers; adversarial, not in the "
             "fingerprint): at random, or those the training references follow most; `+ study` averages the two controls. "
             "Cells: calibrated AUC / margin / d′ (surrogates, references called stolen by the threshold refitted on the 12 "
             "calibration references). Met: AUC ≥ 0.95 and margin > 0.", "", *seed_table(runs, CONTROLS)]
    if runs:
        t = candidates(runs)
        lines += ["", f"Over {len(runs)} draws:", "",
                  "| control | goal met | mean d′ | d′ change against `study` (± se, up on) | mean gap | stolen: surrogates, "
                  "references | corr. with the fingerprint's CAEAcc within a role | candidate by §29's rule |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name in CONTROLS:
            x = t[name]
            cand = "–" if name == "study" else ("yes" if x["candidate"] else "no")
            lines.append(f"| {name} | {totals_cells(x)} | {x['corr_mean']:.2f} | {cand} |")
        lines += ["", "Control means (surrogates / references / calibration references) per draw:", "",
                  "| seed | " + " | ".join(CONTROLS[:3]) + " |", "| --- | --- | --- | --- |"]
        for r in runs:
            lines.append(f"| {r['seed']} | " + " | ".join(
                f"{r['settings'][k]['control_mean_surrogates']:.3f} / {r['settings'][k]['control_mean_references']:.3f} / "
                f"{r['settings'][k]['control_mean_calibration']:.3f}" for k in CONTROLS[:3]) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    def extra(payload: dict) -> None:
        payload["totals"] = candidates(payload["runs"])

    return run_draws(argv, script="pool_control.py", stem=STEM, description=__doc__.split("\n\n")[0], work_name="pool-control",
                     run_draw=lambda seed, args, work: run_seed(seed, work, args.data_dir, args.progress, args.smoke),
                     write_md=write_markdown, extra=extra)

if __name__ == "__main__":
    sys.exit(main())
