"""CIFAR-10 at the paper's scale: which CEM lever separates held-out surrogates from references? (issue:
separation; needs a GPU)

    python benchmarks/cifar_levers.py --seed 0 --device cuda --bf16 --data-dir PATH/cifar-10-batches-py
    python benchmarks/cifar_levers.py --report          # the JSON and markdown from the runs' saved candidates

The `cifar10` preset's study (source, 20 training models, 12 testing models on D2, the PGD baseline and
the control set) is trained, or resumed, in benchmarks/runs/cifar10-levers-seed<N>/ (``--source-epochs``
overrides the preset's, to bring the source nearer the paper's 89 %). Then every *pool* below optimises
its candidates exactly as `CEM.generate` does (same candidate order, same random stream; under bf16
autocast with ``--bf16``, as the quickstart runs CEM), and stores per candidate: the source's label, the
hard Confer that CEM ranks by, the training members' probabilities of the source's label, and which
testing models agree with the source — ``levers/<pool>.npz`` in the run folder, so a rerun skips it.

At stop 16 (§8 of docs/results/separation-summary.md) 3,882 of 4,096 candidates reached τ = 0.5 and the
100 kept all had training Confer 1.0: the pick among them was by position. The levers:

- pools: the papers' candidates (``correct``) or the source's own mistakes on D1 (``errors``, the
  Fashion-MNIST default's other half); ε 0.025 (the paper's) or 0.01; 100 or 25 Adam steps (the preset's
  CEM is ``correct-e0.025-s25`` since stop 24, ``correct-e0.025`` before);
- rankings of the kept candidates: ``hard`` (hard Confer, ties by position: the preset's pick),
  ``hard+soft`` (ties broken by soft Confer: the members' mean probability of the source's label over the
  surrogates times one minus over the references), ``soft`` (soft Confer alone);
- fingerprints: 100 from ``correct``; ``mixed`` = 50 from each pool (the default preset's).

Each fingerprint is scored on the 12 testing models as the quickstart scores them: CAEAcc, and CAEAcc minus
CAEAcc on the study's control set (the preset's score). Nothing is chosen on the testing models here.
Writes benchmarks/results/cifar-levers-cuda.json and docs/results/cifar-levers-cuda.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import CIFAR10, CONTROL_NAME, PRESETS, make_fingerprint, prepare_study, versions
from conferprint.fingerprint.ensemble import select_conferrable
from conferprint.training import predict_labels, predict_logits
from conferprint.verify import separation_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import d_prime, load_arrays, save_arrays  # noqa: E402
from candidate_signals import agreement, power as held_out_power  # noqa: E402  (the same answers and power)

ROOT = Path(__file__).resolve().parents[1]
STEM = "cifar-levers-cuda"
SIZE = CIFAR10.cem.size
# pool name -> CEM overrides of the preset's (ε 0.025, the papers' candidates; 100 steps until stop 24, 25 since)
POOLS = {
    "correct-e0.025": {"steps": 100},
    "errors-e0.025": {"candidates": "errors", "steps": 100},
    "correct-e0.01": {"eps": 0.01, "steps": 100},
    "errors-e0.01": {"candidates": "errors", "eps": 0.01, "steps": 100},
    "correct-e0.025-s25": {"steps": 25},
}
RANKINGS = ("hard", "hard+soft", "soft")
RANDOM_DRAWS = 200  # random picks of 100 kept candidates per pool, against which the rankings are read
RANDOM_POOLS = ("correct-e0.025", "correct-e0.025-s25")  # the preset's CEM before and since stop 24


def run_dir(preset: str, seed: int) -> Path:
    return ROOT / "benchmarks" / "runs" / f"{preset}-levers-seed{seed}"


def optimise_pool(study, cem, seed: int) -> dict[str, np.ndarray]:
    """``cem``'s candidates optimised as `CEM.generate` does, with every per-candidate signal."""
    src = study.source.model
    surr = [m.model for m in study.training_role("surrogate")]
    refs = [m.model for m in study.training_role("reference")]
    pool = cem.candidates
    optimiser = cem if pool == "correct" else replace(cem, target="source", beta=0.0)
    x, y = study.x1, study.y1
    gen = torch.Generator().manual_seed(seed)
    right = predict_labels(src, x) == y
    eligible = (right if pool == "correct" else ~right).nonzero().squeeze(1)
    order = eligible[torch.randperm(len(eligible), generator=gen)][: cem.max_candidates]
    t0 = time.perf_counter()
    xs, ts, keeps, hards = [], [], [], []
    for s in range(0, len(order), cem.batch_size):
        idx = order[s: s + cem.batch_size]
        xa = optimiser.attack(src, surr, refs, x[idx], y[idx], gen).detach()
        keep, t, hard = select_conferrable(src, surr, refs, xa, y[idx], cem.tau)
        xs.append(xa); ts.append(t); keeps.append(keep); hards.append(hard)
    xa, t = torch.cat(xs), torch.cat(ts)
    if xa.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0

    def probs_of_t(models) -> np.ndarray:  # (models, N): each member's probability of the source's label
        return torch.stack([F.softmax(predict_logits(m, xa).float(), 1).gather(1, t[:, None].to(xa.device)).squeeze(1)
                            for m in models]).cpu().numpy()

    return {"y": y[order].cpu().numpy(), "t": t.cpu().numpy(), "keep": torch.cat(keeps).cpu().numpy(),
            "hard": torch.cat(hards).cpu().numpy(), "p_surr": probs_of_t(surr).astype(np.float16),
            "p_ref": probs_of_t(refs).astype(np.float16),
            "agree": agreement(study.testing, xa, t).astype(bool),
            "seconds": np.array(seconds), "candidates": np.array(len(order)),
            "x_adv": xa.cpu(), "origin": order.cpu().numpy()}  # the optimised inputs and their indices into x


