"""Calibration references that relate to the training ensemble as strangers do (issue 3; separation-summary §38).

    python benchmarks/split_calibration.py --seeds 56 57 ... --data-dir /usr/share/fashion-mnist

Over 45 draws of the default (§34–§37) the D2 testing references scored above every D1 calibration set: CEM
optimises its examples against D1 references, and any D1 model shares their training images, so the verdict fitted
on D1 references accuses strangers more often than its α (§37: even the tolerance bound accused 9 of 80 on ten new
draws). This benchmark splits D1 itself: it reloads each finished default run of `benchmarks/quickstart_seeds.py`
(benchmarks/runs/quickstart-seed<N>/; its source and its 8 + 8 testing models are reused, nothing of them is
retrained), splits D1 in two seeded halves, and

- trains the default's training ensemble (the same 10 + 16 groups and names, twice the epochs: the same number of
  optimiser steps on half the images) on **D1a** only, and generates the default's CEM fingerprint, control set and
  PGD baseline from D1a's images with it;
- trains the default's 12 calibration references (same groups, twice the epochs) on **D1b** only: they share no
  image with the ensemble or with the examples' origins, as a stranger's model does not;
- scores the testing models as the quickstart does (CAEAcc − CAEAcc on the control) and fits the verdict on the D1b
  references by the prediction bound (``split``) and by the tolerance bound (``split, tolerance``).

Each draw is compared, model for model, with the default run on the same source and testing models: its goal (AUC,
margin, d′) and its verdicts with its own 12 D1 references (``own``: prediction bound; ``own, tolerance``: the
default since stop 41). Models and fingerprints go to the run's ``split-d1/`` folder (a rerun reuses them).
The rule (``decision``) was committed before any draw was scored. Writes
benchmarks/results/split-calibration-fashion-mnist.json and docs/results/split-calibration-fashion-mnist.md after
every seed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from conferprint._io import atomic_write_text
from conferprint.allocator import tune_cpu_allocator
from conferprint.data.base import split_defender_attacker
from conferprint.experiments.quickstart import (CONTROL_NAME, DEFAULT, make_fingerprint, score_models, summarize)
from conferprint.experiments.zoo_builder import ZooBuilder
from conferprint.fingerprint.artifact import load_fingerprint
from conferprint.zoo import Zoo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import d_prime, separated  # noqa: E402
from calibration_origins import finished_run, null_spread, totals, verdicts  # noqa: E402
from ensemble_families import open_log, put_run  # noqa: E402
from quickstart_seeds import run_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEM = "split-calibration-fashion-mnist"
SPLIT_SEED_OFFSET = 7919  # D1 is split into D1a / D1b with seed + this (any fixed offset: a split of its own)
FOLDER = "split-d1"
SETTINGS = ("own", "own, tolerance", "split", "split, tolerance")


def halves(n: int, seed: int):
    """Positions into D1 of the ensemble's half (D1a) and the calibration references' half (D1b)."""
    return split_defender_attacker(n, seed + SPLIT_SEED_OFFSET)


def doubled(groups) -> tuple:
    """The groups with twice their epochs: as many optimiser steps on half the images."""
    return tuple(replace(g, epochs=2 * g.epochs) for g in groups)


def goal(rows: list[dict], key: str = "calibrated") -> dict:
    """AUC, margin, gap and d′ of surrogates against references by ``scores[key]``, and whether the goal is met."""
    pos = [r["scores"][key] for r in rows if r["role"] == "surrogate"]
    neg = [r["scores"][key] for r in rows if r["role"] == "reference"]
    s = summarize(rows, key)
    gap, dp = d_prime(pos, neg)
    return {"roc_auc": s["roc_auc"], "margin": s["margin"], "gap": gap, "d_prime": dp,
            "goal_met": separated(s["roc_auc"], s["margin"])}


def run_seed(seed: int, config, folder: Path, data_dir) -> dict:
    """One finished run of ``config`` (the default preset) on ``seed`` in ``folder``: the split's models,
    fingerprints and verdicts, and the run's own, on its testing models."""
    res, config, study, fp, ctl, own = finished_run(seed, config, folder, data_dir)
    if config.calibration_without_origins:
        raise SystemExit(f"{folder}: its verdict used the clean calibration references too; this benchmark compares "
                         "the verdict of the run's own twelve")
    n, alpha = len(fp), config.threshold_alpha

    # the default run, model for model (its own D1 calibration references, both bounds)
    default_rows = score_models(study.testing, {"cem": fp, "pgd": load_fingerprint(folder / "fingerprint-pgd"),
                                                "control": ctl}, "testing", None, "control")

    # the split: the ensemble on D1a, the calibration references on D1b, the examples from D1a
    t = time.perf_counter()
    a, b = halves(len(study.x1), seed)
    xa, ya, xb, yb = study.x1[a], study.y1[a], study.x1[b], study.y1[b]
    out = folder / FOLDER
    builder = ZooBuilder(Zoo(out / "zoo"), study.data, config.train, seed)
    ensemble = builder.run_all([j for g in doubled(config.training)
                                for j in builder.group_jobs("train", g, "D1a", xa, ya, study.source)])
    calibration = builder.run_all([j for g in doubled(config.calibration)
                                   for j in builder.group_jobs("cal", g, "D1b", xb, yb, study.source)])
    models_s = time.perf_counter() - t
    surr = [m for m in ensemble if m.meta["role"] == "surrogate"]
    refs = [m for m in ensemble if m.meta["role"] == "reference"]
    k = study.data.num_classes
    t = time.perf_counter()
    sfp, _ = make_fingerprint(config.cem, "fingerprint", out, study.source, surr, refs, xa, ya, seed, k, False)
    spgd, _ = make_fingerprint(config.pgd, "fingerprint-pgd", out, study.source, [], [], xa, ya, seed, k, False)
    sctl, _ = make_fingerprint(config.control, CONTROL_NAME, out, study.source, [], [], xa, ya, seed + 100, k, False)
    fps_s = time.perf_counter() - t
    fps = {"cem": sfp, "pgd": spgd, "control": sctl}
    split_cal = score_models(calibration, fps, "calibration", None, "control")
    split_rows = score_models(study.testing, fps, "testing", None, "control")
    # a diagnostic, not in the rule: the run's own D1 references (they share D1a with the split's ensemble, and all
    # of D1 with the source) on the split's fingerprint
    own_on_split = score_models(study.calibration, fps, "calibration", None, "control")

    def ref_mean(rows):
        return statistics.fmean(r["score"] for r in rows if r["role"] == "reference")

    settings = {"own": verdicts(own, default_rows, n, alpha, "prediction"),
                "own, tolerance": verdicts(own, default_rows, n, alpha, "tolerance"),
                "split": verdicts(split_cal, split_rows, n, alpha, "prediction"),
                "split, tolerance": verdicts(split_cal, split_rows, n, alpha, "tolerance")}
    mine = settings["own" if config.threshold_rule == "prediction" else "own, tolerance"]
    if (mine["surrogates_stolen"], mine["references_stolen"]) != (res["decisions"]["true_positives"],
                                                                  res["decisions"]["false_positives"]):
        raise SystemExit(f"{folder}: the default's verdicts differ from the run's ({mine} against {res['decisions']})")

    def accs(models):
        return statistics.fmean(m.meta["test_acc"] for m in models)

    return {"seed": seed, "d1": len(study.x1), "d1a": len(a), "d1b": len(b),
            "default": {"goal": goal(default_rows), "pgd": goal(default_rows, "pgd"),
                        "ensemble_test_acc": accs(study.training), "calibration_test_acc": accs(study.calibration),
                        "testing_reference_mean": ref_mean(default_rows), "cem_stats": fp.manifest.get("stats")},
            "split": {"goal": goal(split_rows), "pgd": goal(split_rows, "pgd"),
                      "ensemble_test_acc": accs(ensemble), "calibration_test_acc": accs(calibration),
                      "testing_reference_mean": ref_mean(split_rows), "cem_stats": sfp.manifest.get("stats"),
                      "content_sha256": sfp.manifest["content_sha256"],
                      "trained_now": sum(m.trained_now for m in ensemble + calibration),
                      "train_seconds": float(sum(m.meta.get("train_seconds") or 0.0 for m in ensemble + calibration)),
                      "models_wall_seconds": models_s, "fingerprints_wall_seconds": fps_s,
                      "scores": {r["name"]: r["score"] for r in split_rows},
                      "calibration_scores": [r["score"] for r in split_cal],
                      "own_calibration_scores": [r["score"] for r in own_on_split],
                      "own_calibration_bias": statistics.fmean(r["score"] for r in own_on_split) - ref_mean(split_rows)},
            "n_surrogates": sum(r["role"] == "surrogate" for r in split_rows),
            "n_references": sum(r["role"] == "reference" for r in split_rows),
            "settings": settings}


