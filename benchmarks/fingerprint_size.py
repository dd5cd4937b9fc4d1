"""What limits separation at 100 examples, and how it grows with the fingerprint's size (issue: separation)

    python benchmarks/fingerprint_size.py --studies seed0 seed1 ... seed16 seed0-bf16 seed1-bf16 seed2-bf16

The issue fixes the fingerprint at 100 examples, and the default separates its 8 + 8 testing models on 11 of
20 draws (docs/results/separation-summary.md §22). Two kinds of noise spread a model's score (CAEAcc − CAEAcc
on the control set) within its group, and they call for different levers:

- **the examples' own noise**: even if every surrogate were the same kind of model, each answers each example
  its own way; averaged over n examples this part shrinks as 1/n. Estimated per group, assuming the examples'
  answers independent given the group: Σ_i var_m(a_mi) / n² + Σ_j var_m(c_mj) / 500² (a: the fingerprint's
  answers, c: the control's, var over the group's 8 models, ddof 1);
- **the models' affinity**: a model that follows the source on one example tends to on the others (a
  reference of the source's own architecture, say). It is the rest of the observed within-group variance, does
  not shrink with n, and bounds d′ at gap / √affinity however large the fingerprint.

What could the affinity be? Per testing model, four things a defender can measure from top-1 answers on
clean images none of the models trained on (Fashion-MNIST's test split): its accuracy, its agreement with the
source (fidelity), its agreement with the source's wrong label where the source errs, and its agreement with the
training references' shared wrong label where the source is right (at least half of the 16 training references
give that same wrong label). If one of them explained the references' affinity, a second control built on it
could remove it; reported as each one's correlation with the score within a study's group, averaged. And
whether the affinity sits in examples of one kind: the covariance, across a group's models, of two examples'
answers when both have the same (true class, key) pair against when they do not, in the default's 100.

Each study's two CEM pools come from `mix_share.py`'s replay (cached there; no model is retrained, nothing is
optimised again unless its cache is missing) and its control set's answers from the models. For each size n the
fingerprint is what the default would keep at that size: the best n − ⌊n · share⌋ of the papers' pool and the
best ⌊n · share⌋ mistakes by hard Confer (share: the study's `errors_share`, 0.75), so n = 100 is the study's own
fingerprint. Each is scored as the quickstart scores it on the 8 + 8 testing models, the verdict's threshold
refitted on the study's 12 calibration references. A suspect is asked n + 500 queries (the control's 500).
Nothing is chosen here: sizes other than 100 are outside the issue's goal, and this measures how far they are
from it. Writes benchmarks/results/fingerprint-size-fashion-mnist.json and
docs/results/fingerprint-size-fashion-mnist.md.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint
from conferprint.fingerprint import CEM, load_fingerprint
from conferprint.training import predict_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_studies, separated, study_key, study_seed  # noqa: E402
from held_out_levers import study_of  # noqa: E402  (the same finished studies)
from mix_share import evaluate, pools_of, scored_models, top  # noqa: E402  (the replayed pools, scored as the quickstart scores)

STEM = "fingerprint-size-fashion-mnist"
SIZES = (50, 100, 150, 200, 300, 400)
COVARIATES = ("accuracy", "fidelity", "source's mistakes", "references' mistakes")


def picked(pools: dict[str, dict[str, np.ndarray]], n: int, cem: CEM) -> dict[str, np.ndarray] | None:
    """Per pool, the indices of what ``cem`` (a mixed CEM) keeps at size ``n``: the best n − k correct and the best
    k = ``CEM.n_errors`` mistakes by hard Confer; None where a pool keeps too few."""
    k = replace(cem, size=n).n_errors
    idx = {"correct": top(pools["correct"], n - k), "errors": top(pools["errors"], k)}
    return idx if len(idx["correct"]) == n - k and len(idx["errors"]) == k else None


def pick(pools: dict[str, dict[str, np.ndarray]], n: int, cem: CEM) -> np.ndarray | None:
    """(models, n) answers of :func:`picked`'s examples, the correct ones first; None where a pool keeps too few."""
    idx = picked(pools, n, cem)
    return None if idx is None else np.concatenate([pools[p]["agree"][:, i] for p, i in idx.items()], axis=1)


