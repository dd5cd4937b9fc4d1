"""Fewer examples of one kind in the fingerprint: a cap per (true class, key) pair (issue: separation)

    python benchmarks/pair_cap.py --studies seed0 seed1 ... seed16 seed0-bf16 seed1-bf16 seed2-bf16

`fingerprint_size.py` split the spread of the score within a group into the examples' own noise and the models'
affinity (a model that follows the source on one example tends to on the others), which no larger fingerprint
removes and which bounds d′ near 3.8 at 100 examples (docs/results/separation-summary.md §23). Part of that
affinity sits in examples of one kind: the default keeps its 25 + 75 by Confer alone (`balance=False`), so its
100 examples fall on about 18 (true class, key) pairs, the largest holding 17 of the 75 mistakes, and two
examples of the same pair covary across a group's models about twice as much as two of different pairs. The
control set, spread over every class, does not remove a model's leaning on one pair. Settings, each pool's part
(25 of the papers' pool, 75 of the mistakes, as the default) picked in Confer order from the kept candidates:

- ``default``: the best by hard Confer;
- ``cap 10`` / ``cap 5`` / ``cap 3``: at most that many examples of one (true class, key) pair within a pool;
- ``pairs balanced``: round-robin over the pool's pairs, the best first within each (`balanced_pick` over pairs);
- ``keys balanced``: round-robin over the key classes, what `CEM(balance=True)` keeps.

Each is scored as the quickstart scores it (CAEAcc − CAEAcc on the control set, the threshold refitted on the
study's 12 calibration references), on the models and replayed pools of `mix_share.py` (nothing is retrained or
optimised again). Protocol, written down before any of these settings was scored: `held_back.protocol` — choose
on fp32 seeds 0–6 by goal met, then mean d′, excluding a setting that calls more of those studies' references
stolen than the default; confirm on the other thirteen studies (fp32 seeds 7–16, bf16 draws 0–2), adopting it
only if it meets the goal there at least as often as the default, with a higher mean d′ and at most one more
false accusation. Writes benchmarks/results/pair-cap-fashion-mnist.json and docs/results/pair-cap-fashion-mnist.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.fingerprint.ensemble import balanced_pick

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_studies, study_key, study_seed  # noqa: E402
from fingerprint_size import origins_labels, pair_covariance, pools_and_control  # noqa: E402
from held_back import protocol, protocol_lines  # noqa: E402  (the same pre-registered rule)
from mix_share import evaluate, settings_table, top  # noqa: E402

STEM = "pair-cap-fashion-mnist"
SETTINGS = ("default", "cap 10", "cap 5", "cap 3", "pairs balanced", "keys balanced")


def choose(hard: np.ndarray, keep: np.ndarray, pairs: np.ndarray, keys: np.ndarray, n: int, setting: str,
           num_classes: int = 10) -> np.ndarray | None:
    """``n`` kept candidates of one pool by ``setting`` (module docstring), as indices; None where too few."""
    ranked = top({"keep": keep, "hard": hard}, int(keep.sum()))  # every kept candidate, best Confer first
    if setting == "default":
        got = ranked[:n]
    elif setting.startswith("cap "):
        cap, seen, picked = int(setting.removeprefix("cap ")), {}, []
        for i in ranked:
            p = int(pairs[i])
            if seen.get(p, 0) < cap:
                seen[p] = seen.get(p, 0) + 1
                picked.append(i)
                if len(picked) == n:
                    break
        got = np.array(picked, dtype=np.int64)
    elif setting in ("pairs balanced", "keys balanced"):
        groups = pairs[ranked] if setting == "pairs balanced" else keys[ranked]
        ids = np.unique(groups, return_inverse=True)[1]  # dense ids; balanced_pick takes ranks as scores
        sub = balanced_pick(torch.as_tensor(ids), -torch.arange(len(ranked), dtype=torch.float64), n,
                            int(ids.max()) + 1 if len(ids) else 0, True)
        got = ranked[sub.numpy()]
    else:
        raise ValueError(f"unknown setting {setting!r}")
    return got if len(got) == n else None


def run_study(name: str, data_dir) -> dict:
    t0 = time.perf_counter()
    pools, ctl_answers, is_surr, cem, study = pools_and_control(name, data_dir)
    parts = {"correct": cem.size - cem.n_errors, "errors": cem.n_errors}
    labels = origins_labels(study, study_seed(name)[0], pools)
    ctl = ctl_answers.astype(np.float64).mean(1)
    settings, kinds = {}, {}
    for setting in SETTINGS:
        idx = {}
        for pool, n in parts.items():
            c = pools[pool]
            pair = labels[pool] * 10 + c["t"]  # (true class, key) as one number
            idx[pool] = choose(c["hard"], c["keep"], pair, c["t"], n, setting)
        if any(v is None for v in idx.values()):
            settings[setting] = None
            continue
        answers = np.concatenate([pools[p]["agree"][:, idx[p]] for p in parts], axis=1)
        pairs = [(int(labels[p][i]), int(pools[p]["t"][i])) for p in parts for i in idx[p]]
        settings[setting] = evaluate(answers, ctl, is_surr, len(is_surr))
        kinds[setting] = {**pair_covariance(answers[: len(is_surr)], pairs, is_surr), "distinct": len(set(pairs)),
                          "largest": max(pairs.count(p) for p in set(pairs)),
                          "train_confer": float(np.mean([pools[p]["hard"][i] for p in parts for i in idx[p]]))}
    return {"study": name, "settings": settings, "kinds": kinds, "seconds": time.perf_counter() - t0}


def write_md(payload: dict, path: Path) -> None:
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    lines = ["# A cap per (true class, key) pair in the fingerprint (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each finished default study's 25 + 75 picked from its replayed pools in Confer order with at most `cap c` "
             "examples of one (true class, key) pair per pool, round-robin over the pairs (`pairs balanced`) or over the "
             "key classes (`keys balanced`); `default` by Confer alone. Cells: AUC / margin / d′ on the 8 + 8 testing "
             "models; goal met: AUC ≥ 0.95 and margin > 0. Verdicts at the threshold refitted on the study's 12 "
             "calibration references. Kinds: distinct pairs and the largest pair's examples in the 100, the mean "
             "covariance across a group's models of two examples' answers with the same pair and with different pairs, "
             "and the 100's mean hard Confer on the training models (means of the studies).", ""]

    lines += settings_table(runs, SETTINGS)
    lines += ["", "| setting | distinct pairs | largest pair | cov same pair | cov other pairs | train Confer |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        ks = [r["kinds"][s] for r in runs if s in r["kinds"]]
        if ks:
            m = {k: float(np.nanmean([v[k] for v in ks])) for k in ks[0]}
            lines.append(f"| {s} | {m['distinct']:.1f} | {m['largest']:.1f} | {m['same_pair']:.4f} | {m['other_pairs']:.4f} | "
                         f"{m['train_confer']:.3f} |")
    proto = payload.get("protocol")
    if proto:
        lines += protocol_lines(proto, SETTINGS)
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="pair_cap.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md,
                       extra=lambda payload: payload.update(protocol=protocol(payload["runs"], SETTINGS, "default")))


if __name__ == "__main__":
    sys.exit(main())
