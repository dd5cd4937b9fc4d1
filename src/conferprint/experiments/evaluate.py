"""The robustness study: every configured removal attack against the quickstart's fingerprint, in one table.

``conferprint evaluate --config CONFIG --out DIR`` runs (or resumes) the defender's study with the
quickstart pipeline into ``DIR/study`` (source, training models, fingerprint, testing references,
the null stored with the fingerprint), then every attack of the config with its repeats. Each stolen
model is saved in ``DIR/zoo`` (so an interrupted evaluation resumes), verified from its top-1
labels, and judged:

- the **verdict** is the fingerprint's decision under the configured rule (:class:`Judge`):
  ``max_reference`` (default: CAEAcc above every held-out reference of the study), ``p_value`` (the
  test of ``conferprint verify`` at ``alpha``) or ``score`` (the study's score and threshold); the
  verdicts of the other rules are reported beside it;
- a removal **succeeds** when the stolen model keeps the source's test accuracy within
  ``accuracy_margin`` **and** its verdict is not ``stolen``; an attack "removes" the fingerprint
  when most of its repeats succeed.

Outputs: ``DIR/results.json``, ``DIR/report.md`` and ``DIR/removal.png`` (the decisive statistic per
attack against the threshold, with the references' range drawn in).
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from conferprint._io import atomic_write_text
from conferprint.attacks import Attack, AttackConfigError, AttackContext, make_attack
from conferprint.attacks.base import check_type, read_config_file
from conferprint.experiments.quickstart import PRESETS, control_fingerprint, prepare_study, resolve_config, run_quickstart, versions
from conferprint.fingerprint import Fingerprint, load_fingerprint
from conferprint.training import TrainConfig, accuracy, predict_labels
from conferprint.verify import model_oracle, verify_oracle, whole_matches
from conferprint.verify.calibration import control_difference
from conferprint.zoo import ModelSpec, Zoo

log = logging.getLogger(__name__)

# Lukas et al. 2021 (Sec. 5): the fingerprint survives every attack but these two
PAPER_REMOVES = {"adv_training": "adversarial training from scratch removes the fingerprint (Fig. 4c)",
                 "transfer": "transfer learning with the defender's own data removes it (Fig. 4b)"}


@dataclass(frozen=True)
class AttackEntry:
    label: str
    attack: Attack
    repeats: int


@dataclass(frozen=True)
class EvalConfig:
    preset: str = "default"
    seed: int = 0
    data_dir: str | None = None
    repeats: int = 1
    accuracy_margin: float = 0.05
    decision: str = "max_reference"
    alpha: float = 1e-3
    attacks: tuple[AttackEntry, ...] = field(default_factory=tuple)


_TOP = {"study", "evaluation", "attacks"}
_STUDY = {"preset": str, "seed": int, "data_dir": str}
_EVAL = {"repeats": int, "accuracy_margin": float, "decision": str, "alpha": float}
_ENTRY = {"name", "label", "repeats", "params"}


def _section(doc: dict, key: str, schema: dict[str, type]) -> dict[str, Any]:
    sec = doc.get(key) or {}
    if not isinstance(sec, dict):
        raise AttackConfigError(f"{key}: expected a mapping, got {sec!r}")
    out = {}
    for k, v in sec.items():
        if k not in schema:
            raise AttackConfigError(f"{key}.{k}: unknown key; known: {', '.join(sorted(schema))}")
        out[k] = None if (k == "data_dir" and v is None) else check_type(f"{key}.{k}", v, schema[k])
    return out


def parse_config(doc: Any, preset: str | None = None, repeats: int | None = None) -> EvalConfig:
    """Validate a config mapping (as loaded from YAML); every refusal names the key.

    ``preset`` and ``repeats`` override the study's preset and the default number of repeats."""
    if not isinstance(doc, dict):
        raise AttackConfigError("the config must be a mapping with keys study, evaluation, attacks")
    for k in doc:
        if k not in _TOP:
            raise AttackConfigError(f"{k}: unknown key; known: {', '.join(sorted(_TOP))}")
    study, ev = _section(doc, "study", _STUDY), _section(doc, "evaluation", _EVAL)
    if preset is not None:
        study["preset"] = preset
    if repeats is not None:
        ev["repeats"] = repeats
    if study.get("preset", "default") not in PRESETS:
        raise AttackConfigError(f"study.preset: unknown preset {study['preset']!r}; known: {', '.join(PRESETS)}")
    if ev.get("decision", "max_reference") not in DECISIONS:
        raise AttackConfigError(f"evaluation.decision: {ev['decision']!r} is not one of {', '.join(DECISIONS)}")
    if not 0 < ev.get("alpha", 1e-3) < 1:
        raise AttackConfigError(f"evaluation.alpha: must lie in (0, 1), got {ev['alpha']!r}")
    if not 0 <= ev.get("accuracy_margin", 0.05) <= 1:
        raise AttackConfigError(f"evaluation.accuracy_margin: must lie in [0, 1], got {ev['accuracy_margin']!r}")
    if ev.get("repeats", 1) < 1:
        raise AttackConfigError(f"evaluation.repeats: must be ≥ 1, got {ev['repeats']!r}")
    raw = doc.get("attacks")
    if not isinstance(raw, list) or not raw:
        raise AttackConfigError("attacks: expected a non-empty list of {name, params} entries")
    entries, labels = [], set()
    for i, e in enumerate(raw):
        where = f"attacks[{i}]"
        if not isinstance(e, dict):
            raise AttackConfigError(f"{where}: expected a mapping with name and params, got {e!r}")
        for k in e:
            if k not in _ENTRY:
                raise AttackConfigError(f"{where}.{k}: unknown key; known: {', '.join(sorted(_ENTRY))}")
        attack = make_attack(e.get("name"), e.get("params"), where)
        label = check_type(f"{where}.label", e["label"], str) if "label" in e else _default_label(attack)
        if not label or any(c in label for c in "/\\") or label.startswith(".") or label in labels:
            raise AttackConfigError(f"{where}.label: {label!r} is empty, not a file name, or used twice")
        labels.add(label)
        reps = check_type(f"{where}.repeats", e["repeats"], int) if "repeats" in e else ev.get("repeats", 1)
        if reps < 1:
            raise AttackConfigError(f"{where}.repeats: must be ≥ 1, got {reps!r}")
        entries.append(AttackEntry(label, attack, reps))
    return EvalConfig(**study, **ev, attacks=tuple(entries))