def noise(answers: np.ndarray, ctl_answers: np.ndarray, scores: np.ndarray, is_surr: np.ndarray) -> dict[str, float]:
    """Within-group variance of the testing models' scores (pooled over the two groups), the part the examples'
    own noise explains, and the rest (the models' affinity, which a larger fingerprint does not remove).

    ``answers`` (testing models, n) and ``ctl_answers`` (testing models, 500): 1 where a model gives the key."""
    observed, independent = [], []
    for group in (is_surr, ~is_surr):
        a, c = answers[group].astype(np.float64), ctl_answers[group].astype(np.float64)
        observed.append(np.var(scores[group], ddof=1))
        independent.append(np.var(a, axis=0, ddof=1).sum() / a.shape[1] ** 2
                           + np.var(c, axis=0, ddof=1).sum() / c.shape[1] ** 2)
    obs, ind = float(np.mean(observed)), float(np.mean(independent))
    return {"observed_var": obs, "examples_var": ind, "affinity_var": obs - ind}


def covariates(study) -> dict[str, list[float]]:
    """Per testing model, the four clean-image covariates of the docstring on the study's test split."""
    x, y = study.data.x_test, study.data.y_test
    src = predict_labels(study.source.model, x)
    refs = torch.stack([predict_labels(m.model, x) for m in study.training_role("reference")])
    shared = torch.mode(refs, 0).values  # the training references' most common answer
    theirs = (shared != y) & (src == y) & ((refs == shared).float().mean(0) >= 0.5)
    mine = src != y
    answers = torch.stack([predict_labels(m.model, x) for m in study.testing])
    values = ((answers == y).float().mean(1), (answers == src).float().mean(1),
              (answers[:, mine] == src[mine]).float().mean(1), (answers[:, theirs] == shared[theirs]).float().mean(1))
    return {k: v.tolist() for k, v in zip(COVARIATES, values)}


