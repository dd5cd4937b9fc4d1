"""How many of the fingerprint's 100 examples should come from the source's own mistakes? (issue: separation)

    python benchmarks/mix_share.py --studies seed0 seed1 ... seed12 seed0-bf16 seed1-bf16 seed2-bf16

The default's fingerprint (``CEM(candidates="mixed")``) is the best examples, by hard Confer on the 26
training models, of the papers' pool (D1 images the source classifies correctly, made adversarial) and the
best of the source's own mistakes on D1 (kept wrong, made conferrable): 50 of each until stop 26, chosen among
0, 50 and 100 mistakes on three seeds (docs/results/separation-summary.md §11), the only lever that raised d′
beyond the draw-to-draw noise; 75 mistakes since (``errors_share``), chosen with this benchmark.

Each study (a finished run of `benchmarks/quickstart_seeds.py`: ``seed<N>`` fp32, ``seed<N>-bf16`` its bf16
draw; no model is retrained) has its two pools optimised again exactly as `CEM.generate` does
(`cifar_levers.optimise_pool`, with the study's CEM parameters read from its fingerprint's manifest), and
the replay is checked against the study's fingerprint (whatever its split) example for example (same keys, same Confer, same
answers). Per kept candidate it stores which testing models and which calibration references give the
source's label (``<study>/mix-share/<pool>.npz``, so a rerun skips the optimisation). Then:

- ``k mistakes``: the best 100 − k of the papers' pool and the best k mistakes, k = 0, 25, 50, 75 (the
  default since stop 26), 100;
- ``joint``: the 100 best of both pools together by hard Confer (no fixed split);

each scored as the quickstart scores it (CAEAcc − CAEAcc on the study's control set) on the 8 + 8 testing
models, with the verdict's threshold refitted on the study's 12 calibration references (the prediction bound,
α 0.05). Also the held-out power (share of testing surrogates minus share of testing references giving the
source's label) of each pool's candidates by rank: whether the 51st–100th mistakes carry more than the 51st–100th
correct ones. Nothing is chosen on the testing models here.
Writes benchmarks/results/mix-share-fashion-mnist.json and docs/results/mix-share-fashion-mnist.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint
from conferprint.fingerprint import CEM, load_fingerprint
from conferprint.fingerprint.ensemble import folded, shift_rank
from conferprint.verify import separation_stats
from conferprint.verify.calibration import control_difference, fit_threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import d_prime, load_arrays, run_studies, save_arrays, separated, study_key  # noqa: E402
from candidate_signals import agreement, power as held_out_power  # noqa: E402  (the same answers and power)
from cifar_levers import optimise_pool  # noqa: E402  (CEM.generate's optimisation, per candidate)
from held_out_levers import study_of  # noqa: E402  (the same finished studies)

ROOT = Path(__file__).resolve().parents[1]
STEM = "mix-share-fashion-mnist"
SIZE = DEFAULT.cem.size
SHARES = (0, 25, 50, 75, 100)  # examples from the mistakes pool
BUCKETS = ((0, 25), (25, 50), (50, 75), (75, 100))  # ranks within a pool whose held-out power is reported
POOLS = ("correct", "errors")


def pools_of(folder: Path, seed: int, study, fp, inputs: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Both pools of the study's CEM, replayed (or reloaded from ``folder/mix-share``), answers of the testing
    models then the calibration references in ``agree``; checked against the study's own fingerprint. ``inputs``:
    the optimised examples too (``x_adv``; a cache without them is replayed again and rewritten with them)."""
    cem = CEM(**fp.manifest["params"])
    if cem.candidates != "mixed":
        raise SystemExit(f"{folder}: its fingerprint is not the mixed pool ({cem.candidates!r})")
    inputs = inputs or cem.rank == "shift"  # the shift ranking of the check needs the optimised examples
    models = SimpleNamespace(source=study.source, x1=study.x1, y1=study.y1, training_role=study.training_role,
                             testing=list(study.testing) + list(study.calibration))
    out = {}
    for pool in POOLS:
        path = folder / "mix-share" / f"{pool}.npz"
        if path.exists():
            out[pool] = load_arrays(path)
            if not inputs or "x_adv" in out[pool]:
                continue
        c = optimise_pool(models, cem.part(pool), seed)
        c["x_adv"] = c["x_adv"].numpy()
        path.parent.mkdir(exist_ok=True)
        save_arrays(path, {k: c[k] for k in ("y", "t", "keep", "hard", "p_surr", "p_ref", "agree", "seconds", "candidates")
                           + (("x_adv",) if inputs else ())})
        out[pool] = c
    # the study's fingerprint is the best of each pool's ranking (its own: hard Confer, or the shift ranking since
    # §43): the replay must give back its examples (each example's first query where it asks several)
    n_err = cem.n_errors
    members = None if cem.rank == "confer" else tuple(  # the shift ranking's models, folded once for both pools
        folded([m.model for m in study.training_role(role)]) for role in ("surrogate", "reference"))
    idx = {"correct": picked(out["correct"], cem.size - n_err, cem, members),
           "errors": picked(out["errors"], n_err, cem, members)}
    first = fp.example_rows()
    x, k = fp.inputs[first], fp.keys[first]
    keys = np.concatenate([out[p]["t"][idx[p]] for p in POOLS])
    confer = np.concatenate([out[p]["hard"][idx[p]] for p in POOLS])
    agree = np.concatenate([out[p]["agree"][: len(study.testing), idx[p]] for p in POOLS], axis=1)
    if not (np.array_equal(keys, k.numpy()) and np.allclose(confer, fp.train_confer[first].numpy())
            and np.array_equal(agree, agreement(study.testing, x, k).astype(bool))):
        raise SystemExit(f"{folder}: the replayed pools do not give back the study's fingerprint")
    return out


