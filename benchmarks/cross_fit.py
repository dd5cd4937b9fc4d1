"""Ranking the source's mistakes by references that never saw them: cross-fitted Confer (issue: separation)

    python benchmarks/cross_fit.py --studies seed0 seed1 seed2 seed3 seed4 seed5 seed6

The default's fingerprint takes 75 of its 100 examples from the source's mistakes on D1, the best by hard Confer
on the 26 training models. Every training reference was trained on D1 with the true labels, so on a mistake's very
image it knows the right answer: its disagreement with the source there says little about whether a stranger's
model (trained on other data) would disagree too, which is what the held-out references do
(docs/results/separation-summary.md §20). Cross-fitting gives a reference's view of a mistake it never saw: D1 is
split in two halves (seeded); 8 references are trained on each half (the training references' groups at half
their count, twice their epochs: the same optimisation steps), and a mistake from one half is judged by the 8
trained on the other.

Each study (a finished `benchmarks/quickstart_seeds.py` run) keeps its training ensemble and its optimisation: the
errors pool is optimised again exactly as `CEM.generate` does (checked against `mix_share.py`'s replay), and only
the ranking of its kept candidates changes. Settings (each 25 correct answers, the default's, + 75 mistakes, or
100 mistakes; scored as the quickstart scores them, the threshold refitted on the study's 12 calibration
references):

- ``D1 75``: the default, ranked by Confer on the training models;
- ``cross-fit 75``: ranked by Confer with the surrogates and the 8 references of the other half;
- ``seen-half 75``: ranked by Confer with the 8 references of the mistake's own half (a control: the same
  references' quality, but they saw the image);
- ``cross-fit 100``: the best 100 mistakes by cross-fitted Confer.

Also, over each study's kept mistakes, the correlation of each ranking's key with the candidate's held-out power
(share of testing surrogates minus share of testing references giving the source's label). Exploratory: measured
on fp32 seeds 0–6; a setting that wins here would need the other studies and new draws before it is adopted.
Writes benchmarks/results/cross-fit-fashion-mnist.json and docs/results/cross-fit-fashion-mnist.md.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint
from conferprint.fingerprint import CEM, load_fingerprint
from conferprint.fingerprint.scores import confer, labels_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_arrays, run_studies, save_arrays, study_key  # noqa: E402
from candidate_signals import power as held_out_power  # noqa: E402  (the same answers and power)
from cifar_levers import optimise_pool  # noqa: E402
from held_out_levers import builder_for, study_of  # noqa: E402
from mix_share import evaluate, pools_of, scored_models, settings_table, top  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEM = "cross-fit-fashion-mnist"
RANKINGS = ("training models", "cross-fit", "seen half")
SETTINGS = {"D1 75": ("training models", 75), "cross-fit 75": ("cross-fit", 75), "seen-half 75": ("seen half", 75),
            "cross-fit 100": ("cross-fit", 100)}
SIZE = DEFAULT.cem.size


def halves(n: int, seed: int) -> np.ndarray:
    """Each D1 index's half (0 or 1), seeded apart from everything else of the study."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1_000_003)).numpy()
    half = np.zeros(n, np.int64)
    half[perm[n // 2:]] = 1
    return half


def half_references(study, folder: Path, seed: int, amp: bool, half: np.ndarray) -> tuple[list, list, float]:
    """8 references per half: the training references' groups at half their count and twice their epochs."""
    b = builder_for(study, folder / "cross-fit" / "zoo", seed, amp)
    groups = [replace(g, count=max(1, g.count // 2), epochs=2 * g.epochs) for g in DEFAULT.training if g.role == "reference"]
    out = []
    for k in (0, 1):
        idx = torch.from_numpy(np.flatnonzero(half == k))
        out.append(b.run_all([j for g in groups for j in
                              b.group_jobs(f"half{k}", g, f"D1h{k}", study.x1[idx], study.y1[idx], study.source)]))
    seconds = float(sum(m.meta.get("train_seconds") or 0.0 for ms in out for m in ms))
    return [m.model for m in out[0]], [m.model for m in out[1]], seconds


def rankings(folder: Path, seed: int, amp: bool, study, fp, replayed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The errors pool (checked against ``replayed``, mix_share's) with each candidate's key under every ranking;
    cached."""
    path = folder / "cross-fit" / "ranking.npz"
    if path.exists():
        return load_arrays(path)
    cem = CEM(**fp.manifest["params"])
    models = SimpleNamespace(source=study.source, x1=study.x1, y1=study.y1, training_role=study.training_role,
                             testing=list(study.testing) + list(study.calibration))
    c = optimise_pool(models, replace(cem, candidates="errors"), seed)
    if not all(np.array_equal(c[k], replayed[k]) for k in ("t", "keep", "hard", "agree")):
        raise SystemExit(f"{folder}: the errors pool optimised again differs from mix_share's replay")
    half = halves(len(study.y1), seed)
    refs0, refs1, train_seconds = half_references(study, folder, seed, amp, half)
    xa, t = c["x_adv"], torch.from_numpy(c["t"])
    surr = labels_of([m.model for m in study.training_role("surrogate")], xa)
    by0, by1 = confer(surr, labels_of(refs0, xa), t).numpy(), confer(surr, labels_of(refs1, xa), t).numpy()
    own = half[c["origin"]]
    out = {**{k: c[k] for k in ("t", "keep", "hard", "agree", "seconds", "candidates", "origin")},
           "cross": np.where(own == 0, by1, by0), "seen": np.where(own == 0, by0, by1),
           "half_train_seconds": np.array(train_seconds)}
    path.parent.mkdir(exist_ok=True)
    save_arrays(path, out)
    return out


def key_of(c: dict[str, np.ndarray], ranking: str) -> np.ndarray:
    """The ranking's key; ties broken by Confer on the training models, then by position."""
    hard = c["hard"].astype(np.float64)
    if ranking == "training models":
        return hard
    return c["cross" if ranking == "cross-fit" else "seen"].astype(np.float64) + 1e-3 * hard


def pick(c: dict[str, np.ndarray], ranking: str, n: int) -> np.ndarray:
    kept = np.flatnonzero(c["keep"])
    return kept[np.argsort(-key_of(c, ranking)[kept], kind="stable")[:n]]


def run_study(name: str, data_dir) -> dict:
    folder, seed, amp, study = study_of(name, data_dir, DEFAULT)
    fp, ctl_fp = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    t0 = time.perf_counter()
    pools = pools_of(folder, seed, study, fp)
    correct, c = pools["correct"], rankings(folder, seed, amp, study, fp, pools["errors"])
    _, ctl_answers, is_surr = scored_models(study, ctl_fp)
    ctl, n = ctl_answers.mean(1), len(is_surr)
    settings = {}
    for key, (ranking, k) in SETTINGS.items():
        ic, ie = top(correct, SIZE - k), pick(c, ranking, k)
        settings[key] = evaluate(np.concatenate([correct["agree"][:, ic], c["agree"][:, ie]], axis=1), ctl, is_surr, n)
    power = held_out_power(c["agree"][:n], is_surr)
    kept = np.flatnonzero(c["keep"])
    signals = {r: {"corr": float(np.corrcoef(key_of(c, r)[kept], power[kept])[0, 1]),
                   "top75_power": float(power[pick(c, r, 75)].mean())} for r in RANKINGS}
    return {"study": name, "settings": settings, "signals": signals, "kept": int(len(kept)),
            "half_train_seconds": float(c["half_train_seconds"]), "seconds": time.perf_counter() - t0}


def write_md(payload: dict, path: Path) -> None:
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    lines = ["# Ranking the source's mistakes by references that never saw them (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "The errors pool of each study optimised again as the default does (same ensemble, same kept candidates); "
             "only the ranking of its mistakes changes. `cross-fit`: Confer with the training surrogates and the 8 "
             "references trained on the other half of D1; `seen half`: the 8 of the mistake's own half. Cells: AUC / "
             "margin / d′ on the 8 + 8 testing models; goal met: AUC ≥ 0.95 and margin > 0; verdicts at the threshold "
             "refitted on the study's 12 calibration references.", ""]
    lines += settings_table(runs, SETTINGS)
    lines += ["", "Over each study's kept mistakes: the correlation of the ranking's key with the held-out power (share of "
                  "testing surrogates minus share of testing references giving the source's label), and the mean power of "
                  "the 75 it puts first:", "",
              "| study | kept | " + " | ".join(f"{r}: corr, top-75 power" for r in RANKINGS) + " | half references trained in s |",
              "| --- | --- |" + " --- |" * (len(RANKINGS) + 1)]
    for r in runs:
        lines.append(f"| {r['study']} | {r['kept']} | " + " | ".join(
            f"{r['signals'][k]['corr']:+.3f}, {r['signals'][k]['top75_power']:.3f}" for k in RANKINGS)
            + f" | {r['half_train_seconds']:.0f} |")
    lines.append("| mean | | " + " | ".join(
        f"{np.mean([r['signals'][k]['corr'] for r in runs]):+.3f}, {np.mean([r['signals'][k]['top75_power'] for r in runs]):.3f}"
        for k in RANKINGS) + " | |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="cross_fit.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md)


if __name__ == "__main__":
    sys.exit(main())
