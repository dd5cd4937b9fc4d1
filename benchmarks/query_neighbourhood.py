"""Which shifted copies to ask: the control set's too, and two pixels' shifts (issue: separation)

    python benchmarks/query_neighbourhood.py --studies seed103 seed104 ... --data-dir /usr/share/datasets/fashion-mnist

Since §43 (stop 45) the quickstart asks each fingerprint example also as its one-pixel shifts on which the source
gives the key (`CEM(rank="shift", query_shifts=True)`), and scores a suspect by its CAEAcc on that grouped
fingerprint minus its CAEAcc on the control set, whose 500 PGD examples are still asked once each. Two things
§43 left untried, each cheap to replay on a finished draw (no model retrained, no CEM rerun):

- **the control asked the way the fingerprint is.** The control stands for a model's general habit of following
  the source's adversarial examples (§12, §29). Asked with shifts, the fingerprint also measures how a model's
  answer survives a one-pixel move, which differs by architecture (an MLP is not translation-equivariant) and
  which the unshifted control does not see. Asking the control's examples with the same shifts may make the
  difference subtract more of that habit, and averages the control's own noise;
- **two pixels' shifts** (`SHIFTS2`, the 24 shifts of at most two pixels each way) for the fingerprint: more
  copies per example average more of the examples' own noise (§23), if a two-pixel move keeps the examples
  conferrable (§42 ranked by them and found them no better than one pixel for ranking).

Settings, each scored as the quickstart scores (`mix_share.evaluate`: threshold refitted on the study's 12
calibration references), the examples and keys those of the study's own fingerprint:

- ``shift+q``: the shipping default, the study's stored fingerprint and control, as stored (checked: the scores
  equal the study's `results.json`);
- ``shift+qc``: the same, the control asked as its examples and their 8 one-pixel shifts on which the source gives
  the control key (a model's control CAEAcc: the mean over the 500 of the share of their queries it answers with
  the key);
- ``shift+q2``: the fingerprint's examples asked as themselves and their 24 shifts of `SHIFTS2` on which the source
  gives the key; the control as stored;
- ``shift+q2c``: both: the fingerprint and the control asked with the 24 shifts;
- ``shift``: each example asked once (reported only; §43's ``shift``).

Protocol, committed before any setting was scored (§44): the draws are new draws of the shipping default from
nothing, seeds 103 onward (`quickstart_seeds.py --tag stop46 --merge --seeds S`; no earlier draw's models survive
on this machine). **Choice** (`neighbourhood_wide.choose_rule`) on seeds ``CHOOSE_SEEDS`` (103–108) among
``CANDIDATES``: eligible if its tolerance-bound accusations are consistent with α (P ≥ 0.05); the one meeting the
goal most often, then the higher mean d′. **Adoption** (`neighbourhood_wide.fresh_rule`) on seeds ``FRESH_FROM``
(109) onward against ``shift+q``: it must meet the goal at least as often, with a higher mean d′, catch at least as
many testing surrogates at the tolerance bound, and keep its accusations consistent with α on those draws and on
every draw from seed 103. Every draw that finishes is counted. The cost, reported beside: a suspect's queries.

Writes benchmarks/results/query-neighbourhood-fashion-mnist.json and docs/results/query-neighbourhood-fashion-mnist.md.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint
from conferprint.fingerprint import load_fingerprint
from conferprint.fingerprint.ensemble import SHIFTS, SHIFTS2
from conferprint.fingerprint.scores import labels_of
from conferprint.verify.metrics import example_shares

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_studies, study_key  # noqa: E402
from held_out_levers import study_of  # noqa: E402
from mix_share import evaluate, scored_models  # noqa: E402
from neighbourhood_wide import HEAD, choose_rule, fresh_rule, judged, row, rule_lines  # noqa: E402
from shift_queries import cell, shift_answers  # noqa: E402

STEM = "query-neighbourhood-fashion-mnist"
SETTINGS = ("shift+q", "shift+qc", "shift+q2", "shift+q2c", "shift")
CANDIDATES = ("shift+qc", "shift+q2", "shift+q2c")
DEFAULT_SETTING = "shift+q"
CHOOSE_SEEDS = range(103, 109)
FRESH_FROM = 109


def run_study(name: str, data_dir) -> dict:
    t0 = time.perf_counter()
    folder, _, _, study = study_of(name, data_dir, DEFAULT)
    fp, ctl_fp = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    if fp.groups is None:
        raise SystemExit(f"{folder}: its fingerprint has no shift queries (not a draw of the default since stop 45)")
    everyone, ctl_once, is_surr = scored_models(study, ctl_fp)
    models, n, source = [m.model for m in everyone], len(is_surr), study.source.model
    stored = example_shares(labels_of(models, fp.inputs) == fp.keys, fp.groups).numpy()  # (models, examples)
    first = fp.example_rows()
    x, t = fp.inputs[first], fp.keys[first]
    share1, once, kept1 = shift_answers(source, models, x, t, SHIFTS)
    if not np.allclose(share1, stored) or int(kept1.sum()) + len(x) != len(fp.keys):
        raise SystemExit(f"{folder}: the one-pixel shifts recomputed differ from the stored fingerprint's queries")
    share2, _, kept2 = shift_answers(source, models, x, t, SHIFTS2)
    ctl1, _, ckept1 = shift_answers(source, models, ctl_fp.inputs, ctl_fp.keys, SHIFTS)
    ctl2, _, ckept2 = shift_answers(source, models, ctl_fp.inputs, ctl_fp.keys, SHIFTS2)
    c0, c1, c2 = ctl_once.mean(1), ctl1.mean(1), ctl2.mean(1)
    settings = {"shift+q": evaluate(stored, c0, is_surr, n), "shift+qc": evaluate(stored, c1, is_surr, n),
                "shift+q2": evaluate(share2, c0, is_surr, n), "shift+q2c": evaluate(share2, c2, is_surr, n),
                "shift": evaluate(once, c0, is_surr, n)}
    results = json.loads((folder / "results.json").read_text())
    expect = [m["score"] for m in results["models"] if m.get("group") == "testing"]
    if not np.allclose(settings["shift+q"]["scores"], expect, atol=1e-9):
        raise SystemExit(f"{folder}: the stored default's scores differ from results.json's")
    nq, nc = len(x), len(ctl_fp.keys)
    queries = {"shift+q": len(fp.keys) + nc, "shift+qc": len(fp.keys) + nc + int(ckept1.sum()),
               "shift+q2": nq + int(kept2.sum()) + nc, "shift+q2c": nq + int(kept2.sum()) + nc + int(ckept2.sum()),
               "shift": nq + nc}
    return {"study": name, "settings": settings, "queries": queries, "models": [m.name for m in study.testing],
            "seconds": time.perf_counter() - t0}


def write_md(payload: dict, path: Path) -> None:
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    lines = ["# Which shifted copies to ask: the control's too, and two pixels' shifts (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Settings (`benchmarks/query_neighbourhood.py`'s docstring): `shift+q` the shipping default as stored; "
             "`shift+qc` its control asked with the 8 one-pixel shifts too; `shift+q2` the fingerprint asked with the "
             "24 shifts of at most two pixels; `shift+q2c` both with the 24; `shift` each example once. Cells: AUC / "
             "margin / d′ on the 8 + 8 testing models (✓: goal met, AUC ≥ 0.95 and margin > 0). Queries: a suspect's, "
             "fingerprint and control together, per setting in the same order.", "",
             "| study | " + " | ".join(SETTINGS) + " | queries | seconds |", "| --- |" + " --- |" * (len(SETTINGS) + 2)]
    for r in runs:
        q = " / ".join(str(r["queries"][s]) for s in SETTINGS)
        lines.append(f"| {r['study']} | " + " | ".join(cell(r["settings"].get(s)) for s in SETTINGS)
                     + f" | {q} | {r['seconds']:.0f} |")
    if runs:
        lines += ["", f"Over every draw measured ({len(runs)}):", "", *HEAD]
        lines += [row(s, judged(runs, s)) for s in SETTINGS]
    atomic_write_text(path, "\n".join(lines + rule_lines(payload, SETTINGS, "§44", "103–108")) + "\n")


def _extra(payload: dict) -> None:
    payload["choice"] = choose_rule(payload["runs"], SETTINGS, CANDIDATES, CHOOSE_SEEDS)
    payload["fresh"] = fresh_rule(payload["runs"], payload["choice"]["pick"] if payload["choice"] else None,
                                  FRESH_FROM, CHOOSE_SEEDS.start, DEFAULT_SETTING)


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="query_neighbourhood.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md, extra=_extra)


if __name__ == "__main__":
    sys.exit(main())
