"""Asking each fingerprint example together with its one-pixel shifts (issue: separation)

    python benchmarks/shift_queries.py --studies seed21 seed22 ... seed91 --data-dir /usr/share/fashion-mnist

§23 split the spread of a group's scores into the examples' own noise and the models' affinity, about equal at 100
examples; a larger fingerprint cut the noise but took examples further down the Confer ranking, whose gap is
smaller, and d′ did not rise. §39–§42 ranked the candidates by their Confer over the example's eight one-pixel
shifts (``shift``), which raised the gap on the draws it was chosen on but not the goal rate on new ones. Not tried:
asking the suspect the shifted copies too, at verification. Each of the 100 examples then gives up to nine answers
instead of one, with the same examples (no lower-ranked ones), so the examples' noise may fall without the gap
falling as §23's larger fingerprint made it fall. §14's Gaussian noise on the queries (`held_out_levers.py`) undid
the adversarial examples for surrogates as much as for references; a one-pixel shift is a milder change, and the
``shift`` ranking keeps examples whose conferrability survives it.

Settings, each scored as the quickstart scores (CAEAcc − CAEAcc on the study's control set, the control unchanged;
threshold refitted on the study's 12 calibration references), the examples' keys fixed:

- ``default``: the study's own 100 examples, one query each (its fingerprint);
- ``default+q``: the same 100, each asked as itself and as each of its 8 one-pixel shifts (`SHIFTS`, zero-filled)
  on which the source gives the key (a shifted copy the source answers otherwise is not a query: the fingerprint
  stores the source's answers); a model's answer on the example is the share of those queries it answers with the
  key, and its CAEAcc the mean over the 100 examples (each example weighs the same);
- ``shift``: §42's ``shift`` ranking (`CEM(rank="shift")`), one query each (reported only);
- ``shift+q``: the ``shift`` ranking asked as in ``default+q``.

Protocol, committed before any setting was scored (the rules are `neighbourhood_wide.py`'s, §42's, applied to
these settings): **choice** (``choose_rule``) on the 55 draws of seeds 21–75 among ``default+q`` and ``shift+q``:
eligible if its tolerance-bound accusations are consistent with α (`neighbourhood_wide.p_accused` ≥ 0.05); the one
meeting the goal most often, then the higher mean d′. **Adoption** (``fresh_rule``) on the draws of seeds 76 onward
(§42's 16 new draws, 76–91, which chose nothing about queries, and any further draw of the shipping default from
nothing): it must meet the goal at least as often as ``default``, with a higher mean d′, catch at least as many
testing surrogates at the tolerance bound, and keep its accusations consistent with α on those draws and on every
draw from seed 21. Every draw scored is counted. Its cost, reported beside: up to 900 fingerprint queries per
suspect instead of 100 (the control's 500 unchanged).

Reuses each study's models, `mix_share.py`'s replayed pools (checked against the fingerprint) and §39's cached
``shift`` keys; nothing is retrained. The settings are procedures, not "what ships": since §43's adoption (stop 45)
the quickstart's own fingerprint is ``shift+q`` (`CEM(rank="shift", query_shifts=True)`; its draws from seed 92 on
give it back exactly), and ``default`` stays the hard-Confer ranking asked once, the default until then. The queries' answers on the unshifted examples are checked against the pools'.
Writes benchmarks/results/shift-queries-fashion-mnist.json and docs/results/shift-queries-fashion-mnist.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.fingerprint.ensemble import SHIFTS, shifted
from conferprint.fingerprint.scores import labels_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_studies, separated, study_key  # noqa: E402
from mix_share import POOLS, evaluate  # noqa: E402
from neighbourhood_rank import neighbourhood_keys, ranked, replayed  # noqa: E402
from neighbourhood_wide import HEAD, judged, row, choose_rule, fresh_rule, rule_lines  # noqa: E402

STEM = "shift-queries-fashion-mnist"
SETTINGS = ("default", "default+q", "shift", "shift+q")
CANDIDATES = ("default+q", "shift+q")


def shift_answers(source: torch.nn.Module, models, x: torch.Tensor, t: torch.Tensor,
                  shifts=SHIFTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``models``' answers on ``x`` (keys ``t``) asked with its ``shifts``: (models, examples) the share of
    the queries — ``x`` itself and each shift on which ``source`` gives the key — a model answers with the key;
    (models, examples) its answers on ``x`` alone (1 = the key); (examples,) the shifts kept as queries."""
    kept = [torch.ones(len(x), dtype=torch.bool)]
    hits = [labels_of(models, x) == t]
    for dy, dx in shifts:
        xs = shifted(x, dy, dx)
        kept.append(labels_of([source], xs)[0] == t)
        hits.append(labels_of(models, xs) == t)
    k = torch.stack(kept).double()  # (queries, examples)
    h = torch.stack(hits).double()  # (queries, models, examples)
    share = (h * k[:, None, :]).sum(0) / k.sum(0)
    return share.numpy(), h[0].numpy(), (k.sum(0) - 1).numpy()