def rank_key(c: dict[str, np.ndarray], ranking: str) -> np.ndarray:
    soft = c["p_surr"].astype(np.float64).mean(0) * (1 - c["p_ref"].astype(np.float64).mean(0))
    hard = c["hard"].astype(np.float64)
    # hard Confer moves in steps of 1/(|S|·|R|) ≥ 0.01 here; soft Confer ∈ [0, 1] only breaks its ties
    return {"hard": hard, "hard+soft": hard + 1e-3 * soft, "soft": soft}[ranking]


def pick(c: dict[str, np.ndarray], ranking: str, n: int) -> np.ndarray:
    """The ``n`` kept candidates (adversarial, Confer ≥ τ) ``ranking`` puts first, ties by position."""
    kept = np.flatnonzero(c["keep"])
    key = rank_key(c, ranking)[kept]
    return kept[np.argsort(-key, kind="stable")[:n]]


def signals(c: dict[str, np.ndarray], is_surr: np.ndarray) -> dict:
    """Over the kept candidates: how each ranking's signal correlates with the candidate's held-out power (share
    of the testing surrogates agreeing with the source minus share of the testing references), and the mean power
    of every kept candidate and of the ``SIZE`` each ranking puts first."""
    kept = np.flatnonzero(c["keep"])
    power = held_out_power(c["agree"].astype(np.float64), is_surr)
    out = {"mean_power_kept": float(power[kept].mean()) if len(kept) else None}
    for ranking in RANKINGS:
        key = rank_key(c, ranking)[kept]
        out[ranking] = {"corr": float(np.corrcoef(key, power[kept])[0, 1]) if len(kept) > 2 and key.std() > 0 else None,
                        "top_power": float(power[pick(c, ranking, SIZE)].mean()) if len(kept) else None}
    return out


def score(agree: np.ndarray, ctl: np.ndarray, is_surr: np.ndarray) -> dict:
    """``agree`` (testing models, examples) scored as a fingerprint: raw CAEAcc and CAEAcc − control."""
    raw = agree.mean(1)
    out = {"n": int(agree.shape[1])}
    for name, s in (("raw", raw), ("calibrated", raw - ctl)):
        st = separation_stats(s[is_surr].tolist(), s[~is_surr].tolist())
        st["gap"], st["d_prime"] = d_prime(s[is_surr], s[~is_surr])
        st["scores"] = [round(float(v), 4) for v in s]
        out[name] = st
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "p10": float(np.percentile(values, 10)),
            "p90": float(np.percentile(values, 90))}