def _default_label(attack: Attack) -> str:
    default = type(attack)()
    diff = [f"{k}={v}" for k, v in attack.params().items() if getattr(default, k) != v]
    return "-".join([attack.name, *diff])


def load_config(path: str | os.PathLike, preset: str | None = None, repeats: int | None = None) -> EvalConfig:
    doc = read_config_file(path)
    return parse_config(doc, preset, repeats)


def attack_seed(seed: int, label: str, repeat: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(label.encode()) + 7919 * repeat) % (2**31 - 1)


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


DECISIONS = ("max_reference", "p_value", "score", "study")


class Judge:
    """Verifies a model against the study's fingerprint and says stolen or not, under every decision rule.

    - ``max_reference``: CAEAcc above the highest CAEAcc of the study's held-out references (the
      operating point with no false accusation among them; the paper chose its thresholds empirically);
    - ``p_value``: the test of ``conferprint verify`` — p-value ≤ ``alpha`` under the null fitted on
      those references and stored with the fingerprint;
    - ``score``: the study's own score (e.g. CAEAcc minus the PGD control's) at the study's threshold;
    - ``study``: the quickstart's own verdict where its threshold was fitted on calibration references:
      the score at that threshold, or a raw CAEAcc significant under the same references' null
      (:func:`conferprint.experiments.quickstart.decide`).
    The configured ``decision`` gives ``verdict``; the others are reported beside it.
    """

    def __init__(self, fp: Fingerprint, control: Fingerprint | None, study_results: dict, cfg: EvalConfig):
        self.fp, self.control, self.cfg = fp, control, cfg
        self.score_kind = study_results["score"]
        if self.score_kind == "family_null":
            raise AttackConfigError("the evaluation supports study scores cae_acc and control_diff")
        if self.score_kind == "control_diff" and control is None:
            raise AttackConfigError("the study's score needs its PGD control set (fingerprint-control or fingerprint-pgd)")
        n = fp.n_examples
        refs = [m["cae_acc"] for m in study_results["models"] if m["role"] == "reference"]
        self.thresholds: dict[str, tuple[str, float]] = {"score": ("score", float(study_results["threshold"]))}
        if refs:
            self.thresholds["max_reference"] = ("cae_acc", (whole_matches(max(refs) * n) + 1) / n)
        if fp.null is not None:  # critical count / n: above 1 when no count can reach alpha
            self.thresholds["p_value"] = ("cae_acc", fp.null.critical_count(n, cfg.alpha) / n)
        raw = (study_results.get("threshold_fit") or {}).get("raw_cae_acc_rule")
        self.raw_critical = raw["critical_matches"] if raw else None
        if self.raw_critical is not None:
            self.thresholds["study"] = ("score", float(study_results["threshold"]))
        if cfg.decision not in self.thresholds:
            raise AttackConfigError(f"evaluation.decision: {cfg.decision!r} needs held-out references in the study; "
                                    "use 'score'")
        self.statistic, self.threshold = self.thresholds[cfg.decision]

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        oracle = model_oracle(model)
        cae = verify_oracle(oracle, self.fp)
        row: dict[str, Any] = {"cae_acc": cae}
        if self.control is not None:
            row["cae_acc_control"] = verify_oracle(oracle, self.control)
        row["score"] = control_difference(cae, row["cae_acc_control"]) if self.score_kind == "control_diff" else cae
        if self.fp.null is not None:
            row["p_value"] = self.fp.null.p_value(whole_matches(cae * self.fp.n_examples), self.fp.n_examples)
        row["verdicts"] = {rule: "stolen" if row[stat] >= thr - 1e-9 else "not stolen"
                           for rule, (stat, thr) in self.thresholds.items()}
        if "study" in row["verdicts"] and whole_matches(cae * self.fp.n_examples) >= self.raw_critical:
            row["verdicts"]["study"] = "stolen"
        row["verdict"] = row["verdicts"][self.cfg.decision]
        return row


