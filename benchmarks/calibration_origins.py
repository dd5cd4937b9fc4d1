"""The verdict's calibration references trained without the examples' origins (issue 3; separation-summary §35).

    python benchmarks/calibration_origins.py --seeds 21 22 ... 40

The default's verdict threshold is the upper 95 % prediction bound of 12 D1 references' scores. On the twenty draws
of §34 (seeds 21–40) it called 12 of 160 testing references stolen, 7.5 % against the 5 % it is fitted for: the D1
calibration references score 0.037 below the D2 testing references on average per draw. A D1 reference has learned
the true labels of the very images the fingerprint's and the control's examples were made from (the source's own
mistakes among them), which a stranger's model has not seen. This benchmark reloads each finished default run of
`benchmarks/quickstart_seeds.py` (benchmarks/runs/quickstart-seed<N>/; nothing of it is retrained), trains the same
12 calibration references (same groups, names and so initial weights) on D1 *without* those origins (the
fingerprint's 100 and the control's 500 images; zoo in the run's ``calibration-clean/``), and scores the verdict
with four sets of calibration references, each with the library's whole rule (the score at or above the fitted
threshold, or raw CAEAcc significant at 1e-3 under the same references' null):

- ``own``: the run's 12 (the default; must reproduce the run's own verdicts, checked);
- ``own, tolerance``: the same 12 with the tolerance bound (``--threshold-rule tolerance``, 90 % confidence);
- ``clean``: the 12 trained without the origins, prediction bound;
- ``own + clean``: all 24, prediction bound.

Each row also gives the bias: the calibration references' mean score minus the testing references'. The decision
rule was committed before any draw was scored (``decision``; separation-summary §35). Writes
benchmarks/results/calibration-origins-fashion-mnist.json and docs/results/calibration-origins-fashion-mnist.md
after every seed (a rerun of a seed replaces its row; its clean references are reused from the zoo).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from conferprint._io import atomic_write_text
from conferprint.allocator import tune_cpu_allocator
from conferprint.experiments.quickstart import (CLEAN_CALIBRATION, PRESETS, clean_calibration, control_fingerprint, decide,
                                                fit_verdict, prepare_study, score_models)
from conferprint.fingerprint.artifact import load_fingerprint
from conferprint.verify.calibration import prediction_threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble_families import open_log, put_run  # noqa: E402  (the same result log)
from quickstart_seeds import run_folder, same_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEM = "calibration-origins-fashion-mnist"
SETTINGS = ("own", "own, tolerance", "clean", "own + clean")
CANDIDATES = ("clean", "own + clean")  # the settings that may replace the default (``decision``)
# §37's confirmation (separation-summary §37, committed before any of its draws was scored): its new draws are the
# seeds from CONFIRM_FIRST on; its candidates in the order they are preferred (most surrogates caught over §36's 35 draws)
CONFIRM_FIRST = 56
CONFIRM_ORDER = ("own", "own + clean", "own, tolerance")


def verdicts(cal: list[dict], testing: list[dict], n: int, alpha: float, rule: str) -> dict:
    """The verdict's threshold fitted on the calibration rows ``cal`` (``score``, ``cae_acc``, ``name``) by ``rule``,
    the raw CAEAcc rule's critical count under their null, and how many ``testing`` rows of each role it calls
    stolen; with the calibration references' mean and sd, and their mean minus the testing references' (bias)."""
    fit, critical = fit_verdict(cal, n, alpha, rule)
    stolen = {}
    for r in testing:
        decide(r := dict(r), fit["threshold"], n, critical)
        stolen[r["name"]] = r["verdict"] == "stolen"
    refs = [r["score"] for r in testing if r["role"] == "reference"]
    mean = statistics.fmean(r["score"] for r in cal)
    return {"threshold": fit["threshold"], "raw_critical_matches": critical, "n_calibration": len(cal),
            "cal_mean": mean, "cal_sd": statistics.stdev(r["score"] for r in cal),
            "bias": mean - statistics.fmean(refs),
            "surrogates_stolen": sum(stolen[r["name"]] for r in testing if r["role"] == "surrogate"),
            "references_stolen": sum(stolen[r["name"]] for r in testing if r["role"] == "reference"),
            "stolen": sorted(k for k, v in stolen.items() if v)}


def run_setting(recorded: dict) -> str:
    """Which of ``SETTINGS`` a run's verdict used, from its recorded config (``own`` before §37)."""
    rule = recorded.get("threshold_rule", "prediction")
    clean = recorded.get("calibration_without_origins", False)
    found = {("prediction", False): "own", ("tolerance", False): "own, tolerance",
             ("prediction", True): "own + clean"}.get((rule, clean))
    if found is None:
        raise SystemExit(f"a verdict this benchmark does not score: threshold rule {rule!r}, calibration without "
                         f"origins {clean}")
    return found