def fingerprints(cands: dict[str, dict], ctl: np.ndarray, is_surr: np.ndarray) -> dict[str, dict]:
    """Every papers'-pool fingerprint under every ranking, ``mixed`` with the mistakes pool of the same settings where
    it was run, and random picks of the preset's pools (``RANDOM_POOLS``)."""
    out = {}
    rng = np.random.default_rng(0)  # a fixed stream: the report is the same on every rerun
    for correct in (p for p in POOLS if p.startswith("correct-") and p in cands):
        errors = correct.replace("correct-", "errors-", 1)
        kinds = [(correct, [(correct, SIZE)])]
        if errors in cands:
            kinds.append((correct.replace("correct-", "mixed-", 1), [(correct, SIZE - SIZE // 2), (errors, SIZE // 2)]))
        for ranking in RANKINGS:
            for name, parts in kinds:
                agree = np.concatenate([cands[p]["agree"][:, pick(cands[p], ranking, n)] for p, n in parts], axis=1)
                out[f"{name}/{ranking}"] = score(agree, ctl, is_surr)
        if correct not in RANDOM_POOLS:
            continue
        # the same pool's kept candidates picked at random: what a ranking is worth over chance
        c = cands[correct]
        kept = np.flatnonzero(c["keep"])
        draws = [score(c["agree"][:, rng.choice(kept, min(SIZE, len(kept)), replace=False)], ctl, is_surr)
                 for _ in range(RANDOM_DRAWS)]
        out[f"{correct}/random"] = {k: {stat: spread([d[k][stat] for d in draws]) for stat in ("roc_auc", "margin", "d_prime")}
                                    for k in ("raw", "calibrated")}
    return out


def run(args) -> None:
    # the levers are judged by AUC, margin and d′, which the verdict's threshold does not touch: no calibration models
    config = replace(PRESETS[args.preset], calibration=(), threshold=0.0)
    if args.source_epochs is not None:
        config = replace(config, source_epochs=args.source_epochs)
    out = run_dir(args.preset, args.seed)
    (out / "levers").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    study = prepare_study(config, out / "zoo", seed=args.seed, data_dir=args.data_dir, device=args.device, amp=args.bf16)
    study_s = time.perf_counter() - t0
    nc = study.data.num_classes
    ctl_fp, _ = make_fingerprint(config.control or config.pgd, CONTROL_NAME, out, study.source, [], [], study.x1, study.y1,
                                  args.seed + 100, nc, False)
    pgd_fp, _ = make_fingerprint(config.pgd, "fingerprint-pgd", out, study.source, [], [], study.x1, study.y1,
                                  args.seed, nc, False)

    meta = {"preset": args.preset, "seed": args.seed, "bf16": args.bf16, "source_epochs": config.source_epochs,
            "source_test_acc": study.source.meta["test_acc"], "study_seconds_this_run": study_s,
            "recorded_model_seconds": {k: sum(m.meta.get("train_seconds", 0) for m in v) for k, v in
                                       (("source", [study.source]), ("training", study.training), ("testing", study.testing))},
            "testing": [{"name": m.name, "arch": m.arch, "role": m.meta["role"], "test_acc": m.meta["test_acc"]}
                        for m in study.testing],
            "training_test_acc": {m.name: m.meta["test_acc"] for m in study.training},
            "control_agreement": agreement(study.testing, ctl_fp.inputs, ctl_fp.keys).mean(1).tolist(),
            "pgd_agree": agreement(study.testing, pgd_fp.inputs, pgd_fp.keys).astype(bool).tolist(),
            "versions": versions()}
    atomic_write_text(out / "levers" / "meta.json", json.dumps(meta, indent=2))
    cem = replace(config.cem, bf16=True) if args.bf16 else config.cem
    for name in args.pools:
        path = out / "levers" / f"{name}.npz"
        if path.exists():
            continue
        c = optimise_pool(study, replace(cem, **POOLS[name]), args.seed)
        save_arrays(path, {k: v for k, v in c.items() if k != "x_adv"})  # the inputs themselves are not needed again


def load_run(d: Path) -> tuple[dict, dict[str, dict]]:
    meta = json.loads((d / "levers" / "meta.json").read_text())
    cands = {}
    for name in POOLS:
        p = d / "levers" / f"{name}.npz"
        if p.exists():
            cands[name] = load_arrays(p)
    return meta, cands


def report(dirs: list[Path], command: str, note: str | None = None) -> dict:
    runs = []
    for d in dirs:
        meta, cands = load_run(d)
        is_surr = np.array([m["role"] == "surrogate" for m in meta["testing"]])
        ctl = np.array(meta["control_agreement"])
        pgd = score(np.array(meta["pgd_agree"], dtype=bool), ctl, is_surr)
        pools = {k: {"candidates": int(c["candidates"]), "adversarial": int((c["t"] != c["y"]).sum()),
                     "kept_tau": int(c["keep"].sum()), "confer_1": int((c["keep"] & (c["hard"] >= 1 - 1e-9)).sum()),
                     "seconds": float(c["seconds"]), "signals": signals(c, is_surr)} for k, c in cands.items()}
        runs.append({**{k: meta[k] for k in ("seed", "bf16", "source_epochs", "source_test_acc", "testing",
                                             "training_test_acc", "recorded_model_seconds")},
                     "pools": pools, "pgd": pgd, "fingerprints": fingerprints(cands, ctl, is_surr),
                     "versions": meta["versions"]})
    return {"command": command, "note": note, "runs": runs}


def num(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def spread_cell(x: dict, stat: str, fmt: str) -> str:
    return f"{format(x[stat]['median'], fmt)} [{format(x[stat]['p10'], fmt)}, {format(x[stat]['p90'], fmt)}]"


def write_md(payload: dict, path: Path) -> None:
    lines = ["# CIFAR-10 at the paper's scale: CEM levers on one GPU", "", f"Command: `{payload['command']}`", "",
             *([payload["note"], ""] if payload.get("note") else []),
             "Each run: the `cifar10` preset's study (ResNet-20 source on D1; 20 training models; 12 testing models "
             "on D2: surrogates ResNet-20 soft/hard, ResNet-56 hard, VGG-19-BN soft/hard, MobileNetV2 hard; references "
             "ResNet-20 ×2, ResNet-56, VGG-19-BN, MobileNetV2 ×2). Score = CAEAcc − CAEAcc on the study's 500-example "
             "PGD control set (ε 0.05); raw = CAEAcc. d′ = (mean surrogate − mean reference) / pooled SD.", ""]
    for r in payload["runs"]:
        lines += [f"## Seed {r['seed']}: source {r['source_epochs']} epochs, test accuracy {r['source_test_acc']:.4f}", "",
                  "| pool | candidates | adversarial | kept (Confer ≥ τ) | Confer 1.0 | optimisation s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for k, p in r["pools"].items():
            lines.append(f"| {k} | {p['candidates']} | {p['adversarial']} | {p['kept_tau']} | {p['confer_1']} | {p['seconds']:.1f} |")
        lines += ["", "Held-out power of a candidate: share of the 6 testing surrogates agreeing with the source minus share of "
                  "the 6 testing references. Over each pool's kept candidates: the power of all of them, and per ranking "
                  "its correlation with the power and the mean power of the 100 it puts first.", "",
                  "| pool | mean power, kept | " + " | ".join(f"{k}: corr / top-100 power" for k in RANKINGS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in RANKINGS) + " |"]
        for k, p in r["pools"].items():
            g = p["signals"]
            cells = [f"{num(g[x]['corr'], '+.3f')} / {num(g[x]['top_power'])}" for x in RANKINGS]
            lines.append(f"| {k} | {num(g['mean_power_kept'])} | " + " | ".join(cells) + " |")
        lines += ["", "| fingerprint / ranking | AUC | margin | d′ | raw AUC | raw margin | raw d′ |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for k, f in [("plain PGD (baseline)", r["pgd"]), *r["fingerprints"].items()]:
            c, w = f["calibrated"], f["raw"]
            if k.endswith("/random"):  # median [10th–90th percentile] over the random picks
                lines.append(f"| {k} ({RANDOM_DRAWS} draws: median [p10, p90]) | {spread_cell(c, 'roc_auc', '.3f')} | "
                             f"{spread_cell(c, 'margin', '+.3f')} | {spread_cell(c, 'd_prime', '.2f')} | "
                             f"{spread_cell(w, 'roc_auc', '.3f')} | {spread_cell(w, 'margin', '+.3f')} | "
                             f"{spread_cell(w, 'd_prime', '.2f')} |")
                continue
            lines.append(f"| {k} | {c['roc_auc']:.3f} | {c['margin']:+.3f} | {c['d_prime']:.2f} | {w['roc_auc']:.3f} | "
                         f"{w['margin']:+.3f} | {w['d_prime']:.2f} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cifar10",
                   help="the study's preset (cifar10; tiny for a smoke run of the script on a CPU)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--source-epochs", type=int, default=None)
    p.add_argument("--pools", nargs="+", choices=sorted(POOLS), default=list(POOLS))
    p.add_argument("--report", action="store_true", help="only write the JSON and markdown from the saved runs")
    p.add_argument("--runs", nargs="+", type=Path, default=None, help="run folders to report (default: every seed's)")
    p.add_argument("--note", default=None, help="a note stored with the report (e.g. how the runs were made)")
    args = p.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    if "--note" in given:  # the note is stored beside the command, not inside it
        del given[given.index("--note"): given.index("--note") + 2]
    command = "python benchmarks/cifar_levers.py " + " ".join(given)
    if not args.report:
        run(args)
    dirs = args.runs or sorted(d for d in (ROOT / "benchmarks" / "runs").glob(f"{args.preset}-levers-seed*")
                               if (d / "levers" / "meta.json").exists())
    payload = report(dirs, command, args.note)
    stem = STEM if args.preset == "cifar10" else f"{args.preset}-levers"
    atomic_write_text(ROOT / "benchmarks" / "results" / f"{stem}.json", json.dumps(payload, indent=2))
    write_md(payload, ROOT / "docs" / "results" / f"{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
