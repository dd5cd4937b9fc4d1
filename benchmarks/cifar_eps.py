"""CIFAR-10 on the CPU at smaller budgets ε (issue: separation).

    python benchmarks/cifar_eps.py --seeds 0 --eps 0.01 0.015 0.02 --data-dir ../shared/data/cifar-10-batches-py
    python benchmarks/cifar_eps.py --preset cifar10-cpu-hour --seeds 0 --eps 0.025 --data-dir ...

The `cifar10-cpu` preset's first setting (ε = 0.03, control at ε = 0.06) did not separate: on its weak
models (source 71 % test accuracy) 99.7 % of CEM's candidates fooled the source, and the control
transferred to almost every model. Each variant here reruns that whole study (`run_quickstart`,
what `conferprint quickstart --preset cifar10-cpu` runs; same source, same 6 + 8 training and 8 + 8
held-out testing models, reused from the preset's zoo in benchmarks/runs/cifar10-cpu-seed<N>/zoo,
hard-linked, trained there first — with the preset as it then is — when absent) with CEM and the
plain PGD baseline at ε and the control set at 2ε (the default preset's ratio, 0.05 and 0.1). Each run lives in
benchmarks/runs/cifar10-cpu-eps<ε>-seed<N>/. Reported per run: the calibrated score (CAEAcc −
control, the preset's) and raw CAEAcc, as AUC and margin, per-architecture margins, the PGD
baseline, and CEM's adversarial rate. Writes benchmarks/results/cifar-eps.json and
docs/results/cifar-eps.md. ``--preset cifar10-cpu-hour`` does the same on that preset's study
(benchmarks/runs/cifar10-cpu-hour-seed<N>, made by `quickstart_seeds.py --preset cifar10-cpu-hour`), into
runs/cifar10-cpu-hour-eps<ε>-seed<N>/ and cifar-eps-cifar10-cpu-hour.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import PRESETS, run_quickstart

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble_families import _summary, fmt, open_log, per_model_lines, put_run  # noqa: E402  (the same summary, log and report parts)
from quickstart_seeds import from_nothing  # noqa: E402  (the benchmarks share one cost rule)

ROOT = Path(__file__).resolve().parents[1]


CIFAR_PRESETS = ("cifar10-cpu", "cifar10-cpu-hour")


def config_for(eps: float, preset: str = "cifar10-cpu"):
    base = PRESETS[preset]
    return replace(base, preset=f"{preset}-eps{eps:g}",
                   cem=replace(base.cem, eps=eps),
                   pgd=replace(base.pgd, eps=eps, step_size=eps / 10),
                   control=replace(base.control, eps=2 * eps, step_size=2 * eps / 10))


def run(eps: float, seed: int, data_dir, preset: str = "cifar10-cpu") -> dict:
    base = ROOT / "benchmarks" / "runs" / f"{preset}-seed{seed}"
    out = ROOT / "benchmarks" / "runs" / f"{preset}-eps{eps:g}-seed{seed}"
    if not (base / "zoo").exists():  # the preset's own study first: its models are every variant's models
        run_quickstart(base, PRESETS[preset], seed=seed, data_dir=data_dir, progress=False)
    if not (out / "zoo").exists():
        shutil.copytree(base / "zoo", out / "zoo", copy_function=os.link)
    res = run_quickstart(out, config_for(eps, preset), seed=seed, data_dir=data_dir, progress=False)
    stats = res["fingerprint"]["stats"]
    own = json.loads((base / "results.json").read_text())  # the same models at the preset's own ε
    return {"preset": {k: v for k, v in _summary(own).items() if k != "models"},
            "preset_eps": own["config"]["cem"]["eps"], "preset_control_eps": own["config"]["control"]["eps"],
            "eps": eps, "control_eps": 2 * eps, "seed": seed, "from_nothing_seconds": from_nothing(res),
            "cem_seconds": stats["seconds"], "adversarial_rate": stats.get("adversarial_rate"),
            "source_test_acc": res["source"]["test_acc"], "pgd": res["baselines"].get("pgd"), **_summary(res)}


def write_md(payload: dict, path: Path) -> None:
    f = fmt
    preset = payload.get("preset", "cifar10-cpu")
    lines = [f"# CIFAR-10 on the CPU: the `{preset}` study at other ε", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             f"Same source ({PRESETS[preset].source_arch}), the same training and 8 + 8 held-out testing models per seed; CEM and the "
             "PGD baseline at ε, the control set at 2ε. 'calibrated' = CAEAcc(fingerprint) − CAEAcc(control), the "
             "preset's score; 'raw' = CAEAcc. Margin = min(surrogate) − max(reference).", "",
             "| seed | ε | control ε | CEM adversarial rate | calibrated AUC | calibrated margin | raw AUC | raw margin | PGD AUC | from nothing s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["runs"]:
        p = r.get("preset")
        if p and r is next(x for x in payload["runs"] if x["seed"] == r["seed"]):
            lines.append(f"| {r['seed']} | {r['preset_eps']:g} (preset run) | {r['preset_control_eps']:g} | – | "
                         f"{f(p['calibrated'], 'roc_auc')} | "
                         f"{f(p['calibrated'], 'margin')} | {f(p['raw'], 'roc_auc')} | {f(p['raw'], 'margin')} | | |")
        lines.append(f"| {r['seed']} | {r['eps']:g} | {r['control_eps']:g} | {r['adversarial_rate']:.3f} | "
                     f"{f(r['calibrated'], 'roc_auc')} | {f(r['calibrated'], 'margin')} | {f(r['raw'], 'roc_auc')} | "
                     f"{f(r['raw'], 'margin')} | {f(r['pgd'], 'roc_auc')} | {r['from_nothing_seconds']:.0f} |")
    lines += per_model_lines(payload["runs"], "Per held-out model, raw CAEAcc / control CAEAcc",
                             lambda r: f"seed {r['seed']}, ε {r['eps']:g}",
                             lambda m: f"{m['cae_acc']:.2f}/{m['control']:.2f}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.015, 0.02])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", choices=CIFAR_PRESETS, default="cifar10-cpu")
    args = p.parse_args(argv)
    command = "python benchmarks/cifar_eps.py " + " ".join(argv if argv is not None else sys.argv[1:])
    stem = "cifar-eps" if args.preset == "cifar10-cpu" else f"cifar-eps-{args.preset}"
    path = ROOT / "benchmarks" / "results" / f"{stem}.json"
    payload = open_log(path, command)  # runs of earlier commands are kept; a rerun replaces its row
    payload["preset"] = args.preset
    for seed in args.seeds:
        for eps in args.eps:
            put_run(payload, run(eps, seed, args.data_dir, args.preset), lambda x: (x["seed"], x["eps"]))
            atomic_write_text(path, json.dumps(payload, indent=2))
            write_md(payload, ROOT / "docs" / "results" / f"{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
