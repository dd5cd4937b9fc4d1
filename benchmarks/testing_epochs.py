"""How separation depends on how well the testing models are trained (separation summary §28).

    python benchmarks/testing_epochs.py --factor 2 --seeds 15 16 17 18 19 20 13 14 0 1 2 3 4 5

For each draw of the default study already in `separation.py`'s work folder (its zoo and its fingerprints, reused
through hard links), every testing group of the `default` preset is trained again at ``--factor`` times its epochs
(both roles, every architecture, soft and hard labels, the same D2 and source; the models' names carry the factor,
so the zoo keeps both sets). The default's fingerprint and its control set are not made again: the defender's side
is unchanged. Both sets of testing models are scored with the quickstart's score (CAEAcc − CAEAcc on the control),
and for each the report gives AUC, margin, d′, the issue's goal, and every model's test accuracy and fidelity (agreement
with the source's top-1 on the test images): per architecture, how much closer the surrogates are to the source than
the references. No threshold: the calibration references are not retrained.

Writes benchmarks/results/testing-epochs-fashion-mnist.json and docs/results/testing-epochs-fashion-mnist.md after
every draw (rows of earlier commands kept); the models are in the zoo, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import CONTROL_NAME, TINY, QuickstartConfig, make_fingerprint, prepare_study, score_models
from conferprint.experiments.zoo_builder import Group
from conferprint.training import predict_labels
from conferprint.verify import separation_stats

from _common import d_prime, run_draws, separated  # run as a script: its folder is on sys.path

log = logging.getLogger("testing_epochs")
STEM = "testing-epochs-fashion-mnist"


def scaled(groups: tuple[Group, ...], factor: int) -> tuple[Group, ...]:
    """``groups`` at ``factor`` times their epochs, named apart (``x<factor>-`` before each model's index)."""
    if factor < 2:
        raise ValueError("factor must be at least 2 (factor 1 is the study's own testing models)")
    return tuple(replace(g, epochs=g.epochs * factor, tag=f"{g.tag}x{factor}-") for g in groups)


def factor_of(name: str) -> int:
    """The epoch factor a testing model's name carries (1 for the study's own models)."""
    idx = name.rsplit("-", 2)
    return int(idx[-2][1:]) if len(idx) == 3 and idx[-2].startswith("x") and idx[-2][1:].isdigit() else 1


def study_config(factor: int, smoke: bool) -> QuickstartConfig:
    from separation import DRAWS  # the default as its draws were made

    base = TINY if smoke else DRAWS
    # no calibration references, so no fitted threshold (the preset's 0.0 fallback; this benchmark decides nothing)
    return replace(base, testing=base.testing + scaled(base.testing, factor), calibration=(), threshold=0.0)


def score_set(rows: list[dict]) -> dict:
    """The goal's numbers for one set of testing models' rows (``score``: the quickstart's)."""
    pos = [r["score"] for r in rows if r["role"] == "surrogate"]
    neg = [r["score"] for r in rows if r["role"] == "reference"]
    gap, dp = d_prime(pos, neg)
    stats = separation_stats(pos, neg)
    fid = {}
    for arch in sorted({r["arch"] for r in rows}):
        s = [r["fidelity"] for r in rows if r["arch"] == arch and r["role"] == "surrogate"]
        ref = [r["fidelity"] for r in rows if r["arch"] == arch and r["role"] == "reference"]
        fid[arch] = {"surrogates": float(np.mean(s)), "references": float(np.mean(ref)), "gap": float(np.mean(s) - np.mean(ref))}
    return {**stats, "gap": gap, "d_prime": dp, "met": separated(stats["roc_auc"], stats["margin"]),
            "test_acc_surrogates": float(np.mean([r["test_acc"] for r in rows if r["role"] == "surrogate"])),
            "test_acc_references": float(np.mean([r["test_acc"] for r in rows if r["role"] == "reference"])),
            "fidelity": fid}


def run_seed(seed: int, factor: int, work: Path, data_dir, progress: bool = False, smoke: bool = False) -> dict:
    from separation import link_draw  # the zoo and fingerprints of separation.py's draw, hard-linked

    cfg = study_config(factor, smoke)
    if not smoke:
        link_draw(seed, work)
    t0 = time.perf_counter()
    study = prepare_study(cfg, work / f"zoo-seed{seed}", seed=seed, data_dir=data_dir, progress=progress)
    seconds = time.perf_counter() - t0
    cem, _ = make_fingerprint(cfg.cem, f"fp-seed{seed}-cem-pool", work, study.source, study.training_role("surrogate"),
                               study.training_role("reference"), study.x1, study.y1, seed, study.data.num_classes, progress)
    control, _ = make_fingerprint(cfg.control or cfg.pgd, f"fp-seed{seed}-control", work, study.source, [], [], study.x1, study.y1,
                                   seed + 100, study.data.num_classes, progress)
    rows = score_models(study.testing, {"cem": cem, CONTROL_NAME: control}, "testing", control=CONTROL_NAME)
    source_labels = predict_labels(study.source.model, study.data.x_test)
    by_name = {m.name: m for m in study.testing}
    for r in rows:
        r["factor"] = factor_of(r["name"])
        r["fidelity"] = float((predict_labels(by_name[r["name"]].model, study.data.x_test) == source_labels).float().mean())
        r["train_seconds"] = by_name[r["name"]].meta.get("train_seconds")
        for k in ("scores", "sha256", "trained_seconds", "group", "data"):
            r.pop(k, None)
    sets = {str(f): score_set([r for r in rows if r["factor"] == f]) for f in (1, factor)}
    log.info("seed %d: factor 1 AUC %.3f margin %+.3f d' %.2f | factor %d AUC %.3f margin %+.3f d' %.2f", seed,
             sets["1"]["roc_auc"], sets["1"]["margin"], sets["1"]["d_prime"], factor, sets[str(factor)]["roc_auc"],
             sets[str(factor)]["margin"], sets[str(factor)]["d_prime"])
    return {"seed": seed, "factor": factor, "source_test_acc": study.source.meta["test_acc"], "models": rows, "sets": sets,
            "models_seconds_this_run": seconds,
            "trained_seconds": {str(f): float(sum(r["train_seconds"] or 0 for r in rows if r["factor"] == f)) for f in (1, factor)}}


def totals(runs: list[dict], factor: int) -> dict:
    """Goal met, mean d′ and the paired difference of d′ (factor − 1) over the draws of ``factor``."""
    rs = [r for r in runs if r["factor"] == factor]
    out = {}
    for f in ("1", str(factor)):
        out[f] = {"draws": len(rs), "met": sum(r["sets"][f]["met"] for r in rs),
                  "d_prime_mean": float(np.mean([r["sets"][f]["d_prime"] for r in rs])) if rs else None,
                  "gap_mean": float(np.mean([r["sets"][f]["gap"] for r in rs])) if rs else None}
    diff = [r["sets"][str(factor)]["d_prime"] - r["sets"]["1"]["d_prime"] for r in rs]
    out["d_prime_change"] = {"mean": float(np.mean(diff)) if diff else None,
                             "se": float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else None,
                             "up": sum(d > 0 for d in diff)}
    return out


def write_markdown(payload: dict, path: Path) -> None:
    lines = ["# Separation with longer-trained testing models — Fashion-MNIST", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "The default study of each draw (source, 10 + 16 training models, the default fingerprint and its control set, "
             "from `separation.py`'s work folder); its 8 + 8 testing models (factor 1: cnn_small 5, lenet_bn 5, mlp 8, cnn 2 "
             "epochs) and the same groups trained at the factor times their epochs. Score: CAEAcc − CAEAcc on the control "
             "(the quickstart's). Goal met: AUC ≥ 0.95 and margin > 0. Fidelity: agreement with the source's top-1 on the "
             "10,000 test images; its gap = mean surrogate − mean reference of one architecture.", ""]
    for factor in sorted({r["factor"] for r in payload["runs"]}):
        rs = [r for r in payload["runs"] if r["factor"] == factor]
        archs = sorted(rs[0]["sets"]["1"]["fidelity"])
        lines += [f"## Factor {factor}", "",
                  f"| seed | factor 1: AUC / margin / d′ | factor {factor}: AUC / margin / d′ | test acc S, R (1 → {factor}) | "
                  + " | ".join(f"fidelity gap {a} (1 → {factor})" for a in archs) + f" | factor {factor} trained s |",
                  "| --- | --- | --- | --- | " + " | ".join("---" for _ in archs) + " | --- |"]
        for r in rs:
            a, b = r["sets"]["1"], r["sets"][str(factor)]
            cell = lambda s: f"{s['roc_auc']:.3f} / {s['margin']:+.3f} / {s['d_prime']:.2f}" + (" met" if s["met"] else "")  # noqa: E731
            lines.append(f"| {r['seed']} | {cell(a)} | {cell(b)} | {a['test_acc_surrogates']:.4f}, {a['test_acc_references']:.4f} → "
                         f"{b['test_acc_surrogates']:.4f}, {b['test_acc_references']:.4f} | "
                         + " | ".join(f"{a['fidelity'][x]['gap']:+.4f} → {b['fidelity'][x]['gap']:+.4f}" for x in archs)
                         + f" | {r['trained_seconds'][str(factor)]:.0f} |")
        t = totals(payload["runs"], factor)
        ch = t["d_prime_change"]
        se = f" ± {ch['se']:.2f}" if ch["se"] is not None else ""
        lines += ["", f"Over {t['1']['draws']} draws: goal met on {t['1']['met']} at factor 1 and {t[str(factor)]['met']} at factor "
                  f"{factor}; mean d′ {t['1']['d_prime_mean']:.2f} against {t[str(factor)]['d_prime_mean']:.2f} (change "
                  f"{ch['mean']:+.2f}{se}, up on {ch['up']}); mean gap {t['1']['gap_mean']:.3f} against "
                  f"{t[str(factor)]['gap_mean']:.3f}.", ""]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--factor", type=int, default=2, help="the testing models' epochs times this (at least 2)")

    def check(args: argparse.Namespace) -> None:  # the bound lives in `scaled`; refused before any folder is made
        try:
            study_config(args.factor, args.smoke)
        except ValueError as e:
            raise ValueError(f"--factor {args.factor}: {e}") from None

    return run_draws(argv, script="testing_epochs.py", stem=STEM, description=__doc__.split("\n\n")[0], work_name="testing-epochs",
                     run_draw=lambda seed, args, work: run_seed(seed, args.factor, work, args.data_dir, args.progress, args.smoke),
                     write_md=write_markdown, options=options, check=check, group=lambda r: (r["factor"],))

if __name__ == "__main__":
    sys.exit(main())
