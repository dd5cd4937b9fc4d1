"""Two series of quickstart draws on the same models, paired per seed, and the rule of separation-summary §27/§34.

    python benchmarks/series_compare.py --base quickstart-seeds-current --variant quickstart-seeds-eps0.025-current \
        --earlier separation-fashion-mnist-eps0.025:cem-pool:cem-pool-eps0.025 --out series-eps0.025-current

``--base`` and ``--variant`` name result files of ``quickstart_seeds.py`` (``benchmarks/results/<name>.json``); the
variant's runs must be of the same seeds' models (``--cem-eps``, ``--cem-steps``, ``--cem-candidates`` series). Per
seed: calibrated AUC, margin, d′, goal met (AUC ≥ 0.95 and margin > 0) and the verdicts at each run's fitted threshold.
``--earlier FILE:BASE:VARIANT`` adds a separation.py result's totals (its ``across_seeds`` rows) to a pooled count.

The rule (written in §34 before any of its draws was scored): the variant replaces the default only if, on the series'
draws, it meets the goal on more draws and calls no more references stolen, and both hold again over the pooled draws.
Writes benchmarks/results/<out>.json and docs/results/<out>.md.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from conferprint._io import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart_seeds import summary  # noqa: E402  (a series' totals, as quickstart_seeds writes them)

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")


def load(name: str) -> dict:
    if not NAME.fullmatch(name):
        raise SystemExit(f"not a result name: {name!r}")
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no such result")
    return json.loads(path.read_text())


def row(run: dict) -> dict:
    return {"roc_auc": run["roc_auc"], "margin": run["margin"], "d_prime": run.get("d_prime"),
            "goal_met": run["goal_met"], "surrogates_called_stolen": run["decisions"]["true_positives"],
            "references_called_stolen": run["decisions"]["false_positives"],
            "threshold": run.get("threshold"), "eps": run["eps"]}


def wins(base: dict, variant: dict) -> bool:
    """The rule's two conditions: more draws with the goal met, no more references called stolen."""
    return variant["goal_met"] > base["goal_met"] and variant["references_called_stolen"] <= base["references_called_stolen"]


def compare(base: dict, variant: dict, earlier: list[tuple[dict, str, str]]) -> dict:
    by_seed = {r["seed"]: r for r in variant["runs"]}
    seeds = [r["seed"] for r in base["runs"] if r["seed"] in by_seed]
    if not seeds:
        raise SystemExit("the two series share no seed")
    base_by_seed = {r["seed"]: r for r in base["runs"]}
    pairs = [{"seed": s, "base": row(base_by_seed[s]), "variant": row(by_seed[s])} for s in seeds]
    new = {"base": summary([base_by_seed[s] for s in seeds]), "variant": summary([by_seed[s] for s in seeds])}
    counted = ("draws", "goal_met", "surrogates_called_stolen", "references_called_stolen")
    pooled = {k: {c: new[k][c] for c in counted} for k in new}  # what the earlier results' totals also count
    for res, b, v in earlier:
        for key, name in (("base", b), ("variant", v)):
            t = res["across_seeds"][name]
            for c, their in zip(counted, ("seeds", "ctl_separated", "ctl_stolen_surrogates", "ctl_stolen_references")):
                pooled[key][c] += t[their]
    paired = [p["variant"]["d_prime"] - p["base"]["d_prime"] for p in pairs
              if p["variant"]["d_prime"] is not None and p["base"]["d_prime"] is not None]
    change = None
    if len(paired) >= 2:
        change = {"mean": statistics.fmean(paired), "se": statistics.stdev(paired) / len(paired) ** 0.5,
                  "up_on": sum(d > 0 for d in paired), "of": len(paired)}
    return {"pairs": pairs, "new": new, "pooled": pooled, "paired_d_prime_change": change,
            "new_draws_condition": wins(new["base"], new["variant"]),
            "pooled_condition": wins(pooled["base"], pooled["variant"]) if earlier else None,
            "adopt": wins(new["base"], new["variant"]) and (not earlier or wins(pooled["base"], pooled["variant"]))}


def write_md(payload: dict, path: Path) -> None:
    f = lambda r: (f"{r['roc_auc']:.3f} / {r['margin']:+.3f} / {r['d_prime']:.2f} "  # noqa: E731
                   f"({r['surrogates_called_stolen']}, {r['references_called_stolen']}){' met' if r['goal_met'] else ''}")
    c = payload["comparison"]
    lines = [f"# {payload['base']} against {payload['variant']}", "", f"Command: `{payload['command']}`", "",
             "Calibrated AUC / margin / d′ (surrogates, references called stolen at the fitted threshold); met = AUC ≥ "
             "0.95 and margin > 0.", "", "| seed | base | variant |", "| --- | --- | --- |"]
    lines += [f"| {p['seed']} | {f(p['base'])} | {f(p['variant'])} |" for p in c["pairs"]]

    def tot(t: dict) -> str:
        dp = t.get("mean_d_prime")
        return (f"{t['goal_met']} of {t['draws']} met" + (f", mean d′ {dp:.2f}" if dp is not None else "")
                + f", stolen {t['surrogates_called_stolen']} surrogates and {t['references_called_stolen']} references")

    lines += ["", f"- New draws: base {tot(c['new']['base'])}; variant {tot(c['new']['variant'])}."]
    if c["paired_d_prime_change"]:
        ch = c["paired_d_prime_change"]
        lines.append(f"- Paired change of d′: {ch['mean']:+.2f} ± {ch['se']:.2f} (up on {ch['up_on']} of {ch['of']}).")
    if c["pooled_condition"] is not None:
        lines.append(f"- Pooled with {', '.join(payload['earlier'])}: base {tot(c['pooled']['base'])}; variant "
                     f"{tot(c['pooled']['variant'])}.")
    lines.append(f"- The rule: on the new draws {'met' if c['new_draws_condition'] else 'not met'}"
                 + ("" if c["pooled_condition"] is None else
                    f", pooled {'met' if c['pooled_condition'] else 'not met'}")
                 + f"; **{'adopt' if c['adopt'] else 'the default stays'}**.")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--earlier", nargs="*", default=[], metavar="FILE:BASE:VARIANT")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if not NAME.fullmatch(args.out):
        p.error(f"--out must be a plain name, got {args.out!r}")
    earlier = []
    for spec in args.earlier:
        parts = spec.split(":")
        if len(parts) != 3:
            p.error(f"--earlier takes FILE:BASE:VARIANT, got {spec!r}")
        res = load(parts[0])
        for name in parts[1:]:
            if name not in res.get("across_seeds", {}):
                p.error(f"{parts[0]} has no setting {name!r}")
        earlier.append((res, parts[1], parts[2]))
    payload = {"command": "python benchmarks/series_compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "base": args.base, "variant": args.variant, "earlier": args.earlier,
               "comparison": compare(load(args.base), load(args.variant), earlier)}
    atomic_write_text(ROOT / "benchmarks" / "results" / f"{args.out}.json", json.dumps(payload, indent=2))
    write_md(payload, ROOT / "docs" / "results" / f"{args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
