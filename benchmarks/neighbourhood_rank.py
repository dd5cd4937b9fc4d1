"""Ranking CEM's candidates by their Confer around the example, not only at it (issue: separation)

    python benchmarks/neighbourhood_rank.py --studies seed21 seed22 ... seed65 --data-dir /usr/share/fashion-mnist

The default keeps each pool's part of the fingerprint (25 of the papers' pool, 75 of the source's mistakes) by hard
Confer on the 26 training models, and that ranking predicts a candidate's held-out power only weakly (correlation
+0.10 to +0.23, `candidate_signals.py`; summary §6, §21): the top of some 2,000 noisy estimates is partly their
noise. A signal not tried before: whether the example's conferrability holds in a neighbourhood of it. An input
whose surrogates follow the source, and whose references do not, only at one exact point is more likely an accident
of these 26 models; one for which this holds under small changes of the input is more likely a feature that
held-out models trained like them share (the flat-optimum account of adversarial transfer). Settings, each pool's
part picked among its kept candidates (adversarial for the source, Confer ≥ τ: what the default keeps), the
fingerprint's inputs and keys always the optimised examples themselves:

- ``default``: hard Confer (the study's own fingerprint);
- ``gauss 0.02`` / ``gauss 0.05``: the mean hard Confer of the training models over ``COPIES`` copies
  ``x + σ·N(0, I)`` clipped to [0, 1], the key fixed (the source's label on ``x``);
- ``shift``: the same over the 8 one-pixel translations of ``x`` (zero-filled, as the black background).

Ties by hard Confer, then by position, as `CEM.generate` breaks them. Only each pool's best ``TOP`` by hard Confer
are scored around (the cost is ``TOP × copies × 26`` forward passes); the rest rank below them. Each setting is
scored as the quickstart scores (CAEAcc − CAEAcc on the control set, the threshold refitted on the study's 12
calibration references), with the study's models and `mix_share.py`'s replayed pools (checked to give back the
study's fingerprint); nothing is retrained.

Protocol, committed before any setting was scored (`held_back.protocol` with ``CHOOSE`` below): choose on the
draws of seeds 21–42 by goal met, then mean d′, among the settings calling no more of those draws' references
stolen than ``default``; confirm on the draws of seeds 43–65, adopting the pick only if there it meets the goal at
least as often as ``default``, with a higher mean d′ and at most one more false accusation. (Its counts of
false accusations are the prediction bound's, `mix_share.evaluate`'s, the default verdict's rule until stop 41.)

§41, committed after §39's result and before any fresh draw was made (summary §41): the draws of seeds 66 onward,
made from nothing by `quickstart_seeds.py` with the shipping default (seeds 66–75: the clock ended the series there),
are not part of §39's rule; on them `shift`
replaces the default's ranking only if it meets the goal on at least as many of them as ``default``, with a higher
mean d′, and its verdict at the shipping rule (the tolerance bound) calls at most one more of their testing
references stolen (``fresh_rule``).
Writes benchmarks/results/neighbourhood-rank-fashion-mnist.json and docs/results/neighbourhood-rank-fashion-mnist.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.fingerprint.ensemble import folded, shift_confer
from conferprint.fingerprint.scores import confer, labels_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_arrays, run_studies, save_arrays, separated, study_key, study_seed  # noqa: E402
from held_back import protocol, protocol_lines, totals  # noqa: E402  (the same pre-registered rule)
from held_out_levers import study_of  # noqa: E402
from mix_share import POOLS, evaluate, pools_of, scored_models, top  # noqa: E402
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint  # noqa: E402
from conferprint.fingerprint import CEM, load_fingerprint  # noqa: E402

STEM = "neighbourhood-rank-fashion-mnist"
SETTINGS = ("default", "gauss 0.02", "gauss 0.05", "shift")
CHOOSE = [f"seed{s}" for s in range(21, 43)]
CONFIRM = [f"seed{s}" for s in range(43, 66)]
FRESH = range(66, 76)  # §41's draws: seeds 66-75 (the clock ended its series there; later draws are §42's)
COPIES = 8
TOP = 300


def gauss_copies(x: torch.Tensor, setting: str, gen: torch.Generator) -> list[torch.Tensor]:
    """``COPIES`` copies ``x + σ·N(0, I)`` clipped to [0, 1], σ from ``setting`` ("gauss σ")."""
    sigma = float(setting.removeprefix("gauss "))
    return [(x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1) for _ in range(COPIES)]


def neighbourhood_confer(surr, refs, x: torch.Tensor, t: torch.Tensor, setting: str, gen: torch.Generator) -> np.ndarray:
    """The training models' mean hard Confer over ``setting``'s copies of ``x``, the keys ``t`` fixed (``shift``:
    the library's `shift_confer`, what `CEM(rank="shift")` ranks by)."""
    if setting == "shift":
        return shift_confer(surr, refs, x, t).numpy()
    got = [confer(labels_of(surr, xc), labels_of(refs, xc), t) for xc in gauss_copies(x, setting, gen)]
    return torch.stack(got).mean(0).numpy()


def ranked(c: dict[str, np.ndarray], key: np.ndarray | None, n: int) -> np.ndarray:
    """The ``n`` kept candidates ``key`` puts first (NaN: not scored, below every scored one), ties by hard Confer,
    then by position; ``key`` None: the default's pick."""
    if key is None:
        return top(c, n)
    kept = np.flatnonzero(c["keep"])
    k = np.nan_to_num(key[kept].astype(np.float64), nan=-1.0)
    order = np.lexsort((np.arange(len(kept)), -c["hard"][kept].astype(np.float64), -k))
    return kept[order[:n]]


def top_keys(path: Path, study, pools, keyers: dict) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """Per key of ``keyers`` (name → ``fn(surrogates, references, x, t)``, on the study's folded training members)
    and per pool, the key of the pool's best ``TOP`` by hard Confer (NaN elsewhere), and the seconds they took;
    cached in ``path`` (reloaded where an earlier run finished them). `neighbourhood_wide.py` uses it too."""
    if path.exists():
        flat = load_arrays(path)
        return {k: {p: flat[f"{k}|{p}"] for p in POOLS} for k in keyers}, float(flat["seconds"])
    t0 = time.perf_counter()
    surr = folded([m.model for m in study.training_role("surrogate")])
    refs = folded([m.model for m in study.training_role("reference")])
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in keyers}
    for pool in POOLS:
        c = pools[pool]
        idx = top(c, TOP)
        x, t = torch.from_numpy(c["x_adv"][idx]), torch.from_numpy(c["t"][idx]).long()
        for k, fn in keyers.items():
            key = np.full(len(c["keep"]), np.nan, dtype=np.float32)
            key[idx] = fn(surr, refs, x, t)
            out[k][pool] = key
    seconds = time.perf_counter() - t0
    path.parent.mkdir(exist_ok=True)
    save_arrays(path, {**{f"{k}|{p}": v for k, d in out.items() for p, v in d.items()}, "seconds": np.array(seconds)})
    return out, seconds