def picked(c: dict[str, np.ndarray], n: int, cem: CEM, members=None) -> np.ndarray:
    """The ``n`` candidates of pool ``c`` that ``cem`` keeps: ``top`` by hard Confer, or with ``rank="shift"`` the
    library's `shift_rank` of the kept ones on ``members``, the folded training (surrogates, references), as
    `CEM.generate` ranks them."""
    if cem.rank == "confer":
        return top(c, n)
    kept = np.flatnonzero(c["keep"])
    surr, refs = members
    rank = shift_rank(surr, refs, torch.from_numpy(c["x_adv"][kept]), torch.from_numpy(c["t"][kept]).long(),
                      torch.from_numpy(c["hard"][kept]).double(), cem.rank_top)
    return kept[torch.argsort(rank, descending=True, stable=True)[:n].numpy()]


def top(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The ``n`` kept candidates (adversarial, Confer ≥ τ) with the highest hard Confer, ties by position:
    CEM's pick within a pool."""
    kept = np.flatnonzero(c["keep"])
    return kept[np.argsort(-c["hard"][kept].astype(np.float64), kind="stable")[:n]]


def fingerprints(pools: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray | None]:
    """Each setting's 100 examples as (models, examples) answers: ``k mistakes`` and ``joint``; None where a
    pool keeps too few."""
    out: dict[str, np.ndarray | None] = {}
    c, e = pools["correct"], pools["errors"]
    for k in SHARES:
        ic, ie = top(c, SIZE - k), top(e, k)
        out[f"{k} mistakes"] = (np.concatenate([c["agree"][:, ic], e["agree"][:, ie]], axis=1)
                                if len(ic) == SIZE - k and len(ie) == k else None)
    kc, ke = np.flatnonzero(c["keep"]), np.flatnonzero(e["keep"])
    confer = np.concatenate([c["hard"][kc], e["hard"][ke]]).astype(np.float64)
    answers = np.concatenate([c["agree"][:, kc], e["agree"][:, ke]], axis=1)
    best = np.argsort(-confer, kind="stable")[:SIZE]  # ties: the papers' pool first, then by position
    out["joint"] = answers[:, best] if len(best) == SIZE else None
    out["joint_mistakes"] = np.array(int((best >= len(kc)).sum()))
    return out


def scored_models(study, ctl_fp) -> tuple[list, np.ndarray, np.ndarray]:
    """What a replay scores: the study's testing models then its calibration references, their answers on the
    control set (models × 500, 1 where a model gives the key), and which testing models are surrogates."""
    everyone = list(study.testing) + list(study.calibration)
    is_surr = np.array([m.meta["role"] == "surrogate" for m in study.testing])
    return everyone, agreement(everyone, ctl_fp.inputs, ctl_fp.keys), is_surr


def evaluate(answers: np.ndarray, ctl: np.ndarray, is_surr: np.ndarray, n_testing: int) -> dict:
    """``answers`` (testing models then calibration references, examples) scored as the quickstart scores them."""
    # the library's score, rounded as it rounds it, so that equal scores tie exactly as in the quickstart
    score = np.array([control_difference(f, c) for f, c in zip(answers.astype(np.float64).mean(1), ctl)])
    test, cal = score[:n_testing], score[n_testing:]
    pos, neg = test[is_surr].tolist(), test[~is_surr].tolist()
    st = separation_stats(pos, neg)
    gap, dp = d_prime(pos, neg)
    # the prediction bound (the default verdict's rule until stop 41, and these benchmarks' counts since §12) and,
    # beside it, the tolerance bound the default verdict has used since stop 41 (score-only verdicts both)
    thr = fit_threshold(cal.tolist(), DEFAULT.threshold_alpha)["threshold"]
    tol = fit_threshold(cal.tolist(), DEFAULT.threshold_alpha, "tolerance", DEFAULT.threshold_confidence)["threshold"]
    return {"roc_auc": st["roc_auc"], "margin": st["margin"], "gap": gap, "d_prime": dp, "threshold": thr,
            "surrogates_stolen": int(sum(s >= thr for s in pos)), "references_stolen": int(sum(s >= thr for s in neg)),
            "threshold_tolerance": tol, "surrogates_stolen_tolerance": int(sum(s >= tol for s in pos)),
            "references_stolen_tolerance": int(sum(s >= tol for s in neg)), "scores": [float(v) for v in test]}


def run_study(name: str, data_dir) -> dict:
    # every calibration reference of the default (12), not held_out_levers' 8: the verdict's threshold is refitted
    folder, seed, _, study = study_of(name, data_dir, DEFAULT)
    fp, ctl_fp = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    t0 = time.perf_counter()
    pools = pools_of(folder, seed, study, fp)
    _, ctl_answers, is_surr = scored_models(study, ctl_fp)
    ctl, n = ctl_answers.mean(1), len(is_surr)
    fps = fingerprints(pools)
    settings = {k: (evaluate(v, ctl, is_surr, n) if v is not None else None)
                for k, v in fps.items() if k != "joint_mistakes"}
    power = {}
    for pool in POOLS:
        p = held_out_power(pools[pool]["agree"][:n], is_surr)
        idx = top(pools[pool], BUCKETS[-1][1])
        power[pool] = {"kept": int(pools[pool]["keep"].sum()), "candidates": int(pools[pool]["candidates"]),
                       "optimise_seconds": float(pools[pool]["seconds"]),
                       "by_rank": [float(p[idx[a_:b]].mean()) if len(idx) >= b else None for a_, b in BUCKETS]}
    return {"study": name, "settings": settings, "joint_mistakes": int(fps["joint_mistakes"]), "pools": power,
            "models": [m.name for m in study.testing], "seconds": time.perf_counter() - t0}


def settings_table(runs: list[dict], keys, extra=()) -> list[str]:
    """A markdown table of settings (rows) by study: AUC / margin / d′ per study, then over the studies the setting
    was measured on, goal met, mean d′, mean gap and score-only verdicts; ``extra``: ``(header, cell(rows))`` columns."""
    studies = [r["study"] for r in runs]
    lines = ["| setting | " + " | ".join(studies) + " | goal met | mean d′ | mean gap | stolen: surrogates, references |"
             + "".join(f" {h} |" for h, _ in extra), "| --- |" + " --- |" * (len(studies) + 4 + len(extra))]
    for key in keys:
        rows = [r["settings"].get(key) for r in runs]
        cells = [f"{v['roc_auc']:.3f} / {v['margin']:+.3f} / {v['d_prime']:.2f}" if v else "–" for v in rows]
        done = [v for v in rows if v]
        if not done:
            continue
        met = sum(separated(v["roc_auc"], v["margin"]) for v in done)
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {met} / {len(done)} | {np.mean([v['d_prime'] for v in done]):.2f} | "
                     f"{np.mean([v['gap'] for v in done]):.3f} | {sum(v['surrogates_stolen'] for v in done)} / {8 * len(done)}, "
                     f"{sum(v['references_stolen'] for v in done)} / {8 * len(done)} |" + "".join(f" {cell(done)} |" for _, cell in extra))
    return lines