def finished_run(seed: int, config, folder: Path, data_dir) -> tuple[dict, object, object, object, object, list[dict]]:
    """The finished run of ``config`` on ``seed`` in ``folder``, checked to be the run its results record: its
    results, ``config`` as that run used it (the series holds runs from before the default's verdict changed, §37),
    its study (nothing retrained), fingerprint, control set, and its own calibration references' rows (their scores
    the run's). Anything else is refused with the reason."""
    found = folder / "results.json"
    if not found.is_file():
        raise SystemExit(f"{folder}: no results.json; run benchmarks/quickstart_seeds.py --seeds {seed} first")
    res = json.loads(found.read_text())
    config = replace(config, threshold_rule=res["config"].get("threshold_rule", "prediction"),
                     calibration_without_origins=res["config"].get("calibration_without_origins", False))
    if res["seed"] != seed or not same_config(res["config"], config):
        raise SystemExit(f"{folder}: not a run of the {config.preset!r} preset as it stands now on seed {seed}")
    if res.get("threshold_fit") is None or not config.calibration:
        raise SystemExit(f"{folder}: its verdict was not fitted on calibration references")
    fp, ctl = load_fingerprint(folder / "fingerprint"), control_fingerprint(folder)
    if fp.manifest["content_sha256"] != res["fingerprint"]["content_sha256"] or ctl is None:
        raise SystemExit(f"{folder}: its fingerprint or control set is not the one its results were scored on")
    study = prepare_study(config, folder / "zoo", seed=seed, data_dir=data_dir)
    if any(m.trained_now for m in [study.source, *study.training, *study.calibration, *study.testing]):
        raise SystemExit(f"{folder}: its zoo lacked models the run had (trained now); not the finished run")
    own = score_models(study.calibration, {"cem": fp, "control": ctl}, "calibration", None, "control")
    if [round(r["score"], 9) for r in own] != [round(s, 9) for s in res["threshold_fit"]["scores"][: len(own)]]:
        raise SystemExit(f"{folder}: its calibration references no longer give the scores the run recorded")
    return res, config, study, fp, ctl, own


def run_seed(seed: int, config, folder: Path, data_dir) -> dict:
    """One finished run of ``config`` on ``seed`` in ``folder``: its calibration references trained again without the
    examples' origins, and the four settings' verdicts on its testing models."""
    res, config, study, fp, ctl, own = finished_run(seed, config, folder, data_dir)
    setting = run_setting(res["config"])
    fps = {"cem": fp, "control": ctl}
    recorded = [round(s, 9) for s in res["threshold_fit"]["scores"]]

    # the library's clean calibration (the same group names as the run's, so the same initial weights; only the
    # data differ), in the run's own zoo for it
    clean_models, dropped = clean_calibration(config, study, folder / CLEAN_CALIBRATION, seed, fp, ctl)
    clean = score_models(clean_models, fps, "calibration-clean", None, "control")
    if [round(r["score"], 9) for r in own + (clean if setting == "own + clean" else [])] != recorded:
        raise SystemExit(f"{folder}: the run's verdict was fitted on other calibration references than this benchmark's")

    testing = res["models"]
    n, alpha = len(fp), config.threshold_alpha
    rows = {"own": verdicts(own, testing, n, alpha, "prediction"),
            "own, tolerance": verdicts(own, testing, n, alpha, "tolerance"),
            "clean": verdicts(clean, testing, n, alpha, "prediction"),
            "own + clean": verdicts(own + clean, testing, n, alpha, "prediction")}
    mine = rows[setting]
    if (mine["surrogates_stolen"], mine["references_stolen"]) != (res["decisions"]["true_positives"],
                                                                  res["decisions"]["false_positives"]):
        raise SystemExit(f"{folder}: the {setting!r} verdicts differ from the run's ({mine} against "
                         f"{res['decisions']})")
    return {"seed": seed, "preset": config.preset, "origins_left_out": dropped,
            "clean_training_images": len(study.x1) - dropped,
            "clean_train_seconds": float(sum(m.meta.get("train_seconds") or 0.0 for m in clean_models)),
            "clean_trained_now": sum(m.trained_now for m in clean_models),
            "clean_test_acc": [m.meta["test_acc"] for m in clean_models],
            "own_test_acc": [m.meta["test_acc"] for m in study.calibration],
            "n_surrogates": sum(r["role"] == "surrogate" for r in testing),
            "n_references": sum(r["role"] == "reference" for r in testing),
            "testing_reference_mean": statistics.fmean(r["score"] for r in testing if r["role"] == "reference"),
            "testing_reference_sd": statistics.stdev(r["score"] for r in testing if r["role"] == "reference"),
            "own_scores": [r["score"] for r in own], "clean_scores": [r["score"] for r in clean],
            "settings": rows}