def run_study(name: str, data_dir) -> dict:
    t0 = time.perf_counter()
    r = replayed(name, data_dir, neighbourhood_keys)
    folder, study, pools, keys, ctl, is_surr, sizes = r.folder, r.study, r.pools, r.keys, r.ctl, r.is_surr, r.sizes
    n = len(is_surr)
    models = [m.model for m in r.everyone]
    settings, kept_shifts = {}, {}
    for rank in ("default", "shift"):
        idx = {p: ranked(pools[p], None if rank == "default" else keys["shift"][p], sizes[p]) for p in POOLS}
        if any(len(idx[p]) < sizes[p] for p in POOLS):
            settings[rank] = settings[rank + "+q"] = None
            continue
        x = torch.from_numpy(np.concatenate([pools[p]["x_adv"][idx[p]] for p in POOLS]))
        t = torch.from_numpy(np.concatenate([pools[p]["t"][idx[p]] for p in POOLS])).long()
        plain = np.concatenate([pools[p]["agree"][:, idx[p]] for p in POOLS], axis=1)
        share, at_x, k = shift_answers(study.source.model, models, x, t)
        if not np.array_equal(at_x.astype(bool), plain.astype(bool)):
            raise SystemExit(f"{folder}: the models' answers on the {rank} examples differ from the replayed pools'")
        settings[rank] = evaluate(plain, ctl, is_surr, n)
        settings[rank + "+q"] = evaluate(share, ctl, is_surr, n)
        kept_shifts[rank] = float(k.mean())
    return {"study": name, "settings": settings, "kept_shifts": kept_shifts, "models": [m.name for m in study.testing],
            "seconds": time.perf_counter() - t0}


def cell(v: dict | None) -> str:
    """A report's cell for one setting on one draw: AUC / margin / d′, ✓ where the goal is met; – not scored.
    `query_neighbourhood.py` uses it too."""
    if v is None:
        return "–"
    return f"{v['roc_auc']:.3f} / {v['margin']:+.3f} / {v['d_prime']:.2f}" + (" ✓" if separated(v["roc_auc"], v["margin"]) else "")


def write_md(payload: dict, path: Path) -> None:
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    lines = ["# Asking each fingerprint example with its one-pixel shifts (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Settings (`benchmarks/shift_queries.py`'s docstring): `default` the study's fingerprint, one query per "
             "example; `default+q` the same examples each asked also as its one-pixel shifts on which the source gives "
             "the key (a model's answer on an example: the share of those queries answered with the key); `shift` §42's "
             "shift ranking; `shift+q` it asked with shifts. Cells: AUC / margin / d′ on the 8 + 8 testing models "
             "(✓: goal met, AUC ≥ 0.95 and margin > 0). Shifts kept: the mean number of the 8 shifts per example on "
             "which the source gives the key.", "",
             "| study | " + " | ".join(SETTINGS) + " | shifts kept (default, shift) | seconds |",
             "| --- |" + " --- |" * (len(SETTINGS) + 2)]
    for r in runs:
        ks = ", ".join(f"{r['kept_shifts'][k]:.2f}" if k in r["kept_shifts"] else "–" for k in ("default", "shift"))
        lines.append(f"| {r['study']} | " + " | ".join(cell(r["settings"].get(s)) for s in SETTINGS)
                     + f" | {ks} | {r['seconds']:.0f} |")
    every = [r for r in runs if all(r["settings"].get(s) for s in SETTINGS)]
    if every:
        lines += ["", f"Over every draw measured ({len(every)}):", "", *HEAD]
        lines += [row(s, judged(every, s)) for s in SETTINGS]
    atomic_write_text(path, "\n".join(lines + rule_lines(payload, SETTINGS, "§43")) + "\n")


def _extra(payload: dict) -> None:
    payload["choice"] = choose_rule(payload["runs"], SETTINGS, CANDIDATES)
    payload["fresh"] = fresh_rule(payload["runs"], payload["choice"]["pick"] if payload["choice"] else None)


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="shift_queries.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md, extra=_extra)


if __name__ == "__main__":
    sys.exit(main())