def run_evaluation(config: EvalConfig, out: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    qcfg = resolve_config(config.preset)
    t = time.perf_counter()
    study_results = run_quickstart(out / "study", qcfg, seed=config.seed, data_dir=config.data_dir, progress=progress)
    study = prepare_study(qcfg, out / "study" / "zoo", seed=config.seed, data_dir=config.data_dir)  # reloads
    study_seconds = time.perf_counter() - t
    fp = load_fingerprint(out / "study" / "fingerprint")
    control = control_fingerprint(out / "study")
    judge = Judge(fp, control, study_results, config)
    data, source = study.data, study.source
    source_acc = source.meta["test_acc"]
    zoo = Zoo(out / "zoo")

    references = [{**judge(m.model), "name": m.name, "arch": m.arch, "test_acc": m.meta["test_acc"]}
                  for m in study.testing if m.meta["role"] == "reference"]
    surrogates = [{**judge(m.model), "name": m.name, "arch": m.arch, "test_acc": m.meta["test_acc"]}
                  for m in study.testing if m.meta["role"] == "surrogate"]
    rows = []
    for entry in config.attacks:
        runs = []
        for r in range(entry.repeats):
            seed = attack_seed(config.seed, entry.label, r)
            model, meta = steal(zoo, f"{entry.label}-r{r}", entry.attack, source=source.model, source_arch=source.arch,
                                source_sha256=source.meta["sha256"], data=data, d1=study.d1, d2=study.d2, seed=seed,
                                split=f"D2(n={len(study.d2)},seed={config.seed})", train=qcfg.train,
                                data_dir=config.data_dir, progress=progress)
            runs.append({"repeat": r, "seed": seed, "arch": meta["arch"], "test_acc": meta["test_acc"],
                         "fidelity": meta["fidelity"], "attack_seconds": meta["attack_seconds"],
                         "source_queries": meta["source_queries"], "info": meta["info"], **judge(model)})
            log.info("%s r%d: acc %.3f CAEAcc %.3f -> %s", entry.label, r, runs[-1]["test_acc"], runs[-1]["cae_acc"],
                     runs[-1]["verdict"])
        rows.append(_summarise(entry, runs, source_acc, config.accuracy_margin, judge))

    results = {
        "config": {"preset": config.preset, "seed": config.seed, "repeats": config.repeats,
                   "accuracy_margin": config.accuracy_margin, "decision": config.decision, "alpha": config.alpha},
        "decision": {"statistic": judge.statistic, "threshold": judge.threshold, "kind": config.decision,
                     "study_score": judge.score_kind,
                     "rules": {k: {"statistic": st, "threshold": th,
                                   **({"or_cae_acc": judge.raw_critical / fp.n_examples} if k == "study" else {})}
                               for k, (st, th) in judge.thresholds.items()},
                     "null": fp.null.to_json() if fp.null is not None else None},
        "source": {"arch": source.arch, "test_acc": source_acc, "sha256": source.meta["sha256"], **judge(source.model)},
        "fingerprint": {"size": fp.n_examples, "queries": len(fp), "digest": fp.digest(), "method": fp.manifest["method"]},
        "references": references, "study_surrogates": surrogates,
        "attacks": rows,
        "agreement_with_paper": {"agree": sum(r["agrees_with_paper"] for r in rows), "of": len(rows),
                                 "by_rule": {rule: sum(r["agrees_with_paper_by_rule"][rule] for r in rows)
                                             for rule in judge.thresholds}},
        "timings": {"study": study_seconds, "total": time.perf_counter() - t_all},
        "versions": versions(),
    }
    write_removal_report(out, results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


def steal(zoo: Zoo, name: str, attack: Attack, *, source: torch.nn.Module, source_arch: str, source_sha256: str,
          data, d1: torch.Tensor, d2: torch.Tensor, seed: int, split: str, train: TrainConfig = TrainConfig(),
          data_dir: str | None = None, progress: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run ``attack`` on the source from D2 and store the stolen model as zoo entry ``name``
    (or reload it when an entry with the same attack, parameters, seed and source is there)."""
    mean, std = data.channel_stats()
    spec = ModelSpec(name=name, arch="?", role="stolen", dataset=data.name, data=split, labels=attack.name, seed=seed,
                     train=attack.params(), in_channels=data.in_channels, num_classes=data.num_classes, mean=mean,
                     std=std, teacher_sha256=source_sha256, extra={"attack": attack.name})
    found = _load_stolen(zoo, spec)
    if found is not None:
        return found
    ctx = AttackContext(source, source_arch, data, d2, seed, train=train, data_dir=data_dir, progress=progress)
    t = time.perf_counter()
    stolen = attack.run(ctx)
    seconds = time.perf_counter() - t
    leaked = ctx.touched & set(torch.as_tensor(d1).tolist())
    if leaked:  # a defect of the attack, never a result
        raise RuntimeError(f"attack {attack.name!r} read {len(leaked)} defender (D1) images")
    spec = replace(spec, arch=stolen.arch)
    model = stolen.model
    fidelity = predict_labels(model, data.x_test) == predict_labels(source, data.x_test)
    meta = zoo.save(spec, model, {
        "test_acc": accuracy(model, data.x_test, data.y_test), "fidelity": float(fidelity.float().mean()),
        "attack_seconds": seconds, "source_queries": ctx.source_queries, "attacker_images": len(ctx.touched),
        "info": stolen.info})
    return model, meta


def _load_stolen(zoo: Zoo, spec: ModelSpec):
    meta = zoo.meta(spec.name)
    if meta is None:
        return None
    # the architecture is the attack's output (e.g. an ensemble), so take it from the stored entry
    spec = replace(spec, arch=meta.get("arch", "?"))
    try:
        found = zoo.load(spec)
    except Exception as e:  # noqa: BLE001 - a broken entry is retrained, never trusted
        log.warning("zoo entry %s unusable (%s); attacking again", spec.name, e)
        return None
    return found


def _summarise(entry: AttackEntry, runs: list[dict], source_acc: float, margin: float, judge: Judge) -> dict[str, Any]:
    kept = [r["test_acc"] >= source_acc - margin for r in runs]

    def escaped(rule: str) -> list[bool]:  # per repeat: accuracy kept and not called stolen under ``rule``
        return [k and r["verdicts"][rule] != "stolen" for k, r in zip(kept, runs)]

    def removed_under(rule: str) -> bool:  # a removal: a majority of repeats escaped
        return sum(escaped(rule)) * 2 > len(runs)

    ok = escaped(judge.cfg.decision)  # r["verdict"] is r["verdicts"][decision]
    stolen = sum(r["verdict"] == "stolen" for r in runs)
    removed = removed_under(judge.cfg.decision)
    expected = entry.attack.name in PAPER_REMOVES
    stat = [r[judge.statistic] for r in runs]
    return {
        "label": entry.label, "attack": entry.attack.name, "cite": type(entry.attack).cite,
        "params": entry.attack.params(), "repeats": len(runs),
        "test_acc": _stats([r["test_acc"] for r in runs]), "fidelity": _stats([r["fidelity"] for r in runs]),
        "cae_acc": _stats([r["cae_acc"] for r in runs]), "statistic": _stats(stat),
        "verdict": "stolen" if stolen * 2 >= len(runs) else "not stolen",
        "verdicts": [r["verdict"] for r in runs],
        "verdict_by_rule": {rule: "stolen" if sum(r["verdicts"][rule] == "stolen" for r in runs) * 2 >= len(runs)
                            else "not stolen" for rule in runs[0]["verdicts"]},
        "accuracy_kept": kept,
        "removal_succeeded": removed, "removal_success_rate": sum(ok) / len(runs),
        "paper_expects_removal": expected, "agrees_with_paper": removed == expected,
        # the same judgement under every rule (a majority of repeats keeping accuracy and escaping that rule)
        "agrees_with_paper_by_rule": {rule: removed_under(rule) == expected for rule in runs[0]["verdicts"]},
        "distance_to_threshold": statistics.fmean(stat) - judge.threshold if math.isfinite(judge.threshold) else None,
        "runs": runs,
    }


def write_removal_report(out: Path, results: dict[str, Any]) -> None:
    from conferprint.experiments.report import table

    dec = results["decision"]
    refs = [r[dec["statistic"]] for r in results["references"]]
    rows = [{"label": r["label"], "n": r["repeats"], "acc": r["test_acc"]["mean"], "fid": r["fidelity"]["mean"],
             "cae": f"{r['cae_acc']['mean']:.3f} ± {r['cae_acc']['std']:.3f}",
             "stat": r["statistic"]["mean"], "verdict": r["verdict"],
             "removed": "yes" if r["removal_succeeded"] else "no",
             "others": ", ".join(f"{k}: {'stolen' if v == 'stolen' else 'no'}" for k, v in r["verdict_by_rule"].items()
                                 if k != dec["kind"]),
             "paper": "removed" if r["paper_expects_removal"] else "survives",
             "agree": "✓" if r["agrees_with_paper"] else "✗ differs"} for r in results["attacks"]]
    src = results["source"]
    lines = [
        "# Removal attacks",
        "",
        f"Source `{src['arch']}`: test accuracy {src['test_acc']:.4f}, CAEAcc {src['cae_acc']:.3f}. "
        f"Fingerprint: {results['fingerprint']['size']} {results['fingerprint']['method']} examples, "
        f"digest `{results['fingerprint']['digest']}`.",
        "",
        f"Decision ({dec['kind']}): stolen when {dec['statistic']} ≥ {dec['threshold']:.3f}"
        + {"p_value": f" (p-value ≤ α = {results['config']['alpha']:g} under the null fitted on held-out references)",
           "score": f" (the study's score `{dec['study_score']}`)",
           "study": f" or cae_acc ≥ {dec['rules'].get('study', {}).get('or_cae_acc', float('nan')):.2f} (the quickstart's "
                    "verdict: its threshold and raw null fitted on calibration references)",
           "max_reference": " (above every held-out reference)"}[dec["kind"]] + ". "
        + "Other rules: " + "; ".join(f"{k}: {v['statistic']} ≥ {v['threshold']:.3f}"
                                      + (f" or cae_acc ≥ {v['or_cae_acc']:.2f}" if "or_cae_acc" in v else "")
                                      for k, v in dec["rules"].items() if k != dec["kind"]) + ". "
        f"Held-out references score {min(refs):.3f}–{max(refs):.3f}; the study's held-out surrogates "
        f"{min(r[dec['statistic']] for r in results['study_surrogates']):.3f}–"
        f"{max(r[dec['statistic']] for r in results['study_surrogates']):.3f}.",
        "",
        f"A removal succeeds when accuracy stays within {results['config']['accuracy_margin']:.2f} of the source's "
        "and the verdict is not `stolen` (majority of repeats). Paper: Lukas et al. 2021, Sec. 5.",
        "",
        table(rows, [("label", "attack"), ("n", "repeats"), ("acc", "test acc"), ("fid", "fidelity"),
                     ("cae", "CAEAcc"), *([("stat", dec["statistic"])] if dec["statistic"] != "cae_acc" else []),
                     ("verdict", "verdict"), ("others", "other rules"),
                     ("removed", "removed"), ("paper", "paper"), ("agree", "vs paper")]),
        "",
        f"Agreement with the paper's qualitative result: {results['agreement_with_paper']['agree']} of "
        f"{results['agreement_with_paper']['of']} attacks"
        + (" (under each rule: " + ", ".join(f"{k} {v}" for k, v in results["agreement_with_paper"]["by_rule"].items())
           + ")" if results["agreement_with_paper"].get("by_rule") else "") + ".",
    ]
    diffs = [r for r in results["attacks"] if not r["agrees_with_paper"]]
    if diffs:
        lines += ["", "## Where we differ from the paper", ""]
        for r in diffs:
            why = []
            if not r["paper_expects_removal"]:
                why.append(f"the paper finds the fingerprint survives; here {r['removal_success_rate']:.0%} of "
                           f"repeats removed it ({dec['statistic']} {r['statistic']['mean']:.3f} against the "
                           f"threshold {dec['threshold']:.3f}, accuracy {r['test_acc']['mean']:.3f})")
            elif r["verdict"] != "stolen":
                why.append(f"the paper finds it removes the fingerprint ({PAPER_REMOVES[r['attack']]}); here the "
                           f"verdict is also `not stolen` ({dec['statistic']} {r['statistic']['mean']:.3f} against "
                           f"the threshold {dec['threshold']:.3f}), but the stolen model kept the source's accuracy "
                           f"in only {sum(r['accuracy_kept'])}/{r['repeats']} repeats (test accuracy "
                           f"{r['test_acc']['mean']:.3f}, source {results['source']['test_acc']:.3f}), so the "
                           "removal does not count")
            else:
                why.append(f"the paper finds it removes the fingerprint ({PAPER_REMOVES[r['attack']]}); here it "
                           f"survives ({dec['statistic']} {r['statistic']['mean']:.3f} against the threshold "
                           f"{dec['threshold']:.3f})")
            lines.append(f"- **{r['label']}**: " + "; ".join(why) + ".")
    lines += ["", "![removal](removal.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    plot_removal(out / "removal.png", results)


def plot_removal(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dec = results["decision"]
    key = dec["statistic"]
    attacks = results["attacks"]
    refs = [r[key] for r in results["references"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(attacks) + 2), 4))
    xs = range(len(attacks))
    means = [a["statistic"]["mean"] for a in attacks]
    errs = [a["statistic"]["std"] for a in attacks]
    colors = ["#c0392b" if a["removal_succeeded"] else "#2e86c1" if a["verdict"] == "stolen" else "#f0b27a"
              for a in attacks]
    ax.bar(xs, means, yerr=errs, color=colors, capsize=3, zorder=2)
    ax.axhspan(min(refs), max(refs), color="grey", alpha=0.3, zorder=3, label=f"held-out references ({len(refs)})")
    if math.isfinite(dec["threshold"]):
        ax.axhline(dec["threshold"], color="black", ls="--", lw=1, label=f"threshold {dec['threshold']:.3f}")
    ax.set_xticks(list(xs), [a["label"] for a in attacks], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(key)
    ax.set_title("Removal attacks (blue: called stolen; red: removal succeeded; orange: not called stolen "
                 "but accuracy lost)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
