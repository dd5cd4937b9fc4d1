"""The quickstart's default preset on several seeds: wall time per phase and the separation goal.

    python benchmarks/quickstart_seeds.py --seeds 0 1 2
    python benchmarks/quickstart_seeds.py --preset cifar10-cpu --seeds 0 1 --data-dir ../shared/data/cifar-10-batches-py
    python benchmarks/quickstart_seeds.py --preset cifar10 --device cuda --bf16 --seeds 0 1 --data-dir PATH
    python benchmarks/quickstart_seeds.py --bf16 --seeds 0 1 2   # the default preset trained under CPU bf16 autocast
    python benchmarks/quickstart_seeds.py --preset cifar10 --device cuda --collect RUN_DIR ...  # runs made elsewhere
    python benchmarks/quickstart_seeds.py --preset cifar10-cpu --cem-candidates correct --seeds 0 ...  # same models, another pool
    python benchmarks/quickstart_seeds.py --preset cifar10-cpu --cem-steps 25 --seeds 0 1 ...  # same models, other CEM steps

Runs `run_quickstart` (exactly what `conferprint quickstart` runs) once per seed into
benchmarks/runs/quickstart-seed<N>/ (resumable: rerunning reuses finished models), then writes
benchmarks/results/quickstart-seeds.json and docs/results/quickstart-seeds.md (another preset P:
benchmarks/runs/P-seed<N>/, quickstart-seeds-P.json, quickstart-seeds-P.md; on a GPU, ``--device cuda``:
quickstart-seeds-P-cuda.*; ``--bf16`` on the CPU: runs/...-seed<N>-bf16/ and quickstart-seeds[-P]-bf16.*). ``--collect DIR ...`` reads the results.json of quickstart runs made by
`conferprint quickstart` elsewhere (a GPU machine) instead of running them.
Goal (issue 3): ROC AUC ≥ 0.95 over ≥ 8 + 8 held-out models and min(surrogate score) >
max(reference score), ε ≤ 0.1, 100 examples, each run under 15 minutes on the 2-core CPU. The table
also gives the verdicts at the preset's threshold (fitted on calibration references where it says so).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from conferprint._io import atomic_write_text
from conferprint.allocator import tune_cpu_allocator
from conferprint.experiments.quickstart import PRESETS, run_quickstart, versions
from conferprint.verify import roc_auc, separation_margin
from conferprint.verify.calibration import prediction_threshold, tolerance_threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import d_prime, separated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    tune_cpu_allocator()  # as the conferprint command does
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--device", default="cpu", help="cpu or cuda (where the runs train)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast while training (CUDA or CPU)")
    p.add_argument("--collect", nargs="+", default=None, metavar="RUN_DIR",
                   help="summarise these finished runs' results.json instead of running (their seeds are read from them)")
    p.add_argument("--note", default=None, help="a note stored with the result (e.g. how collected runs were made)")
    p.add_argument("--cem-candidates", choices=["correct", "errors", "mixed"], default=None,
                   help="override the preset's CEM candidate pool; the runs get their own folders (the preset's "
                        "run's zoo copied in, so the same models are reused) and result files")
    p.add_argument("--cem-steps", type=int, default=None,
                   help="override the preset's CEM step count, like --cem-candidates (own folders, the same models)")
    p.add_argument("--cem-eps", type=float, default=None,
                   help="override the preset's CEM ε, like --cem-candidates (own folders, the same models)")
    p.add_argument("--tag", default=None,
                   help="a name for this series: result files quickstart-seeds[-P]...-TAG.* (the run folders stay per seed)")
    p.add_argument("--merge", action="store_true",
                   help="keep the runs of other seeds already in this series' result file (it must be of the same "
                        "settings), so that seeds can be run one command at a time")
    args = p.parse_args(argv)
    if args.tag is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", args.tag):
        p.error(f"--tag must be letters, digits, '.', '_' or '-' (at most 40), got {args.tag!r}")
    if args.cem_eps is not None and not 0 < args.cem_eps <= 1:
        p.error(f"--cem-eps must be in (0, 1], got {args.cem_eps}")
    config = PRESETS[args.preset]
    # runs on a GPU, or in bf16 on the CPU, get their own run folders and result files
    suffix = f"-{args.device}" if args.device != "cpu" else "-bf16" if args.bf16 else ""
    base_suffix = suffix
    if args.cem_candidates is not None and args.cem_candidates != config.cem.candidates:
        config = replace(config, cem=replace(config.cem, candidates=args.cem_candidates))
        suffix += f"-{args.cem_candidates}"
    if args.cem_steps is not None and args.cem_steps != config.cem.steps:
        if args.cem_steps < 1:
            raise SystemExit(f"--cem-steps must be at least 1, got {args.cem_steps}")
        config = replace(config, cem=replace(config.cem, steps=args.cem_steps))
        suffix += f"-steps{args.cem_steps}"
    if args.cem_eps is not None and args.cem_eps != config.cem.eps:
        config = replace(config, cem=replace(config.cem, eps=args.cem_eps))
        suffix += f"-eps{args.cem_eps:g}"
    stem = (("quickstart-seeds" if args.preset == "default" else f"quickstart-seeds-{args.preset}") + suffix
            + (f"-{args.tag}" if args.tag else ""))
    res_path = ROOT / "benchmarks" / "results" / f"{stem}.json"
    earlier = json.loads(res_path.read_text()) if res_path.is_file() else None
    kept = earlier_runs(earlier, res_path, config, [] if args.collect is not None else args.seeds) if args.merge else []
    runs = []
    full_walls = earlier_full_walls(earlier)
    sources = args.collect if args.collect is not None else args.seeds
    for item in sources:
        t = time.perf_counter()
        if args.collect is not None:
            found = Path(item) / "results.json"
            if not found.is_file():
                raise SystemExit(f"{item}: no results.json (not a finished quickstart run)")
            res = json.loads(found.read_text())
            if not same_config(res["config"], config):
                raise SystemExit(f"{item}: not a run of the {args.preset!r} preset as it stands now")
            seed = res["seed"]
        else:
            seed = item
            run_dir, base_dir = (run_folder(args.preset, seed, s) for s in (suffix, base_suffix))
            if run_dir != base_dir and not (run_dir / "zoo").exists() and (base_dir / "zoo").exists():
                shutil.copytree(base_dir / "zoo", run_dir / "zoo")  # the same models, another fingerprint
            res = run_quickstart(run_dir, config, seed=seed, data_dir=args.data_dir,
                                 progress=False, device=args.device, amp=args.bf16)
        sep = res["separation"]
        wall = res["timings"]["total"] if args.collect is not None else time.perf_counter() - t
        runs.append({"seed": seed, "wall_seconds": wall, "timings": res["timings"], "recorded_costs": res["recorded_costs"],
                     "retrained": res["retrained"], "roc_auc": res["roc_auc"], "margin": sep.get("margin"),
                     "min_surrogate": sep.get("min_surrogate"), "max_reference": sep.get("max_reference"),
                     "tpr_at_fpr_0": sep.get("tpr_at_fpr_0"), "raw_cae_acc": res["raw_cae_acc"],
                     "pgd": res["baselines"].get("pgd"), "decisions": res["decisions"],
                     "threshold": res["threshold"], "threshold_fit": res.get("threshold_fit"),
                     "with_calibration_references": with_calibration(res),
                     "tolerance_rule": tolerance_verdicts(res),
                     "n_surrogates": sep["n_surrogates"], "n_references": sep["n_references"],
                     "fingerprint_size": res["fingerprint"]["size"], "eps": res["fingerprint"]["params"]["eps"],
                     "source_test_acc": res["source"]["test_acc"], "per_arch": res["per_arch"],
                     "models": [{k: m[k] for k in ("name", "role", "arch", "labels", "test_acc", "cae_acc", "score")}
                                for m in res["models"]],
                     **gap_and_d_prime(res["models"]),
                     "versions": versions() if args.collect is None else res["versions"],
                     "from_nothing_seconds": from_nothing(res),
                     # the wall time of this seed's last run from nothing, kept when a rerun reuses its models
                     "from_nothing_wall_seconds": (wall if res["retrained"]["count"] == res["retrained"]["of"]
                                                   else full_walls.get(seed)),
                     "goal_met": bool(separated(res["roc_auc"], sep.get("margin"))
                                      and res["fingerprint"]["size"] == 100 and res["fingerprint"]["params"]["eps"] <= 0.1
                                      and from_nothing(res) < 900)})
        full_walls.update({r["seed"]: r["from_nothing_wall_seconds"] for r in runs if r["from_nothing_wall_seconds"] is not None})
        command = "python benchmarks/quickstart_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:])
        seeds_now = {r["seed"] for r in runs}
        payload = {"command": command, "preset": config.to_dict(), "device": args.device, "bf16": args.bf16,
                   "runs": sorted([r for r in kept if r["seed"] not in seeds_now] + runs, key=lambda r: r["seed"])
                   if args.merge else runs,
                   "from_nothing_walls": {str(k): v for k, v in sorted(full_walls.items())},
                   "versions": versions() if args.collect is None else res["versions"], "note": args.note,
                   "about_times": "wall_seconds include reusing models left by an earlier run of the same seed; "
                                  "timings.total of a run with retrained.count == retrained.of is a full run from nothing; "
                                  "recorded_costs: what each phase cost when it was made (from nothing)"}
        payload["summary"] = summary(payload["runs"])
        if args.merge:  # each seed's command, since a merged file's runs come from several
            for r in runs:
                r["command"] = command
        atomic_write_text(res_path, json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / f"{stem}.md")
    return 0


def run_folder(preset: str, seed: int, suffix: str = "") -> Path:
    """Where this benchmark runs ``preset`` on ``seed`` (``suffix``: a device, bf16 or CEM override's own folder)."""
    return ROOT / "benchmarks" / "runs" / f"{'quickstart' if preset == 'default' else preset}-seed{seed}{suffix}"


def earlier_runs(earlier: dict | None, path: Path, config, seeds: list[int]) -> list[dict]:
    """The runs an earlier command of this series recorded in ``path`` (read: ``earlier``; ``--merge``), less those
    of ``seeds``, which this one runs again. A file of other settings is refused: a series holds one preset's runs."""
    if earlier is None:
        return []
    if not same_config(earlier["preset"], config):
        raise SystemExit(f"{path}: recorded with other settings than this command's; --merge keeps one preset's runs "
                         "(give another --tag)")
    return [r for r in earlier["runs"] if r["seed"] not in seeds]


def gap_and_d_prime(models: list[dict]) -> dict:
    """The testing models' score gap (mean surrogate − mean reference) and d′ (None with fewer than two a role)."""
    pos, neg = ([m["score"] for m in models if m["role"] == role] for role in ("surrogate", "reference"))
    if min(len(pos), len(neg)) < 2:
        return {"gap": None, "d_prime": None}
    return dict(zip(("gap", "d_prime"), d_prime(pos, neg)))


def summary(runs: list[dict]) -> dict:
    """A series' totals: the goal met, mean d′, and the verdicts' counts (the run's own rule; the tolerance bound's
    where a threshold was fitted, and the prediction bound's where every run's verdict is the tolerance bound)."""
    tol = [r["tolerance_rule"] for r in runs if r.get("tolerance_rule")]
    pred = [prediction_verdicts(r) for r in runs] if runs and all(is_tolerance(r.get("threshold_fit")) for r in runs) else None
    dp = [r["d_prime"] for r in runs if r.get("d_prime") is not None]
    return {"draws": len(runs), "goal_met": sum(r["goal_met"] for r in runs),
            "mean_d_prime": statistics.fmean(dp) if dp else None,
            "surrogates_called_stolen": sum(r["decisions"]["true_positives"] for r in runs),
            "references_called_stolen": sum(r["decisions"]["false_positives"] for r in runs),
            "surrogates": sum(r["n_surrogates"] for r in runs), "references": sum(r["n_references"] for r in runs),
            "tolerance": None if len(tol) != len(runs) else {
                "surrogates_called_stolen": sum(t["surrogates"] for t in tol),
                "references_called_stolen": sum(t["references"] for t in tol)},
            "prediction": None if pred is None else {
                "surrogates_called_stolen": sum(t["surrogates"] for t in pred),
                "references_called_stolen": sum(t["references"] for t in pred)}}


def earlier_full_walls(earlier: dict | None) -> dict[int, float]:
    """Per seed, the wall time of the last run from nothing that an earlier result file (read: ``earlier``) recorded."""
    if earlier is None:
        return {}
    # every seed's wall time ever recorded, kept when a run of other seeds rewrites the file
    walls = {int(k): v for k, v in earlier.get("from_nothing_walls", {}).items()}
    for r in earlier.get("runs", []):
        if r.get("from_nothing_wall_seconds") is not None:
            walls[r["seed"]] = r["from_nothing_wall_seconds"]
        elif r["retrained"]["count"] == r["retrained"]["of"]:
            walls[r["seed"]] = r["wall_seconds"]
    return walls


def same_config(recorded: dict, config) -> bool:
    """Whether a run's recorded config is ``config``: fields added to the config (or to one of its parts, such as
    the CEM's parameters) after the run was made count as the same where ``config`` keeps them at their defaults
    (what the run did without them)."""
    return _same(recorded, config.to_dict(), type(config)(preset=config.preset).to_dict())


def _same(recorded: dict, expected: dict, defaults: dict) -> bool:
    if not recorded.keys() <= expected.keys():
        return False
    for k, v in expected.items():
        if k not in recorded:
            if k not in defaults or defaults[k] != v:
                return False
        elif isinstance(v, dict) and isinstance(recorded[k], dict) and isinstance(defaults.get(k), dict):
            if not _same(recorded[k], v, defaults[k]):
                return False
        elif recorded[k] != v:
            return False
    return True


def tolerance_verdicts(res: dict, confidence: float = 0.9) -> dict | None:
    """The verdicts had the threshold been the tolerance bound (``--threshold-rule tolerance``) of the same
    calibration references' scores: the score rule only, on the run's testing models."""
    fit = res.get("threshold_fit")
    if not fit:
        return None
    thr = tolerance_threshold(fit["scores"], fit["alpha"], confidence)["threshold"]
    return {"confidence": confidence, "alpha": fit["alpha"], **verdicts_at(res["models"], thr)}


def is_tolerance(fit: dict | None) -> bool:
    """Whether a run's verdict threshold (``threshold_fit``) is the tolerance bound (the default since stop 41)."""
    return bool(fit) and "tolerance" in fit.get("rule", "")


def prediction_verdicts(run: dict) -> dict | None:
    """The verdicts had the threshold been the prediction bound (``--threshold-rule prediction``) of a run's
    calibration scores: the score rule only, on the run's testing models."""
    fit = run.get("threshold_fit")
    if not fit:
        return None
    thr = prediction_threshold(fit["scores"], fit["alpha"])["threshold"]
    return {"alpha": fit["alpha"], **verdicts_at(run["models"], thr)}


def verdicts_at(models: list[dict], threshold: float) -> dict:
    """The score rule's verdicts at ``threshold``: the threshold and how many surrogates and references reach it."""
    return {"threshold": threshold, "surrogates": called_stolen(models, threshold, "surrogate"),
            "references": called_stolen(models, threshold, "reference")}


def called_stolen(models: list[dict], threshold: float, role: str) -> int:
    """How many of ``models`` (rows with ``role`` and ``score``) of that role score at or above ``threshold``."""
    return sum(m["score"] >= threshold for m in models if m["role"] == role)


def with_calibration(res: dict) -> dict | None:
    """AUC and margin of the testing surrogates against the testing *and* calibration references (none seen by
    generation; the calibration ones also set the threshold, which the AUC and margin do not use)."""
    cal = [m["score"] for m in res["training_models"] if m.get("group") == "calibration"]
    if not cal:
        return None
    pos = [m["score"] for m in res["models"] if m["role"] == "surrogate"]
    neg = [m["score"] for m in res["models"] if m["role"] == "reference"] + cal
    return {"n_references": len(neg), "roc_auc": roc_auc(pos, neg), "margin": separation_margin(pos, neg)}


def from_nothing(res: dict) -> float:
    """The run's cost had no model or fingerprint been reused: the total of the costs the library
    recorded when each was made (``recorded_costs``)."""
    return res["recorded_costs"]["total"]


def other_rule_table(pairs: list[tuple[dict, dict]], heading: str) -> list[str]:
    """Per run, its verdicts (the score at its own threshold) → those at another rule's threshold (``pairs`` of the
    run and `verdicts_at`'s dict), and their totals, under ``heading``."""
    by_score = lambda r, role: called_stolen(r["models"], r["threshold"], role)  # noqa: E731
    lines = ["", heading, "", "| seed | threshold | surrogates called stolen | references called stolen |",
             "| --- | --- | --- | --- |"]
    for r, t in pairs:
        lines.append(f"| {r['seed']} | {r['threshold']:.3f} → {t['threshold']:.3f} | {by_score(r, 'surrogate')} → "
                     f"{t['surrogates']} of {r['n_surrogates']} | {by_score(r, 'reference')} → {t['references']} of "
                     f"{r['n_references']} |")
    lines.append(f"| all | | {sum(by_score(r, 'surrogate') for r, _ in pairs)} → {sum(t['surrogates'] for _, t in pairs)} | "
                 f"{sum(by_score(r, 'reference') for r, _ in pairs)} → {sum(t['references'] for _, t in pairs)} |")
    return lines


def write_md(payload: dict, path: Path) -> None:
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    pre = payload["preset"]
    archs = sorted({g["arch"] for g in pre["testing"]})
    lines = [f"# Quickstart `{pre['preset']}` preset across seeds", "", f"Command: `{payload['command']}`", "",
             "Score = CAEAcc on the CEM fingerprint − CAEAcc on the PGD control set (labels only). "
             f"Held-out surrogates ({', '.join(archs)}; soft and hard labels) and held-out references. "
             "'goal met': issue 3's Fashion-MNIST goal (AUC ≥ 0.95, margin > 0, 100 examples, ε ≤ 0.1, "
             "under 15 minutes from nothing).", "",
             "| seed | models trained | total s | from nothing s (wall) | source acc | AUC (score) | margin | d′ | TPR@FPR0 | AUC raw CAEAcc | margin raw | AUC PGD | goal met | threshold | stolen: surr / refs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["runs"]:
        full = r.get("from_nothing_wall_seconds")
        lines.append(f"| {r['seed']} | {r['retrained']['count']}/{r['retrained']['of']} | {r['timings']['total']:.0f} | "
                     f"{r['from_nothing_seconds']:.0f}{f' ({full:.0f})' if full is not None else ''} | "
                     f"{r['source_test_acc']:.4f} | {f(r['roc_auc'])} | {f(r['margin'])} | "
                     f"{'–' if r.get('d_prime') is None else format(r['d_prime'], '.2f')} | {f(r['tpr_at_fpr_0'])} | "
                     f"{f(r['raw_cae_acc'].get('roc_auc'))} | {f(r['raw_cae_acc'].get('margin'))} | "
                     f"{f((r['pgd'] or {}).get('roc_auc'))} | {'yes' if r['goal_met'] else 'no'} | "
                     f"{f(r.get('threshold'))}{' (fitted)' if r.get('threshold_fit') else ''} | "
                     f"{r['decisions']['true_positives']}/{r['n_surrogates']} / {r['decisions']['false_positives']}/{r['n_references']} |")
    t = payload.get("summary")
    if t:
        md = t["mean_d_prime"]
        lines += ["", f"Over the {t['draws']} draws: goal met on {t['goal_met']}, mean d′ "
                  f"{'–' if md is None else f'{md:.2f}'}; the verdict called {t['surrogates_called_stolen']} of "
                  f"{t['surrogates']} surrogates and {t['references_called_stolen']} of {t['references']} references stolen"
                  + (f" (the score at the prediction bound: {t['prediction']['surrogates_called_stolen']} and "
                     f"{t['prediction']['references_called_stolen']})" if t.get("prediction") else
                     f" (tolerance bound: {t['tolerance']['surrogates_called_stolen']} and "
                     f"{t['tolerance']['references_called_stolen']})" if t.get("tolerance") else "") + "."]
    if payload.get("note"):
        lines += ["", payload["note"]]
    phases = [k for k in payload["runs"][0].get("recorded_costs", {}) if k != "total"]
    if phases:
        lines += ["", "Recorded cost per phase, seconds (what each cost when it was made, i.e. from nothing):", "",
                  "| seed | " + " | ".join(phases) + " | total |", "| --- |" + " --- |" * (len(phases) + 1)]
        for r in payload["runs"]:
            c = r["recorded_costs"]
            lines.append(f"| {r['seed']} | " + " | ".join(f"{c.get(k, 0):.1f}" for k in phases) + f" | {c['total']:.0f} |")
    fits = [(r["seed"], r["threshold_fit"]) for r in payload["runs"] if r.get("threshold_fit")]
    if fits:
        fit0 = fits[0][1]
        how = (f"the upper {1 - fit0['alpha']:.0%} tolerance bound at {fit0['confidence']:.0%} confidence"
               if is_tolerance(fit0) else f"the upper {1 - fit0['alpha']:.0%} prediction bound")
        lines += ["", f"Threshold: {how} of the scores of {fit0['n_references']} D1 calibration references that "
                  "generation never saw (mean + factor · sd). Their scores:", ""]
        lines += [f"- seed {seed}: " + ", ".join(f"{v:+.3f}" for v in fit["scores"]) + f" (mean {fit['mean']:+.3f}, "
                  f"sd {fit['sd']:.3f})" for seed, fit in fits]
    pred = [(r, prediction_verdicts(r)) for r in payload["runs"] if is_tolerance(r.get("threshold_fit"))]
    tol = [(r, r["tolerance_rule"]) for r in payload["runs"]
           if r.get("tolerance_rule") and not is_tolerance(r.get("threshold_fit"))]
    if pred:  # the verdict is the tolerance bound already: show the prediction bound beside it
        lines += other_rule_table(pred, "The other rule (`--threshold-rule prediction`): the upper 95 % prediction bound "
                                  "of the same calibration scores. Verdicts of the score alone, tolerance bound (the "
                                  "verdict) → prediction bound:")
    if tol:
        fit = tol[0][0]["threshold_fit"]
        lines += other_rule_table(tol, f"The stricter rule (`--threshold-rule tolerance`): the upper {1 - fit['alpha']:.0%} "
                                  f"tolerance bound at {tol[0][1]['confidence']:.0%} confidence of the same calibration "
                                  "scores, so that a study's own rate of false accusations is at most alpha with that "
                                  "confidence (the prediction bound keeps it on average). Verdicts of the score alone, "
                                  "prediction bound → tolerance bound:")
    more = [(r["seed"], r["with_calibration_references"]) for r in payload["runs"] if r.get("with_calibration_references")]
    if more:
        lines += ["", "The testing surrogates against the testing and the calibration references together (all "
                  "independent models generation never saw): " + "; ".join(
                      f"seed {seed}: AUC {w['roc_auc']:.3f}, margin {w['margin']:+.3f} over {w['n_references']} references"
                      for seed, w in more) + "."]
    lines += ["", "Per model (score / raw CAEAcc):", ""]
    for r in payload["runs"]:
        lines.append(f"- seed {r['seed']}: " + "; ".join(f"{m['name'].replace('test-', '')} {m['score']:+.2f}/{m['cae_acc']:.2f}"
                                                        for m in r["models"]))
    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