def decision(runs: list[dict], alpha: float = 0.05, reps: int = 20000) -> dict | None:
    """§38's rule, committed before any draw was scored. ``split`` (the D1a ensemble's fingerprint, its verdict the
    prediction bound of the twelve D1b references) is a candidate for the default verdict, to be confirmed on new
    draws from nothing, only if over the draws measured

    1. its false accusations are consistent with α: at least as many would occur with probability ≥ 0.05 for a
       verdict exactly at α (:func:`calibration_origins.null_spread`, 12 calibration and 8 testing references a draw);
    2. it catches more testing surrogates than the default verdict (``own, tolerance``) on the same draws;
    3. it meets the goal on at least as many draws as the default's fingerprint, with a mean d′ at least as high.

    Otherwise it is not a candidate. None before any draw."""
    if not runs:
        return None
    tot = totals(runs, SETTINGS)
    spread = null_spread(len(runs), runs[0]["settings"]["split"]["n_calibration"], runs[0]["n_references"], alpha,
                         reps=reps)
    tail = spread["p_at_least"]
    p = tail[min(tot["split"]["references_stolen"], len(tail) - 1)]
    met = {w: sum(r[w]["goal"]["goal_met"] for r in runs) for w in ("default", "split")}
    dp = {w: statistics.fmean(r[w]["goal"]["d_prime"] for r in runs) for w in ("default", "split")}
    checks = {"consistent_with_alpha": p >= 0.05,
              "catches_more_than_default": tot["split"]["surrogates_stolen"] > tot["own, tolerance"]["surrogates_stolen"],
              "separates_no_worse": met["split"] >= met["default"] and dp["split"] >= dp["default"]}
    return {"totals": tot, "chance": {"mean": spread["mean"], "sd": spread["sd"], "p_at_least": p},
            "goal_met": met, "mean_d_prime": dp, "checks": checks, "candidate": all(checks.values())}