def neighbourhood_keys(folder: Path, seed: int, study, pools) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """Per setting but the default and per pool, the neighbourhood Confer of the pool's best ``TOP`` (NaN elsewhere),
    and the seconds they took; cached in ``folder/neighbourhood/keys.npz``. Each Gaussian key draws its copies from a
    generator seeded by the study's seed and the setting, afresh for each pool."""
    def keyer(s):
        return lambda surr, refs, x, t: neighbourhood_confer(
            surr, refs, x, t, s, torch.Generator().manual_seed(seed * 1000 + SETTINGS.index(s)))
    return top_keys(folder / "neighbourhood" / "keys.npz", study, pools, {s: keyer(s) for s in SETTINGS[1:]})


def replayed(name: str, data_dir, keys_of) -> SimpleNamespace:
    """A finished default study as the ranking benchmarks score it: ``study``, its ``pools`` (`mix_share.pools_of`,
    with the optimised examples), ``keys`` per setting and pool and ``key_seconds`` from ``keys_of(folder, seed,
    study, pools)``, ``everyone`` (its testing models, then its calibration references), their agreement with the
    source on the control set (``ctl``), ``is_surr`` for the testing models, and ``sizes``: each pool's share of the
    fingerprint. `shift_queries.py` uses it too."""
    folder, seed, _, study = study_of(name, data_dir, DEFAULT)
    fp, ctl_fp = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    cem = CEM(**fp.manifest["params"])
    pools = pools_of(folder, seed, study, fp, inputs=True)
    keys, key_seconds = keys_of(folder, seed, study, pools)
    everyone, ctl_answers, is_surr = scored_models(study, ctl_fp)
    return SimpleNamespace(folder=folder, study=study, pools=pools, keys=keys, key_seconds=key_seconds,
                           everyone=everyone, ctl=ctl_answers.mean(1), is_surr=is_surr,
                           sizes={"correct": cem.size - cem.n_errors, "errors": cem.n_errors})