def totals(runs: list[dict], settings: tuple[str, ...] = SETTINGS) -> dict:
    """Per setting, over the runs: surrogates and references called stolen (and of how many), mean bias and
    threshold."""
    out = {}
    for s in settings:
        rows = [r["settings"][s] for r in runs]
        out[s] = {"surrogates_stolen": sum(r["surrogates_stolen"] for r in rows),
                  "references_stolen": sum(r["references_stolen"] for r in rows),
                  "surrogates": sum(r["n_surrogates"] for r in runs), "references": sum(r["n_references"] for r in runs),
                  "mean_bias": statistics.fmean(r["bias"] for r in rows) if rows else None,
                  "mean_threshold": statistics.fmean(r["threshold"] for r in rows) if rows else None}
    return out


def null_spread(draws: int, n_cal: int, n_test: int, alpha: float, shift: float = 0.0, reps: int = 20000,
                seed: int = 0) -> dict:
    """How many testing references a prediction-bound verdict calls stolen over ``draws`` draws when every score is
    normal: ``n_cal`` calibration and ``n_test`` testing references a draw, the testing ones ``shift`` standard
    deviations higher (0: a verdict exactly at ``alpha``). ``reps`` simulated series: the mean, sd and the upper
    tail ``P(total ≥ k)`` for every ``k``, to read an observed total against."""
    factor = prediction_threshold([0.0, 1.0, 2.0] + [0.0] * (n_cal - 3), alpha)["factor"]
    gen = np.random.default_rng(seed)
    cal = gen.standard_normal((reps, draws, n_cal))
    test = gen.standard_normal((reps, draws, n_test)) + shift
    thr = cal.mean(2) + factor * cal.std(2, ddof=1)
    total = (test >= thr[..., None]).sum((1, 2))
    counts = np.bincount(total, minlength=draws * n_test + 1)
    tail = counts[::-1].cumsum()[::-1] / reps
    return {"draws": draws, "n_calibration": n_cal, "n_testing": n_test, "alpha": alpha, "shift_sd": shift,
            "reps": reps, "seed": seed, "mean": float(total.mean()), "sd": float(total.std()),
            "p_at_least": [float(v) for v in tail]}


def decision(tot: dict, alpha: float = 0.05) -> dict:
    """§35's rule, committed before any draw was scored: a candidate (``CANDIDATES``) replaces the default
    (``own``) only if it calls at most ``alpha`` of the testing references stolen over the draws, **and** catches
    more testing surrogates than ``own, tolerance`` (the library's existing way to bring false accusations down).
    Of several such, the one catching more; a tie goes to the cheaper, ``clean``."""
    bar = tot["own, tolerance"]["surrogates_stolen"]
    eligible = [c for c in CANDIDATES
                if tot[c]["references_stolen"] <= alpha * tot[c]["references"] and tot[c]["surrogates_stolen"] > bar]
    best = max(eligible, key=lambda c: (tot[c]["surrogates_stolen"], -CANDIDATES.index(c))) if eligible else None
    return {"adopt": best, "eligible": eligible, "tolerance_bar": bar,
            "false_accusation_cap": alpha * (tot["own"]["references"] if tot else 0)}