def origins_labels(study, seed: int, pools: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per pool, the true labels of its candidates, in the order `CEM.generate` (and so the replay) takes them: the
    eligible D1 images shuffled by a generator seeded with the study's seed (one per pool, as the replay does)."""
    right = predict_labels(study.source.model, study.x1) == study.y1
    out = {}
    for pool, c in pools.items():
        gen = torch.Generator().manual_seed(seed)
        eligible = (right if pool == "correct" else ~right).nonzero().squeeze(1)
        out[pool] = study.y1[eligible[torch.randperm(len(eligible), generator=gen)][: int(c["candidates"])]].numpy()
    return out


def pair_covariance(answers: np.ndarray, pairs: list[tuple[int, int]], is_surr: np.ndarray) -> dict[str, float]:
    """Mean covariance, across each group's models, of two examples' answers with the same (true class, key)
    pair and with different pairs, and the share of example pairs that share it; pooled over the two groups."""
    same = np.array([[p == q for q in pairs] for p in pairs])
    off = ~np.eye(len(pairs), dtype=bool)
    out = {"same_pair": [], "other_pairs": []}
    for group in (is_surr, ~is_surr):
        a = answers[group].astype(np.float64)
        cov = np.cov(a, rowvar=False)  # examples × examples, over the group's models
        out["same_pair"].append(cov[same & off].mean() if (same & off).any() else np.nan)
        out["other_pairs"].append(cov[~same & off].mean())
    return {**{k: float(np.nanmean(v)) for k, v in out.items()}, "share_same": float((same & off).sum() / off.sum())}


def pools_and_control(name: str, data_dir):
    """A finished study's replayed pools, its control set's answers (testing models then calibration references),
    which testing models are surrogates, its CEM, and the study's models."""
    folder, seed, _, study = study_of(name, data_dir, DEFAULT)
    fp, ctl_fp = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    pools = pools_of(folder, seed, study, fp)
    _, ctl_answers, is_surr = scored_models(study, ctl_fp)
    return pools, ctl_answers, is_surr, CEM(**fp.manifest["params"]), study


def size_rows(pools, ctl_answers: np.ndarray, is_surr: np.ndarray, cem: CEM, sizes=SIZES) -> dict:
    """Per size: the quickstart's scoring (AUC, margin, gap, d′, threshold, verdicts) and the noise decomposition."""
    n_test = len(is_surr)
    ctl = ctl_answers.astype(np.float64).mean(1)
    out = {}
    for n in sizes:
        answers = pick(pools, n, cem)
        if answers is None:
            out[str(n)] = None
            continue
        row = evaluate(answers, ctl, is_surr, n_test)
        out[str(n)] = {**row, **noise(answers[:n_test], ctl_answers[:n_test], np.array(row["scores"]), is_surr)}
    return out


def run_study(name: str, data_dir) -> dict:
    t0 = time.perf_counter()
    pools, ctl_answers, is_surr, cem, study = pools_and_control(name, data_dir)
    idx = picked(pools, cem.size, cem)  # the study's own fingerprint
    labels = origins_labels(study, study_seed(name)[0], pools)
    pairs = [(int(labels[p][i]), int(pools[p]["t"][i])) for p, ii in idx.items() for i in ii]
    answers = pick(pools, cem.size, cem)[: len(is_surr)]
    return {"study": name, "errors_share": cem.errors_share, "sizes": size_rows(pools, ctl_answers, is_surr, cem),
            "pairs": {**pair_covariance(answers, pairs, is_surr), "distinct": len(set(pairs))},
            "is_surrogate": is_surr.tolist(), "models": [m.name for m in study.testing], "covariates": covariates(study),
            "seconds": time.perf_counter() - t0}


def covariate_rows(runs: list[dict], sizes=(100, 400)) -> list[dict]:
    """Per covariate, group and size: its correlation with the score across the group's models of a study, averaged
    over the studies."""
    out = []
    for key in COVARIATES:
        row = {"covariate": key}
        for group in ("surrogates", "references"):
            for n in sizes:
                cors = []
                for r in runs:
                    g = np.array(r["is_surrogate"]) == (group == "surrogates")
                    x, s = np.array(r["covariates"][key])[g], np.array(r["sizes"][str(n)]["scores"])[g]
                    if np.std(x) > 0 and np.std(s) > 0:
                        cors.append(float(np.corrcoef(x, s)[0, 1]))
                row[f"{group} {n}"] = float(np.mean(cors)) if cors else None
        out.append(row)
    return out


def p_separated(d: float, n: int = 8, draws: int = 200_000, seed: int = 0) -> float:
    """How often the lowest of ``n`` surrogates clears the highest of ``n`` references when both groups' scores are
    normal with sd 1 and means ``d`` apart (simulated; a local generator)."""
    rng = np.random.default_rng(seed)
    return float((rng.normal(d, 1, (draws, n)).min(1) > rng.normal(0, 1, (draws, n)).max(1)).mean())


def summary_rows(runs: list[dict]) -> list[dict]:
    """Per size, over the studies measured at it: goal met, mean gap and d′, verdicts, and the mean variances."""
    out = []
    for n in SIZES:
        done = [r["sizes"][str(n)] for r in runs if r["sizes"].get(str(n))]
        if not done:
            continue
        mean = {k: float(np.mean([v[k] for v in done])) for k in ("gap", "d_prime", "observed_var", "examples_var", "affinity_var")}
        out.append({"size": n, "studies": len(done), "goal_met": sum(separated(v["roc_auc"], v["margin"]) for v in done),
                    "surrogates_stolen": sum(v["surrogates_stolen"] for v in done),
                    "references_stolen": sum(v["references_stolen"] for v in done), **mean,
                    # the bound a larger fingerprint cannot pass if the affinity stays what it is at this size
                    "d_prime_bound": mean["gap"] / np.sqrt(mean["affinity_var"]) if mean["affinity_var"] > 0 else None})
    return out


def plot(rows: list[dict], path: Path) -> None:
    """The summary by size: the three standard deviations (left) and mean d′ with its bound (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["size"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("observed_var", "observed"), ("examples_var", "examples' noise"), ("affinity_var", "models' affinity")):
        left.plot(n, [np.sqrt(max(r[key], 0.0)) for r in rows], marker="o", label=label)
    left.set(xlabel="fingerprint size n", ylabel="within-group sd of the score", ylim=(0, None))
    left.legend(frameon=False)
    right.plot(n, [r["d_prime"] for r in rows], marker="o", label="mean d′")
    right.plot(n, [r["d_prime_bound"] if r["d_prime_bound"] is not None else np.nan for r in rows], marker="s",
               linestyle="--", label="bound: gap / sd affinity")
    right.axhline(4.3, color="grey", linewidth=0.8, linestyle=":", label="needed for 19 of 20 draws")
    right.set(xlabel="fingerprint size n", ylabel="d′", ylim=(0, None))
    right.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_md(payload: dict, path: Path) -> None:
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    plot(summary_rows(runs), path.with_suffix(".png"))
    lines = ["# What limits separation at 100 examples, and how it grows with the fingerprint's size (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each finished default study's fingerprint at other sizes n: the best n − ⌊0.75 n⌋ of the papers' pool and the "
             "best ⌊0.75 n⌋ of the source's mistakes by hard Confer, as the default keeps them (n = 100 is the study's own "
             "fingerprint), scored as the quickstart scores them (CAEAcc − CAEAcc on the 500-example control set) on the "
             "8 + 8 testing models; verdicts at the threshold refitted on the 12 calibration references. Goal met: AUC ≥ "
             "0.95 and margin > 0. Within-group standard deviation of the scores (pooled over surrogates and references): "
             "observed, the part the examples' own noise explains (answers independent across examples given the group; "
             "shrinks as 1/√n) and the rest, the models' affinity (√ of observed − examples' variance; it does not shrink "
             "with n). `d′ bound`: mean gap / √(mean affinity variance), what no larger fingerprint of these examples passes.",
             "", "| size n | queries per suspect | goal met | mean gap | mean d′ | stolen: surrogates, references | sd observed | "
             "sd examples' noise | sd affinity | d′ bound |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary_rows(runs):
        aff = f"{np.sqrt(s['affinity_var']):.3f}" if s["affinity_var"] > 0 else "0"
        bound = f"{s['d_prime_bound']:.1f}" if s["d_prime_bound"] is not None else "–"
        lines.append(f"| {s['size']} | {s['size'] + 500} | {s['goal_met']} / {s['studies']} | {s['gap']:.3f} | {s['d_prime']:.2f} | "
                     f"{s['surrogates_stolen']} / {8 * s['studies']}, {s['references_stolen']} / {8 * s['studies']} | "
                     f"{np.sqrt(s['observed_var']):.3f} | {np.sqrt(s['examples_var']):.3f} | {aff} | {bound} |")
    lines += ["", f"![the score's spread and d′ by fingerprint size]({path.with_suffix('.png').name})"]
    ds = (2.5, 3.0, 3.5, 3.8, 4.2, 4.5, 5.0)
    lines += ["", "How often the margin is positive at a given d′ with 8 + 8 normal scores (simulated, 200,000 draws): " +
              ", ".join(f"{d} → {p_separated(d):.2f}" for d in ds) + "."]
    cov = covariate_rows(runs)
    cols = [k for k in cov[0] if k != "covariate"]
    lines += ["", "What the affinity is not: each covariate's correlation with the score across a study's 8 surrogates (or 8 "
              "references), averaged over the studies, with the fingerprint at 100 and at 400 examples. Measured on the test "
              "split's 10,000 clean images from top-1 answers: accuracy; fidelity (agreement with the source); agreement with "
              "the source's wrong label where it errs; agreement with the training references' shared wrong label where the "
              "source is right.", "", "| covariate | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    lines += [f"| {r['covariate']} | " + " | ".join(f"{r[c]:+.2f}" if r[c] is not None else "–" for c in cols) + " |" for r in cov]
    pc = {k: float(np.mean([r["pairs"][k] for r in runs])) for k in ("same_pair", "other_pairs", "share_same", "distinct")}
    excess = pc["share_same"] * (pc["same_pair"] - pc["other_pairs"])
    lines += ["", f"Examples of one kind: in the default's 100 (mean of the studies; {pc['distinct']:.1f} distinct (true class, key) "
              f"pairs), two examples' answers covary across a group's models by {pc['same_pair']:.4f} when they share the pair "
              f"and by {pc['other_pairs']:.4f} when they do not; {pc['share_same']:.3f} of the example pairs share it, so the "
              f"same-pair excess is {excess / (excess + pc['other_pairs']):.0%} of the answers' covariance between examples (the raw "
              f"answers', before the control takes out each model's overall level; `pair_cap.py` tries capping it)."]
    lines += ["", "How much closer to the source the thieves are on clean images: mean accuracy and fidelity (agreement with "
              "the source) on the test split per kind of testing model, over the studies (lowest fidelity in brackets).", "",
              "| testing models | accuracy | fidelity |", "| --- | --- | --- |"]
    kinds: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        for i, name in enumerate(r["models"]):
            parts = name.split("-")  # test-<role>-<arch>-<labels>-<k>
            kind = f"{parts[1]} {parts[2]}" + (f" {parts[3]}" if parts[1] == "surrogate" else "")
            kinds.setdefault(kind, []).append((r["covariates"]["accuracy"][i], r["covariates"]["fidelity"][i]))
    for kind, v in sorted(kinds.items(), key=lambda kv: (kv[0].split()[1], kv[0])):
        a = np.array(v)
        lines.append(f"| {kind} | {a[:, 0].mean():.3f} | {a[:, 1].mean():.3f} ({a[:, 1].min():.3f}) |")
    lines += ["", "Per study: AUC / margin / d′ at each size.", "",
              "| study | " + " | ".join(str(n) for n in SIZES) + " |", "| --- |" + " --- |" * len(SIZES)]
    for r in runs:
        cells = [f"{v['roc_auc']:.3f} / {v['margin']:+.3f} / {v['d_prime']:.2f}" if (v := r["sizes"].get(str(n))) else "–"
                 for n in SIZES]
        lines.append(f"| {r['study']} | " + " | ".join(cells) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="fingerprint_size.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md)


if __name__ == "__main__":
    sys.exit(main())
