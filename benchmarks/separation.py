"""Separation study: which settings make held-out surrogates and references score apart?

One command, seeded, resumable (models in a zoo, fingerprints cached on disk):

    python benchmarks/separation.py --dataset fashion-mnist --seeds 0 1 2
    python benchmarks/separation.py --dataset cifar10 --seeds 0 --data-dir ../shared/data/cifar-10-batches-py

For each seed it trains (or reloads) the preset's source, its training models on D1
and its testing models on D2 (never seen by generation); then, for every setting of
the sweep, it generates a fingerprint, queries every testing model for top-1 labels, and records
ROC AUC (surrogates positive), the margin min(surrogate) - max(reference), TPR at FPR 0, per
architecture, mean held-out conferrability, and the same for calibrated scores that use only the
suspect's labels (see `calibrated_scores`). Seeds other than the first run only the settings named
in --confirm (the candidates for the defaults). Writes
benchmarks/results/separation-<dataset>.json, docs/results/separation-<dataset>.md and a plot of
held-out conferrability per ε (the paper's Figure 3a); --report NAME writes NAME.json, NAME.md and NAME-eps.png
instead (a follow-up on more seeds, e.g. separation-fashion-mnist-eps0.025, summary §27).

Each dataset's sweep is its preset's CEM with one lever changed at a time, every setting also scored as the preset
scores, CAEAcc minus CAEAcc on the study's control set (``ctl``):
- Fashion-MNIST runs on the `default` preset's study (10 + 16 training models, 8 + 8 testing models; `fmnist_settings`).
  Its models and fingerprints are reused from `quickstart_seeds.py`'s benchmarks/runs/quickstart-seed<N>/.
- CIFAR-10 runs on the `cifar10-cpu-hour` preset's study, the largest this CPU allows in about an hour (source `cnn32`,
  7 + 10 training models, 12 cheaper ones more for one setting, 8 + 8 testing models; `cifar_settings`). Its models,
  and the fingerprints `quickstart_seeds.py` and `cifar_eps.py` already made on them, are reused from
  benchmarks/runs/cifar10-cpu-hour*-seed<N>/.
A zoo is hard-linked, a fingerprint loaded and saved again under the sweep's name; a reused fingerprint must match
what its setting would make, else it is made again.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from conferprint._io import atomic_write_text
from conferprint.allocator import tune_cpu_allocator
from conferprint.experiments.quickstart import (
    CIFAR10_CPU_HOUR, CONTROL_NAME, DEFAULT, QuickstartConfig, make_fingerprint, per_arch, prepare_study, score_models,
    summarize, versions,
)
from conferprint.experiments.zoo_builder import Group
from conferprint.fingerprint.scores import confer, labels_of
from conferprint.verify import model_oracle, separation_stats
from conferprint.verify.calibration import FamilyNull, control_difference, fit_threshold

from _common import d_prime, separated  # run as a script: its folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("separation")

# CIFAR-10's "more, cheaper models, above all references" lever: 12 more training models at about half the preset's
# epochs (10 references, 6 of them of the source's architecture, and 2 surrogates), in CEM's ensemble only for the
# setting `cem-pool-more-refs`.
CIFAR_EXTRA = (
    Group("cnn32", "reference", "ground_truth", 6, 4, tag="extra"), Group("cnn_small32", "reference", "ground_truth", 2, 5, tag="extra"),
    Group("lenet_bn32", "reference", "ground_truth", 2, 5, tag="extra"), Group("cnn32", "surrogate", "soft", 2, 4, tag="extra"),
)


# The default as the fifteen Fashion-MNIST draws of §26–§31 were made (stops 26–34): the benchmarks built on those draws
# (pool_control, testing_epochs, control_recipe, cem_budget) score them with it, so that their caches stay valid after
# §30 (control at 50 PGD steps) and §31 (1,536 candidates in CEM's correct pool) changed the default.
DRAWS = replace(DEFAULT, cem=replace(DEFAULT.cem, correct_candidates=None), control=replace(DEFAULT.control, steps=100))


def study_config(dataset: str, smoke: bool = False) -> QuickstartConfig:
    if smoke:  # every code path on the tiny preset, in about a minute; its numbers mean nothing
        from conferprint.experiments.quickstart import TINY

        return TINY
    if dataset == "fashion-mnist":  # the default preset's study itself: its 10 + 16 training models are the "pool"
        return DEFAULT
    if dataset == "cifar10":  # the preset's study; its whole training ensemble is the "pool", CIFAR_EXTRA joins "pool+extra"
        return replace(CIFAR10_CPU_HOUR, training=CIFAR10_CPU_HOUR.training + CIFAR_EXTRA)
    raise SystemExit(f"dataset {dataset!r}: fashion-mnist or cifar10")


def ensemble(study, name: str) -> tuple[list, list]:
    """Pick training surrogates and references for an ensemble setting by name. The models of CIFAR-10's
    extra groups (tag ``extra``) join only the ensembles whose name ends in ``+extra``."""
    surr, refs = study.training_role("surrogate"), study.training_role("reference")
    if name.endswith("+extra"):
        name = name.removesuffix("+extra")
    else:
        surr, refs = [m for m in surr if "-extra" not in m.name], [m for m in refs if "-extra" not in m.name]
    if name == "pool":  # the study's whole training ensemble
        return surr, refs
    if name == "base":  # without the groups tagged "pool" (Fashion-MNIST: 2 + 2 per family, 6 + 6)
        return [m for m in surr if "-pool" not in m.name], [m for m in refs if "-pool" not in m.name]
    if name == "source-arch":  # only the source's architecture
        a = study.source.arch
        return [m for m in surr if m.arch == a], [m for m in refs if m.arch == a]
    raise ValueError(name)


def held_out_confer(fp, testing) -> float:
    """Mean Confer of the fingerprint over the held-out testing models (the paper's Figure 3a measure)."""
    s = [m.model for m in testing if m.meta["role"] == "surrogate"]
    r = [m.model for m in testing if m.meta["role"] == "reference"]
    return float(confer(labels_of(s, fp.inputs), labels_of(r, fp.inputs), fp.keys).mean())


def calibrated_scores(rows: list[dict], key: str, control: str) -> dict[str, float]:
    """Label-only scores that control for architecture affinity with a second query set.

    ``diff``: CAEAcc(fingerprint) - CAEAcc(control), where the control is a plain PGD fingerprint of
    the source (examples that transfer to references as well); no parameter is fitted.
    """
    return {r["name"]: r["scores"][key] - r["scores"][control] for r in rows}


def by_role(rows: list[dict], score: dict[str, float]) -> tuple[list[float], list[float]]:
    """``score`` (model name -> value) of the surrogates, then of the references, among ``rows``."""
    return ([score[r["name"]] for r in rows if r["role"] == "surrogate"],
            [score[r["name"]] for r in rows if r["role"] == "reference"])


def calibration_refs(study, ens: str) -> list:
    """Training references that the ensemble `ens` did not use: the per-family null is fitted on them."""
    if ens == "none":
        return []
    used = {m.name for m in ensemble(study, ens)[1]}
    return [m for m in study.training_role("reference") if m.name not in used and "-extra" not in m.name]


def family_calibrated(fp, probe_inputs, testing, cal_refs) -> dict:
    """Per-family-null scores of the testing models (conferprint.verify.calibration.FamilyNull)."""
    null = FamilyNull(fp, probe_inputs, {m.name: (m.arch, model_oracle(m.model)) for m in cal_refs})
    per_model = {}
    for m in testing:
        res = null.score(model_oracle(m.model))
        per_model[m.name] = {"family": res["family"], "score": res["score"]}
    return {"nulls": null.nulls, "calibration_models": sorted(null.family_of), "per_model": per_model}


def _pgd_at(pgd, eps: float):
    """The PGD baseline at another ε, its step a tenth of it (as the presets' PGD)."""
    return replace(pgd, eps=eps, step_size=eps / 10)


def _one_lever(cfg: QuickstartConfig, ensembles, knobs, pools, eps: tuple[float, float]) -> list[tuple[str, str, Any]]:
    """The preset's CEM (`cem-pool`, its whole training ensemble) with one lever changed at a time: the levers both
    sweeps share, the dataset's own ``ensembles`` ((name, ensemble)), ``knobs`` and ``pools`` ((name, fields
    changed)), and ε one step below and above the preset's, with the PGD baseline at the same ε."""
    q, pgd = cfg.cem, cfg.pgd
    lo, hi = eps
    return [
        ("pgd", "none", pgd),
        ("cem-pool", "pool", q),
        ("cem-pool-paper-weights-source-target", "pool", replace(q, beta=1, gamma=1, target="source")),
        ("cem-pool-source-target", "pool", replace(q, target="source")),
        ("cem-pool-paper-weights", "pool", replace(q, beta=1, gamma=1)),
        ("cem-source-arch", "source-arch", q),
        *((name, ens, q) for name, ens in ensembles),
        ("cem-pool-dropout0.3", "pool", replace(q, dropout=0.3)),
        *((name, "pool", replace(q, **changes)) for name, changes in knobs),
        ("cem-pool-lr0.02", "pool", replace(q, lr=0.02)),
        ("cem-pool-balanced", "pool", replace(q, balance=True)),
        *((name, "pool", replace(q, **changes)) for name, changes in pools),
        (f"cem-pool-eps{lo}", "pool", replace(q, eps=lo)),
        (f"cem-pool-eps{hi}", "pool", replace(q, eps=hi)),
        (f"pgd-eps{lo}", "none", _pgd_at(pgd, lo)),
        (f"pgd-eps{hi}", "none", _pgd_at(pgd, hi)),
    ]


# ε one step below and above each preset's, for the sweep and the Figure 3a plot
SWEEP_EPS = {"fashion-mnist": (0.025, 0.1), "cifar10": (0.005, 0.02)}


def cifar_settings() -> list[tuple[str, str, Any]]:
    """CIFAR-10's sweep: the `cifar10-cpu-hour` preset's CEM (`cem-pool`: the papers' pool, ε 0.01, 50 steps, the
    conferrable target, weights (1, 0.1, 0.1), dropout 0.5, τ 0.5) with one lever changed at a time; the PGD
    baseline at the ε of the Figure 3a plot."""
    return _one_lever(CIFAR10_CPU_HOUR, ensembles=[("cem-pool-more-refs", "pool+extra")],
                      knobs=[("cem-pool-tau1", {"tau": 1.0}), ("cem-pool-steps25", {"steps": 25})],
                      pools=[("cem-pool-mixed", {"candidates": "mixed"})], eps=SWEEP_EPS["cifar10"])


def fmnist_settings() -> list[tuple[str, str, Any]]:
    """Fashion-MNIST's sweep: the default preset's CEM (`cem-pool`: 25 of the 100 from the source's correct answers
    and 75 from its mistakes on D1, ε 0.05, 25 steps, the conferrable target, weights (1, 0.1, 0.1), dropout 0.5,
    τ 0.5 as a floor under the best-by-Confer ranking), against the study's 10 + 16 training models, with one lever
    changed at a time; the PGD baseline at the ε of the Figure 3a plot. (The first sweep, which chose the first
    defaults, is kept in docs/results/separation-fashion-mnist-first-sweep.md.)"""
    return _one_lever(DEFAULT, ensembles=[("cem-base", "base")],  # 6 + 6: without the 4 extra surrogates and 10 extra references
                      knobs=[("cem-pool-tau0.9", {"tau": 0.9}), ("cem-pool-steps50", {"steps": 50})],
                      pools=[("cem-pool-correct", {"candidates": "correct"}),  # the papers' pool alone
                             ("cem-pool-errors", {"candidates": "errors"}),  # the source's mistakes alone
                             ("cem-pool-size50", {"size": 50})],
                      eps=SWEEP_EPS["fashion-mnist"])


def _eps_series(label: str, cfg: QuickstartConfig, dataset: str) -> dict[str, list[tuple[str, float]]]:
    lo, hi = SWEEP_EPS[dataset]
    return {label: [(f"cem-pool-eps{lo}", lo), ("cem-pool", cfg.cem.eps), (f"cem-pool-eps{hi}", hi)],
            "PGD": [(f"pgd-eps{lo}", lo), ("pgd", cfg.pgd.eps), (f"pgd-eps{hi}", hi)]}


# The Figure 3a plot's points per dataset: (setting, ε) for CEM and for PGD
EPS_SERIES = {"fashion-mnist": _eps_series("CEM (the default)", DEFAULT, "fashion-mnist"),
              "cifar10": _eps_series("CEM (pool)", CIFAR10_CPU_HOUR, "cifar10")}
DEFAULT_CONFIRM = {"fashion-mnist": ["cem-pool"], "cifar10": ["cem-pool"]}


def settings(first_seed: bool, confirm: list[str], dataset: str = "fashion-mnist") -> list[tuple[str, str, Any]]:
    """(name, ensemble, method): every setting on the first seed, the baseline and the ``confirm`` ones after it."""
    all_settings = cifar_settings() if dataset == "cifar10" else fmnist_settings()
    if first_seed:
        return all_settings
    return [s for s in all_settings if s[0] in confirm or s[0] == "pgd"]


def reuse_runs(dataset: str, seed: int, runs: Path) -> dict[str, Path]:
    """What other benchmarks made on seed ``seed``'s study, by this sweep's names: the zoo and fingerprint stems.
    Fashion-MNIST: `quickstart_seeds.py`'s run of the default preset. CIFAR-10: the `cifar10-cpu-hour` runs of
    `quickstart_seeds.py` (its preset, and ``--cem-candidates mixed``) and of `cifar_eps.py`."""
    base = runs / (f"quickstart-seed{seed}" if dataset == "fashion-mnist" else f"cifar10-cpu-hour-seed{seed}")
    found = {"zoo": base / "zoo", "cem-pool": base / "fingerprint", "pgd": base / "fingerprint-pgd", "control": base / CONTROL_NAME}
    if dataset == "cifar10":
        found["cem-pool-mixed"] = runs / f"cifar10-cpu-hour-seed{seed}-mixed" / "fingerprint"
        for eps in ("0.005", "0.02"):
            found[f"cem-pool-eps{eps}"] = runs / f"cifar10-cpu-hour-eps{eps}-seed{seed}" / "fingerprint"
            found[f"pgd-eps{eps}"] = runs / f"cifar10-cpu-hour-eps{eps}-seed{seed}" / "fingerprint-pgd"
    return found


def link_reused(found: dict[str, Path], out: Path, seed: int) -> list[str]:
    """Hard-link the zoo and copy the fingerprints of ``found`` into this sweep's folder where it has none yet (a
    copy is reused only if its manifest matches the setting: `make_fingerprint` checks; one that does not load is
    left behind). Returns what was brought in."""
    from conferprint.fingerprint import FingerprintError, load_fingerprint, save_fingerprint

    brought = []
    zoo, dst = found.get("zoo"), out / f"zoo-seed{seed}"
    if zoo is not None and zoo.is_dir() and not dst.exists():
        shutil.copytree(zoo, dst, copy_function=os.link)
        brought.append("zoo")
    for name, stem in found.items():
        target = out / f"fp-seed{seed}-{name}"
        if name == "zoo" or any(target.with_name(target.name + ext).exists() for ext in (".safetensors", ".json")):
            continue
        try:
            fp = load_fingerprint(stem)
        except FingerprintError:  # not made (yet), or damaged: this sweep makes its own
            continue
        save_fingerprint(fp, target)
        brought.append(name)
    return brought


def link_draw(seed: int, out: Path) -> None:
    """Bring this sweep's Fashion-MNIST draw ``seed`` (its zoo, the default's fingerprint and its control set) into
    another benchmark's work folder ``out`` (`link_reused`), for the benchmarks that build on the draws."""
    sep = ROOT / "benchmarks" / "runs" / "separation-fashion-mnist"
    found = {"zoo": sep / f"zoo-seed{seed}", "cem-pool": sep / f"fp-seed{seed}-cem-pool", "control": sep / f"fp-seed{seed}-control"}
    if not (found["zoo"] / "source.json").exists():
        raise SystemExit(f"seed {seed}: no draw of separation.py in {sep} (run `python benchmarks/separation.py --seeds {seed}` first)")
    link_reused(found, out, seed)


def run_seed(dataset: str, seed: int, out: Path, data_dir, first: bool, confirm: list[str], progress: bool,
             smoke: bool = False) -> dict:
    cfg = study_config(dataset, smoke)
    if not smoke:
        brought = link_reused(reuse_runs(dataset, seed, ROOT / "benchmarks" / "runs"), out, seed)
        if brought:
            log.info("seed %d: reused from other benchmarks' runs: %s", seed, ", ".join(brought))
    t0 = time.perf_counter()
    study = prepare_study(cfg, out / f"zoo-seed{seed}", seed=seed, data_dir=data_dir, progress=progress)
    log.info("seed %d: models ready in %.0f s", seed, time.perf_counter() - t0)
    fps, meta = {}, {}
    for name, ens, method in settings(first, confirm, dataset):
        if smoke:
            method = replace(method, steps=min(method.steps, 20), size=20, max_candidates=128, batch_size=64)
        surr, refs = ([], []) if ens == "none" else ensemble(study, ens)
        t = time.perf_counter()
        try:
            fp, new = make_fingerprint(method, f"fp-seed{seed}-{name}", out, study.source, surr, refs, study.x1, study.y1,
                                        seed, study.data.num_classes, progress)
        except RuntimeError as e:  # GenerationError: nothing kept; recorded, not fatal for the sweep
            meta[name] = {"error": str(e)}
            log.info("seed %d %-36s FAILED: %s", seed, name, e)
            continue
        fps[name] = fp
        meta[name] = {"ensemble": ens, "ensemble_surrogates": len(surr), "ensemble_references": len(refs), "method": fp.manifest["method"],
                      "params": asdict(method), "size": len(fp), "stats": fp.manifest.get("stats"),
                      "seconds_this_run": time.perf_counter() - t, "generated_now": new,
                      "held_out_confer": held_out_confer(fp, study.testing)}
        log.info("seed %d %-36s size %3d  held-out confer %.3f", seed, name, len(fp), meta[name]["held_out_confer"])
    mixed = "cem-pool" in fps and fps["cem-pool"].manifest.get("params", {}).get("candidates") == "mixed"
    if "cem-pool" in fps and "cem-pool-size50" not in meta and not mixed:
        # fingerprint size, the papers' pool (CIFAR-10): its first 50 (a balanced subset of a round-robin order, else the
        # best by Confer). A mixed fingerprint's first 50 are not what CEM(size=50) keeps: Fashion-MNIST runs that.
        from conferprint.fingerprint import Fingerprint

        full = fps["cem-pool"]
        order = "balanced" if full.manifest.get("params", {}).get("balance", True) else "Confer"
        fps["cem-pool-size50"] = Fingerprint(full.inputs[:50], full.keys[:50], full.originals[:50], full.original_labels[:50],
                                             full.train_confer[:50], dict(full.manifest))
        meta["cem-pool-size50"] = {**meta["cem-pool"], "size": 50, "derived_from": f"cem-pool (first 50 of its {order} order)",
                                   "held_out_confer": held_out_confer(fps["cem-pool-size50"], study.testing)}
    # the quickstart's score: CAEAcc minus CAEAcc on the study's control set (the PGD baseline where it has none)
    control = {}
    if cfg.control is not None:
        control["control"], _ = make_fingerprint(cfg.control, f"fp-seed{seed}-control", out, study.source, [], [],
                                                  study.x1, study.y1, seed + 100, study.data.num_classes, progress)
    rows = score_models(study.testing, {**fps, **control}, "testing")
    # the preset's calibration references (D1, never in generation, never testing): the verdict's threshold per setting
    cal_rows = score_models(study.calibration, {**fps, **control}, "calibration") if len(study.calibration) >= 3 else []
    ctl_key = "control" if control else "pgd"
    results = {}
    for name in fps:
        res = {**meta[name], **summarize(rows, name), "per_arch": per_arch(rows, name)}
        if name != "pgd" and "pgd" in fps:
            res["calibrated_diff_pgd"] = separation_stats(*by_role(rows, calibrated_scores(rows, name, "pgd")))
        if name != ctl_key and (control or ctl_key in fps):  # as the quickstart computes it (rounded: ties tie)
            def ctl_scores(rs: list[dict]) -> dict[str, float]:
                return {r["name"]: control_difference(r["scores"][name], r["scores"][ctl_key]) for r in rs}

            cal = ctl_scores(rows)
            scored = [{**r, "scores": {"ctl": cal[r["name"]]}} for r in rows]
            pos, neg = by_role(rows, cal)
            gap, dp = d_prime(pos, neg)
            res["calibrated_diff_control"] = {**separation_stats(pos, neg), "gap": gap, "d_prime": dp,
                                              "control": ctl_key, "per_arch": per_arch(scored, "ctl")}
            if cal_rows:  # the threshold fitted as the preset fits it, and whom the score alone calls stolen
                fit = fit_threshold(list(ctl_scores(cal_rows).values()), cfg.threshold_alpha, cfg.threshold_rule, cfg.threshold_confidence)
                res["calibrated_diff_control"].update(
                    threshold=fit["threshold"], stolen_surrogates=sum(v >= fit["threshold"] for v in pos),
                    stolen_references=sum(v >= fit["threshold"] for v in neg))
        cal_refs = calibration_refs(study, meta[name]["ensemble"])
        if cal_refs and "pgd" in fps:
            probe = torch.cat([fps[name].inputs, fps["pgd"].inputs])
            fc = family_calibrated(fps[name], probe, study.testing, cal_refs)
            pos = [fc["per_model"][m.name]["score"] for m in study.testing if m.meta["role"] == "surrogate"]
            neg = [fc["per_model"][m.name]["score"] for m in study.testing if m.meta["role"] == "reference"]
            res["calibrated_family_null"] = {**separation_stats(pos, neg), **fc}
        results[name] = res
    for name in meta:
        results.setdefault(name, meta[name])
    return {"seed": seed, "models": [{k: r[k] for k in ("name", "role", "arch", "labels", "test_acc", "scores")} for r in rows],
            "training_models": [{"name": m.name, "arch": m.arch, "role": m.meta["role"], "test_acc": m.meta["test_acc"]}
                                for m in study.training],
            "source": {"arch": study.source.arch, "test_acc": study.source.meta["test_acc"]},
            "settings": results, "timings": study.timings}


def write_markdown(dataset: str, payload: dict, path: Path) -> None:
    def f(v):  # a score, or "–" where there is none
        return "–" if v is None else f"{v:.3f}"

    lines = [f"# Separation study — {dataset}", "",
             f"Command: `{payload['command']}`", "",
             "Scores are CAEAcc of held-out testing models (8 surrogates: soft and hard labels, 4 architectures; "
             "8 references: ground truth, the source's architecture included). AUC: surrogates positive. "
             "margin = lowest surrogate − highest reference (> 0: one threshold separates all). "
             "`diff` = CAEAcc(fingerprint) − CAEAcc(plain PGD fingerprint), a label-only calibrated score.", ""]
    for run in payload["runs"]:
        lines += [f"## Seed {run['seed']} (source {run['source']['arch']}, test acc {run['source']['test_acc']:.4f})", "",
                  "| setting | ensemble (S+R) | size | held-out Confer | AUC | margin | TPR@FPR0 | mean S | mean R | AUC diff | margin diff | AUC fam-null | margin fam-null |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in run["settings"].items():
            if "error" in r:
                lines.append(f"| {name} | – | 0 | – | – | – | – | – | – | – | – | – | – |")
                continue
            cal = r.get("calibrated_diff_pgd", {})
            fam = r.get("calibrated_family_null", {})
            lines.append(f"| {name} | {r['ensemble']} ({r['ensemble_surrogates']}+{r['ensemble_references']}) | {r['size']} | "
                         f"{f(r['held_out_confer'])} | {f(r.get('roc_auc'))} | {f(r.get('margin'))} | {f(r.get('tpr_at_fpr_0'))} | "
                         f"{f(r.get('mean_surrogate'))} | {f(r.get('mean_reference'))} | {f(cal.get('roc_auc'))} | {f(cal.get('margin'))} | {f(fam.get('roc_auc'))} | {f(fam.get('margin'))} |")
        lines.append("")
        ctl = {name: r["calibrated_diff_control"] for name, r in run["settings"].items() if "calibrated_diff_control" in r}
        if ctl:
            archs = sorted(next(iter(ctl.values()))["per_arch"])
            lines += [f"Seed {run['seed']}, the quickstart's score: CAEAcc − CAEAcc on the study's control set "
                      f"(`{next(iter(ctl.values()))['control']}`); margin per testing architecture.", "",
                      "| setting | AUC ctl | margin ctl | gap | d′ | threshold | stolen: S, R | " + " | ".join(f"margin {a}" for a in archs) + " |",
                      "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in archs) + " |"]
            for name, c in ctl.items():
                stolen = f"{c['stolen_surrogates']}, {c['stolen_references']}" if "threshold" in c else "–"
                lines.append(f"| {name} | {f(c['roc_auc'])} | {f(c['margin'])} | {f(c['gap'])} | {c['d_prime']:.2f} | "
                             f"{f(c.get('threshold'))} | {stolen} | " + " | ".join(f(c["per_arch"][a]["margin"]) for a in archs) + " |")
            lines.append("")
    if "across_seeds" in payload:
        lines += ["## Across seeds", "", "| setting | seeds | AUC mean | AUC min | margin mean | margin min | AUC diff mean | margin diff min | AUC fam-null mean | AUC fam-null min | margin fam-null min |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        g = lambda a, k: f"{a[k]:.3f}" if k in a else "–"  # noqa: E731  (a score some setting does not have)
        for name, a in payload["across_seeds"].items():
            lines.append(f"| {name} | {a['seeds']} | {a['auc_mean']:.3f} | {a['auc_min']:.3f} | {a['margin_mean']:.3f} | "
                         f"{a['margin_min']:.3f} | {g(a, 'diff_auc_mean')} | {g(a, 'diff_margin_min')} | "
                         f"{g(a, 'fam_auc_mean')} | {g(a, 'fam_auc_min')} | {g(a, 'fam_margin_min')} |")
        lines.append("")
        ctl = {name: a for name, a in payload["across_seeds"].items() if "ctl_auc_mean" in a}
        if ctl:
            lines += ["The quickstart's score (CAEAcc − control) across seeds:", "",
                      "| setting | seeds | AUC ctl mean | AUC ctl min | margin ctl mean | margin ctl min | d′ mean | separated (AUC ≥ 0.95, margin > 0) | stolen: S, R |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for name, a in ctl.items():
                stolen = f"{a['ctl_stolen_surrogates']}, {a['ctl_stolen_references']}" if "ctl_stolen_surrogates" in a else "–"
                lines.append(f"| {name} | {a['seeds']} | {a['ctl_auc_mean']:.3f} | {a['ctl_auc_min']:.3f} | {a['ctl_margin_mean']:.3f} | "
                             f"{a['ctl_margin_min']:.3f} | {a['ctl_d_prime_mean']:.2f} | {a['ctl_separated']} of {a['seeds']} | {stolen} |")
            lines.append("")
    lines.append(f"![held-out conferrability per epsilon]({path.stem}-eps.png)")
    path.write_text("\n".join(lines) + "\n")


def across_seeds(runs: list[dict]) -> dict:
    out = {}
    names = set.intersection(*(set(k for k, v in r["settings"].items() if "roc_auc" in v) for r in runs))
    for name in sorted(names):
        rs = [r["settings"][name] for r in runs]
        a = {"seeds": len(rs), "auc_mean": sum(r["roc_auc"] for r in rs) / len(rs), "auc_min": min(r["roc_auc"] for r in rs),
             "margin_mean": sum(r["margin"] for r in rs) / len(rs), "margin_min": min(r["margin"] for r in rs)}
        if all("calibrated_diff_pgd" in r for r in rs):
            a["diff_auc_mean"] = sum(r["calibrated_diff_pgd"]["roc_auc"] for r in rs) / len(rs)
            a["diff_margin_min"] = min(r["calibrated_diff_pgd"]["margin"] for r in rs)
        if all("calibrated_family_null" in r for r in rs):
            a["fam_auc_mean"] = sum(r["calibrated_family_null"]["roc_auc"] for r in rs) / len(rs)
            a["fam_auc_min"] = min(r["calibrated_family_null"]["roc_auc"] for r in rs)
            a["fam_margin_min"] = min(r["calibrated_family_null"]["margin"] for r in rs)
        if all("calibrated_diff_control" in r for r in rs):
            c = [r["calibrated_diff_control"] for r in rs]
            a.update(ctl_auc_mean=sum(x["roc_auc"] for x in c) / len(c), ctl_auc_min=min(x["roc_auc"] for x in c),
                     ctl_margin_mean=sum(x["margin"] for x in c) / len(c), ctl_margin_min=min(x["margin"] for x in c),
                     ctl_d_prime_mean=sum(x["d_prime"] for x in c) / len(c),
                     ctl_separated=sum(separated(x["roc_auc"], x["margin"]) for x in c))
            if all("threshold" in x for x in c):
                a.update(ctl_stolen_surrogates=sum(x["stolen_surrogates"] for x in c),
                         ctl_stolen_references=sum(x["stolen_references"] for x in c))
        out[name] = a
    return out


def plot_eps(run: dict, path: Path, dataset: str = "fashion-mnist") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run["settings"]
    series = EPS_SERIES[dataset]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for label, pts in series.items():
        xs = [e for n, e in pts if n in s and "held_out_confer" in s[n]]
        ys = [s[n]["held_out_confer"] for n, e in pts if n in s and "held_out_confer" in s[n]]
        ax.plot(xs, ys, "o-", label=label)
    ax.set_xlabel("ε (L∞, [0, 1] pixels)")
    ax.set_ylabel("mean Confer on held-out models")
    ax.set_title(f"seed {run['seed']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    tune_cpu_allocator()  # as the conferprint command does
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=list(DEFAULT_CONFIRM))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--confirm", nargs="*", default=None,
                   help="settings also run on the seeds after the first (default: DEFAULT_CONFIRM of the dataset)")
    p.add_argument("--out", default=None, help="work folder (zoo, fingerprints); default benchmarks/runs/separation-<dataset>")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny models, results under the work folder only")
    p.add_argument("--report", default=None,
                   help="name of the results (JSON, markdown, plot); default separation-<dataset>. A follow-up that runs fewer "
                        "settings on more seeds names its own, so the sweep's report keeps its rows")
    args = p.parse_args(argv)
    if args.confirm is None:
        args.confirm = DEFAULT_CONFIRM[args.dataset]
    report = args.report or f"separation-{args.dataset}"
    if not report.replace("-", "").replace("_", "").replace(".", "").isalnum():
        p.error(f"--report {report!r}: use letters, digits, '-', '_' and '.' only (it names files)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out or ROOT / "benchmarks" / "runs" / f"separation-{args.dataset}")
    out.mkdir(parents=True, exist_ok=True)
    res_path = ROOT / "benchmarks" / "results" / f"{report}.json"
    md_path = ROOT / "docs" / "results" / f"{report}.md"
    if args.smoke:
        res_path, md_path = out / "smoke.json", out / "smoke.md"
    res_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = []
    for i, seed in enumerate(args.seeds):
        runs.append(run_seed(args.dataset, seed, out, args.data_dir, i == 0, args.confirm, args.progress, args.smoke))
        payload = {"command": "python benchmarks/separation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "dataset": args.dataset, "runs": runs, "versions": versions(), "seconds": time.perf_counter() - t0}
        if len(runs) > 1:
            payload["across_seeds"] = across_seeds(runs)
        atomic_write_text(res_path, json.dumps(payload, indent=2))
        write_markdown(args.dataset, payload, md_path)
        plot_eps(runs[0], md_path.with_name(f"{md_path.stem}-eps.png"), args.dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