def rank_study(name: str, data_dir, settings, keys_of) -> dict:
    """One finished default study scored with each of ``settings`` (the first the default's hard Confer); ``keys_of
    (folder, seed, study, pools)`` gives the others' keys per pool (NaN: not scored) and the seconds they took.
    `family_rank.py` uses it too. The seconds reported are the work's, cached or not: CEM's optimisation of both
    pools (as `mix_share.py` stored it) and the keys'."""
    r = replayed(name, data_dir, keys_of)
    study, pools, keys, key_seconds, ctl, is_surr = r.study, r.pools, r.keys, r.key_seconds, r.ctl, r.is_surr
    n = len(is_surr)
    scored_settings, overlap = {}, {}
    default_idx = {p: ranked(pools[p], None, r.sizes[p]) for p in POOLS}
    for s in settings:
        idx = {p: ranked(pools[p], None if s == settings[0] else keys[s][p], len(default_idx[p])) for p in POOLS}
        if any(len(idx[p]) < len(default_idx[p]) for p in POOLS):
            scored_settings[s] = None
            continue
        answers = np.concatenate([pools[p]["agree"][:, idx[p]] for p in POOLS], axis=1)
        scored_settings[s] = evaluate(answers, ctl, is_surr, n)
        overlap[s] = int(sum(len(np.intersect1d(idx[p], default_idx[p])) for p in POOLS))
    # a diagnostic, not used by any choice: how each key predicts the testing models' held-out power over the
    # candidates every key scored (share of testing surrogates minus share of testing references giving the key)
    corr = {}
    for p in POOLS:
        c = pools[p]
        a = c["agree"][:n].astype(np.float64)
        power = a[is_surr].mean(0) - a[~is_surr].mean(0)
        scored = np.flatnonzero(c["keep"] & np.all([~np.isnan(keys[s][p]) for s in settings[1:]], axis=0))
        corr[p] = {"hard Confer": float(np.corrcoef(c["hard"][scored].astype(np.float64), power[scored])[0, 1])}
        for s in settings[1:]:
            corr[p][s] = float(np.corrcoef(keys[s][p][scored].astype(np.float64), power[scored])[0, 1])
    return {"study": name, "settings": scored_settings, "overlap_with_default": overlap, "correlation": corr,
            "models": [m.name for m in study.testing],
            "optimise_seconds": float(sum(float(pools[p]["seconds"]) for p in POOLS)), "key_seconds": key_seconds}


def run_study(name: str, data_dir) -> dict:
    return rank_study(name, data_dir, SETTINGS, neighbourhood_keys)