def power_table(runs: list[dict], pools) -> list[str]:
    """Per study and pool, the held-out power of the pool's candidates by rank and its kept candidates; then the
    mean over the studies of each of ``pools``."""
    lines = ["| study | pool | kept / optimised | ranks 1–25 | 26–50 | 51–75 | 76–100 | optimised in s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        for pool, v in r["pools"].items():
            cells = " | ".join(f"{x:.3f}" if x is not None else "–" for x in v["by_rank"])
            lines.append(f"| {r['study']} | {pool} | {v['kept']} / {v['candidates']} | {cells} | {v['optimise_seconds']:.0f} |")
    for pool in pools:
        by = np.array([[x if x is not None else np.nan for x in r["pools"][pool]["by_rank"]] for r in runs])
        lines.append(f"| mean | {pool} | | " + " | ".join(f"{x:.3f}" for x in np.nanmean(by, 0)) + " | |")
    return lines


def write_md(payload: dict, path: Path) -> None:
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    settings = [f"{k} mistakes" for k in SHARES] + ["joint"]
    lines = ["# How many of the fingerprint's examples from the source's mistakes (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each finished default study's two CEM pools replayed exactly (checked against its fingerprint); each "
             "setting's 100 examples scored as the quickstart scores them (CAEAcc − CAEAcc on the study's control set) on "
             "its 8 + 8 testing models. `50 mistakes` was the default until stop 26, `75 mistakes` is since. `joint`: the 100 best of both pools by hard Confer. "
             "Cells: AUC / margin / d′; goal met: AUC ≥ 0.95 and margin > 0. Verdicts: the threshold refitted on the "
             "study's 12 calibration references (prediction bound, α 0.05).", ""]
    lines += settings_table(runs, settings)
    lines += ["", "`joint` took this many of its 100 from the mistakes: " +
              ", ".join(f"{r['study']} {r['joint_mistakes']}" for r in runs) + ".", "",
              "Held-out power (share of testing surrogates minus share of testing references giving the source's label) "
              "of each pool's candidates by rank (hard Confer), and the pool's kept candidates (adversarial, Confer ≥ τ):", ""]
    lines += power_table(runs, POOLS)
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="mix_share.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md)


if __name__ == "__main__":
    sys.exit(main())