def confirmation(runs: list[dict], alpha: float = 0.05, first: int = CONFIRM_FIRST, reps: int = 20000) -> dict | None:
    """§37's rule, committed before any of its draws (seeds ≥ ``first``) was scored. Per candidate of
    ``CONFIRM_ORDER``: the testing references it calls stolen on the new draws and on all draws, each read against
    the chance spread of a verdict exactly at ``alpha`` with that candidate's number of calibration references
    (:func:`null_spread`). A candidate is *consistent with α* when both tails are at least 0.05; the first consistent
    one in ``CONFIRM_ORDER`` is adopted as the default verdict, and ``own, tolerance`` if none is. None before any
    new draw."""
    new = [r for r in runs if r["seed"] >= first]
    if not new:
        return None
    n_test = runs[0]["n_references"]
    out: dict = {"first_seed": first, "new_seeds": [r["seed"] for r in new], "alpha": alpha, "order": list(CONFIRM_ORDER),
                 "candidates": {}}
    spreads: dict[tuple[int, int], dict] = {}  # by (draws, calibration references): the same for own and tolerance
    for c in CONFIRM_ORDER:
        n_cal = new[0]["settings"][c]["n_calibration"]
        row = {"n_calibration": n_cal}
        for part, rs in (("new", new), ("all", runs)):
            stolen = sum(r["settings"][c]["references_stolen"] for r in rs)
            if (len(rs), n_cal) not in spreads:
                spreads[len(rs), n_cal] = null_spread(len(rs), n_cal, n_test, alpha, reps=reps)
            spread = spreads[len(rs), n_cal]
            tail = spread["p_at_least"]
            row[part] = {"draws": len(rs), "references_stolen": stolen, "references": sum(r["n_references"] for r in rs),
                         "surrogates_stolen": sum(r["settings"][c]["surrogates_stolen"] for r in rs),
                         "surrogates": sum(r["n_surrogates"] for r in rs),
                         "chance_mean": spread["mean"], "chance_sd": spread["sd"],
                         "p_at_least": tail[min(stolen, len(tail) - 1)]}
        row["consistent"] = row["new"]["p_at_least"] >= 0.05 and row["all"]["p_at_least"] >= 0.05
        out["candidates"][c] = row
    out["adopt"] = next((c for c in CONFIRM_ORDER if out["candidates"][c]["consistent"]), "own, tolerance")
    return out