def report_lines(payload: dict, settings, choose, title: str, note: str, with_protocol: bool = True) -> list[str]:
    """The report of a ranking benchmark (`rank_study`'s rows): per draw, then over the draws, then (``with_protocol``)
    §39's protocol."""
    runs = sorted(payload["runs"], key=lambda r: study_key(r["study"]))
    lines = [f"# {title}", "", "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             note + " Cells: AUC / margin / d′ on the 8 + 8 testing models (✓: goal met, AUC ≥ 0.95 and margin > 0); "
             "stolen: the score at or above the threshold refitted on the study's 12 calibration references; `same`: "
             "examples shared with the default's 100.", "",
             "| study | " + " | ".join(settings) + " | same as default (" + ", ".join(settings[1:]) + ") | seconds: CEM, keys |",
             "| --- |" + " --- |" * (len(settings) + 2)]
    for r in runs:
        cells = [(f"{v['roc_auc']:.3f} / {v['margin']:+.3f} / {v['d_prime']:.2f}" + (" ✓" if separated(v["roc_auc"], v["margin"]) else ""))
                 if (v := r["settings"].get(s)) else "–" for s in settings]
        same = ", ".join(str(r["overlap_with_default"].get(s, "–")) for s in settings[1:])
        lines.append(f"| {r['study']} | " + " | ".join(cells) + f" | {same} | {r['optimise_seconds']:.0f}, {r['key_seconds']:.1f} |")
    lines += ["", "Over the draws measured:", "", "| setting | goal met | mean d′ | paired d′ − default (± se) | mean gap | "
              "stolen, prediction bound: surrogates, references | stolen, tolerance bound (the default verdict) | "
              "corr(key, held-out power): correct, mistakes |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in settings:
        rows = [(v, d) for r in runs if (v := r["settings"].get(s)) and (d := r["settings"].get(settings[0]))]
        if not rows:
            continue
        diff = np.array([v["d_prime"] - d["d_prime"] for v, d in rows])
        se = f"{diff.std(ddof=1) / np.sqrt(len(diff)):.2f}" if len(diff) > 1 else "–"
        ck = "hard Confer" if s == settings[0] else s
        cr = [np.mean([r["correlation"][p][ck] for r in runs]) for p in POOLS]
        lines.append(f"| {s} | {sum(separated(v['roc_auc'], v['margin']) for v, _ in rows)} / {len(rows)} | "
                     f"{np.mean([v['d_prime'] for v, _ in rows]):.2f} | {diff.mean():+.2f} ± {se} | "
                     f"{np.mean([v['gap'] for v, _ in rows]):.3f} | {sum(v['surrogates_stolen'] for v, _ in rows)} / "
                     f"{8 * len(rows)}, {sum(v['references_stolen'] for v, _ in rows)} / {8 * len(rows)} | "
                     f"{sum(v['surrogates_stolen_tolerance'] for v, _ in rows)}, "
                     f"{sum(v['references_stolen_tolerance'] for v, _ in rows)} | {cr[0]:+.3f}, {cr[1]:+.3f} |")
    if not with_protocol:
        return lines
    proto = payload.get("protocol")
    if proto:
        # the rule's counts of references stolen are the prediction bound's (`mix_share.evaluate`'s `references_stolen`)
        lines += protocol_lines(proto, settings, " Its false accusations are the prediction bound's.")
    else:
        lines += ["", f"Protocol: not applied yet (it needs every draw of {choose[0]}–{choose[-1]} and at least one other)."]
    return lines


def fresh_rule(runs: list[dict], setting: str = "shift", default: str = "default") -> dict | None:
    """§41 (module docstring): ``setting`` against ``default`` on its fresh draws (seeds ``FRESH``; §42's later
    draws are judged by `neighbourhood_wide.fresh_rule`)."""
    fresh = [r for r in runs if study_seed(r["study"])[0] in FRESH and not study_seed(r["study"])[1]]
    if not fresh:
        return None
    s, d = totals(fresh, setting, "tolerance"), totals(fresh, default, "tolerance")
    adopt = s["met"] >= d["met"] and s["d_prime"] > d["d_prime"] and s["references_stolen"] <= d["references_stolen"] + 1
    return {"studies": [r["study"] for r in fresh], "setting": setting, setting: s, "default": d, "adopt": bool(adopt)}


def write_md(payload: dict, path: Path) -> None:
    note = (f"Settings (`benchmarks/neighbourhood_rank.py`'s docstring): `default` picks each pool's part by hard Confer "
            f"on the 26 training models; `gauss σ` by their mean hard Confer over {COPIES} Gaussian copies of the example; "
            f"`shift` over its 8 one-pixel translations (each pool's best {TOP} scored).")
    lines = report_lines(payload, SETTINGS, CHOOSE, "Ranking CEM's candidates by their Confer around the example "
                         "(Fashion-MNIST)", note)
    fresh = payload.get("fresh")
    if fresh:
        fmt = (lambda t: f"{t['met']} / {t['studies']}, {t['d_prime']:.2f}, {t['surrogates_stolen']}, {t['references_stolen']}")
        lines += ["", f"§41, the fresh draws ({', '.join(fresh['studies'])}; not part of §39's rule): `{fresh['setting']}` "
                      f"{fmt(fresh[fresh['setting']])} against `default` {fmt(fresh['default'])} (goal met, mean d′, "
                      f"surrogates and references stolen at the tolerance bound): adopted **{'yes' if fresh['adopt'] else 'no'}**."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_studies(argv, script="neighbourhood_rank.py", stem=STEM, description=__doc__.split("\n\n")[0],
                       run_study=run_study, write_md=write_md,
                       extra=lambda payload: payload.update(protocol=protocol(payload["runs"], SETTINGS, "default", CHOOSE, CONFIRM),
                                                           fresh=fresh_rule(payload["runs"])))


if __name__ == "__main__":
    sys.exit(main())