def write_md(payload: dict, path: Path) -> None:
    runs, dec = payload["runs"], payload.get("decision")

    def g(x):
        return f"{x['roc_auc']:.3f} / {x['margin']:+.3f} / {x['d_prime']:.2f}" + (" ✓" if x["goal_met"] else "")

    lines = ["# The training ensemble on one half of D1, the verdict's calibration references on the other (Fashion-MNIST)",
             "", "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Per draw, the default run (its fingerprint; its 12 D1 calibration references) against the same source and "
             "8 + 8 testing models with the ensemble trained on D1a, the examples made from D1a, and 12 calibration "
             "references trained on D1b (twice the epochs on half the images). AUC / margin / d′ of the verdict's score "
             "(✓: the goal met); caught, accused: testing surrogates and references the verdict calls stolen. Bias: the "
             "calibration references' mean score − the testing references'. Protocol: docs/results/separation-summary.md §38.",
             "", "| seed | default | split | PGD AUC: default, split | own, tolerance: caught, accused (bias) | "
             "split: caught, accused (bias) | split, tolerance | own 12 on the split's fingerprint: bias | "
             "ensemble acc: default, split | split models + fingerprints s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        st = r["settings"]
        cell = lambda s: f"{st[s]['surrogates_stolen']}, {st[s]['references_stolen']} ({st[s]['bias']:+.3f})"  # noqa: E731
        sp = r["split"]
        lines.append(f"| {r['seed']} | {g(r['default']['goal'])} | {g(sp['goal'])} | {r['default']['pgd']['roc_auc']:.3f}, "
                     f"{sp['pgd']['roc_auc']:.3f} | {cell('own, tolerance')} | {cell('split')} | {cell('split, tolerance')} | "
                     f"{format(sp['own_calibration_bias'], '+.3f') if 'own_calibration_bias' in sp else '–'} | "
                     f"{r['default']['ensemble_test_acc']:.3f}, {sp['ensemble_test_acc']:.3f} | "
                     f"{sp['train_seconds']:.0f} + {sp['fingerprints_wall_seconds']:.0f} |")
    if dec:
        lines += ["", f"Over the {len(runs)} draws (of {dec['totals']['own']['surrogates']} surrogates and "
                  f"{dec['totals']['own']['references']} references each):", "",
                  "| verdict | caught | accused | mean bias | mean threshold |", "| --- | --- | --- | --- | --- |"]
        for s, t in dec["totals"].items():
            lines.append(f"| {s} | {t['surrogates_stolen']} | {t['references_stolen']} | {t['mean_bias']:+.3f} | "
                         f"{t['mean_threshold']:.3f} |")
        c = dec["chance"]
        lines += ["", f"Goal met: default {dec['goal_met']['default']}, split {dec['goal_met']['split']}; mean d′ "
                  f"{dec['mean_d_prime']['default']:.2f} and {dec['mean_d_prime']['split']:.2f}. A verdict exactly at α "
                  f"accuses {c['mean']:.1f} ± {c['sd']:.1f}; as many as `split`'s with probability {c['p_at_least']:.3f}.",
                  "", "§38's rule: " + "; ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}"
                                                 for k, v in dec["checks"].items())
                  + (". **A candidate**, to be confirmed on new draws." if dec["candidate"] else ". **Not a candidate.**")]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    tune_cpu_allocator()  # as the conferprint command does
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    out = ROOT / "benchmarks" / "results" / f"{STEM}.json"
    payload = open_log(out, "python benchmarks/split_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv))
    for seed in args.seeds:
        t = time.perf_counter()
        row = run_seed(seed, DEFAULT, run_folder("default", seed), args.data_dir)
        row["wall_seconds"] = time.perf_counter() - t
        put_run(payload, row, key=lambda r: r["seed"])
        payload["decision"] = decision(payload["runs"], DEFAULT.threshold_alpha)
        atomic_write_text(out, json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / f"{STEM}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