def write_md(payload: dict, path: Path) -> None:
    runs, tot, dec = payload["runs"], payload["totals"], payload["decision"]
    lines = ["# The verdict's calibration references with and without the examples' origins (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each finished default run's 12 D1 calibration references (`own`) and the same 12 trained on D1 without "
             "the images the fingerprint's and the control's examples were made from (`clean`). The verdict as the "
             "library gives it (score ≥ threshold, or raw CAEAcc significant at 1e-3 under the calibration null) on the "
             "run's 8 + 8 testing models. Bias: the calibration references' mean score − the testing references'. "
             "Protocol: docs/results/separation-summary.md §35.", "",
             "| seed | origins left out | " + " | ".join(f"{s}: threshold / bias / stolen surr., refs" for s in SETTINGS)
             + " | clean training s |", "| --- | --- | " + " | ".join("---" for _ in SETTINGS) + " | --- |"]
    for r in runs:
        cells = [f"{v['threshold']:.3f} / {v['bias']:+.3f} / {v['surrogates_stolen']}, {v['references_stolen']}"
                 for v in (r["settings"][s] for s in SETTINGS)]
        lines.append(f"| {r['seed']} | {r['origins_left_out']} | " + " | ".join(cells)
                     + f" | {r['clean_train_seconds']:.0f} |")
    if runs:
        lines += ["", f"Over the {len(runs)} draws:", "",
                  "| calibration references | surrogates called stolen | references called stolen | mean bias | "
                  "mean threshold |", "| --- | --- | --- | --- | --- |"]
        for s in SETTINGS:
            t = tot[s]
            lines.append(f"| {s} | {t['surrogates_stolen']} / {t['surrogates']} | {t['references_stolen']} / "
                         f"{t['references']} | {t['mean_bias']:+.3f} | {t['mean_threshold']:.3f} |")
        lines += ["", "Rule (§35): a candidate replaces `own` only if it calls at most 5 % of the references stolen "
                  f"(≤ {dec['false_accusation_cap']:g}) and catches more surrogates than `own, tolerance` "
                  f"({dec['tolerance_bar']}). Eligible: {', '.join(dec['eligible']) or 'none'}; "
                  + (f"**adopt `{dec['adopt']}`**." if dec["adopt"] else "**the default stays**.")]
        ns = payload.get("null_spread")
        if ns:
            tail = ns["p_at_least"]
            lines += ["", f"Read against chance: a verdict exactly at α = {ns['alpha']:g} (every score normal, "
                      f"{ns['n_calibration']} calibration and {ns['n_testing']} testing references a draw, {ns['draws']} "
                      f"draws; {ns['reps']:,} simulated series) calls {ns['mean']:.1f} ± {ns['sd']:.1f} references stolen; "
                      + ", ".join(f"{t['references_stolen']} or more ({s}) with probability "
                                  f"{tail[min(t['references_stolen'], len(tail) - 1)]:.2f}"
                                  for s, t in tot.items() if s != "own, tolerance") + "."]
        conf = payload.get("confirmation")
        if conf:
            lines += ["", f"§37's confirmation on the new draws (seeds {', '.join(map(str, conf['new_seeds']))}) and on "
                      "all draws; P: the chance of as many or more false accusations for a verdict exactly at α:", "",
                      "| candidate | new: caught, accused | P (new) | all: caught, accused | P (all) | consistent |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for c, v in conf["candidates"].items():
                lines.append(f"| {c} | {v['new']['surrogates_stolen']} / {v['new']['surrogates']}, "
                             f"{v['new']['references_stolen']} / {v['new']['references']} | {v['new']['p_at_least']:.3f} | "
                             f"{v['all']['surrogates_stolen']} / {v['all']['surrogates']}, {v['all']['references_stolen']} / "
                             f"{v['all']['references']} | {v['all']['p_at_least']:.3f} | {'yes' if v['consistent'] else 'no'} |")
            lines += ["", f"By §37's rule: **adopt `{conf['adopt']}`** as the default verdict."]
        nb = payload.get("null_spread_own_bias")
        if nb:
            lines += ["", f"With the testing references higher by the own references' mean bias ({nb['shift_sd']:.2f} testing "
                      f"sd) and every sd equal, the same model calls {nb['mean']:.1f} ± {nb['sd']:.1f} stolen."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    tune_cpu_allocator()  # as the conferprint command does
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    config = PRESETS[args.preset]
    stem = STEM if args.preset == "default" else f"{STEM}-{args.preset}"
    out = ROOT / "benchmarks" / "results" / f"{stem}.json"
    payload = open_log(out, "python benchmarks/calibration_origins.py " + " ".join(sys.argv[1:] if argv is None else argv))
    for seed in args.seeds:
        t = time.perf_counter()
        row = run_seed(seed, config, run_folder(args.preset, seed), args.data_dir)
        row["wall_seconds"] = time.perf_counter() - t
        put_run(payload, row, key=lambda r: r["seed"])
        payload["totals"] = totals(payload["runs"])
        payload["decision"] = decision(payload["totals"], config.threshold_alpha)
        runs = payload["runs"]
        payload["null_spread"] = null_spread(len(runs), len(runs[0]["own_scores"]), runs[0]["n_references"],
                                             config.threshold_alpha)
        payload["confirmation"] = confirmation(runs, config.threshold_alpha)
        # the same with the testing references higher by the own references' mean bias, in testing sds (rows
        # of an older command lack their sd until rerun)
        payload.pop("null_spread_own_bias", None)
        if all("testing_reference_sd" in r for r in runs):
            shift = -payload["totals"]["own"]["mean_bias"] / statistics.fmean(r["testing_reference_sd"] for r in runs)
            payload["null_spread_own_bias"] = null_spread(len(runs), len(runs[0]["own_scores"]),
                                                          runs[0]["n_references"], config.threshold_alpha, shift=shift)
        atomic_write_text(out, json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / f"{stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
