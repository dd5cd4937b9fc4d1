"""CEM side by side with the baselines on the same held-out models, and the thief's evasion detector.

``conferprint compare --config CONFIG --out DIR`` runs (or resumes) the defender's study with the
quickstart pipeline into ``DIR/study`` and then measures, on the study's held-out testing models:

1. **conferrability per ε** (the paper's Figure 3a): from the same D1 inputs, adversarial examples
   at every ε by CEM (on the study's training ensemble) and by each source-only baseline; for those
   that fool the source, mean Confer, Transfer to the held-out surrogates and to the held-out
   references, with the target being the source's label;
2. **ROC** (Figure 4f): a fingerprint of the study's size per method (CEM: the study's own; PGD: the
   study's control set; IPGuard and the foolbox baselines generated here), CAEAcc of every held-out
   model, AUC and margin; per method the size, generation time and mean perturbation;
3. **evasion** (Sec. 5, after Hitaj et al.): a detector trained by the thief on its own FGM/PGD/CW
   examples against its own surrogate (a held-out surrogate, trained on D2), scored per ε on CEM's
   examples against benign test inputs: ROC AUC, and the share of benign queries flagged when 90 %
   of the fingerprint is caught.
Outputs: ``DIR/results.json``, ``DIR/report.md``, ``DIR/conferrability.png``, ``DIR/roc.png``,
``DIR/evasion.png``. Baseline fingerprints are cached in ``DIR/fingerprints``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from conferprint._io import atomic_write_text
from conferprint.attacks import AttackConfigError
from conferprint.attacks.base import read_config_file
from conferprint.evasion import DetectorConfig, evasion_stats, train_detector
from conferprint.experiments.quickstart import PRESETS, make_fingerprint, control_fingerprint, prepare_study, resolve_config, run_quickstart, versions
from conferprint.fingerprint import load_fingerprint
from conferprint.fingerprint.foolbox_baselines import METHODS as PLAIN_METHODS, Plain
from conferprint.fingerprint.generate import GenerationError
from conferprint.fingerprint.ipguard import IPGuard
from conferprint.fingerprint.scores import labels_of, transfer
from conferprint.training import predict_labels
from conferprint.verify import model_oracle, separation_stats, verify_oracle
from conferprint.verify.calibration import control_difference

log = logging.getLogger(__name__)

METHODS = ("cem", "pgd", "ipguard", *[m for m in PLAIN_METHODS if m != "pgd"])


@dataclass(frozen=True)
class CompareConfig:
    preset: str = "default"
    seed: int = 0
    data_dir: str | None = None
    methods: dict[str, dict] = field(default_factory=lambda: {m: {} for m in METHODS})
    epsilons: tuple[float, ...] = (0.025, 0.05, 0.1, 0.15, 0.2)
    candidates: int = 256
    evasion: DetectorConfig | None = DetectorConfig()
    benign: int = 1000  # benign test inputs for the evasion AUC


def _method_obj(name: str, params: dict, where: str):
    cls = IPGuard if name == "ipguard" else Plain
    allowed = {f.name for f in fields(cls)} - {"method"}
    for k in params:
        if k not in allowed:
            raise AttackConfigError(f"{where}.{k}: unknown parameter of {name!r}; known: {', '.join(sorted(allowed))}")
    try:
        return cls(**params) if name == "ipguard" else Plain(method=name, **params)
    except (TypeError, ValueError) as e:
        raise AttackConfigError(f"{where}: {e}") from e


def parse_compare_config(doc: Any, preset: str | None = None) -> CompareConfig:
    """Validate a compare config (as loaded from YAML); every refusal names the key."""
    if not isinstance(doc, dict):
        raise AttackConfigError("the config must be a mapping with keys study, methods, epsilons, candidates, evasion")
    known = {"study", "methods", "epsilons", "candidates", "evasion", "benign"}
    for k in doc:
        if k not in known:
            raise AttackConfigError(f"{k}: unknown key; known: {', '.join(sorted(known))}")
    study = doc.get("study") or {}
    if not isinstance(study, dict):
        raise AttackConfigError("study: expected a mapping")
    for k in study:
        if k not in ("preset", "seed", "data_dir"):
            raise AttackConfigError(f"study.{k}: unknown key; known: data_dir, preset, seed")
    kw: dict[str, Any] = {k: study[k] for k in ("seed", "data_dir") if k in study}
    kw["preset"] = preset or study.get("preset", "default")
    if kw["preset"] not in PRESETS:
        raise AttackConfigError(f"study.preset: unknown preset {kw['preset']!r}; known: {', '.join(PRESETS)}")
    methods = doc.get("methods", {m: {} for m in METHODS})
    if isinstance(methods, list):
        methods = {m: {} for m in methods}
    if not isinstance(methods, dict) or "cem" not in methods:
        raise AttackConfigError("methods: expected a mapping of method names to parameters, including cem")
    for name, params in methods.items():
        if name not in METHODS:
            raise AttackConfigError(f"methods.{name}: unknown method; known: {', '.join(METHODS)}")
        if params is None:
            methods[name] = params = {}
        if not isinstance(params, dict):
            raise AttackConfigError(f"methods.{name}: expected a mapping of parameters")
        if name in ("cem", "pgd") and params:
            raise AttackConfigError(f"methods.{name}: takes the study's own fingerprint; set its parameters in the preset")
        if name not in ("cem", "pgd"):
            _method_obj(name, params, f"methods.{name}")
    kw["methods"] = methods
    eps = doc.get("epsilons", list(CompareConfig.epsilons))
    if not isinstance(eps, list) or not eps or not all(isinstance(e, (int, float)) and 0 < e <= 1 for e in eps):
        raise AttackConfigError(f"epsilons: expected a list of radii in (0, 1], got {eps!r}")
    kw["epsilons"] = tuple(float(e) for e in eps)
    for key in ("candidates", "benign"):
        if key in doc:
            v = doc[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AttackConfigError(f"{key}: expected a positive integer, got {v!r}")
            kw[key] = v
    if "evasion" in doc:
        ev = doc["evasion"]
        if ev is None or ev is False:
            kw["evasion"] = None
        elif not isinstance(ev, dict):
            raise AttackConfigError("evasion: expected a mapping of detector settings (or false)")
        else:
            allowed = {f.name for f in fields(DetectorConfig)}
            for k in ev:
                if k not in allowed:
                    raise AttackConfigError(f"evasion.{k}: unknown key; known: {', '.join(sorted(allowed))}")
            try:
                kw["evasion"] = DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ev.items()})
            except (TypeError, ValueError) as e:
                raise AttackConfigError(f"evasion: {e}") from e
    return CompareConfig(**kw)


def load_compare_config(path: str | os.PathLike, preset: str | None = None) -> CompareConfig:
    doc = read_config_file(path)
    return parse_compare_config(doc, preset)


def _perturbation(fp) -> dict[str, float]:
    d = (fp.inputs - fp.originals).flatten(1)
    return {"linf_mean": float(d.abs().amax(1).mean()), "l2_mean": float(d.norm(dim=1).mean())}


def run_compare(config: CompareConfig, out: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    qcfg = resolve_config(config.preset)
    study_results = run_quickstart(out / "study", qcfg, seed=config.seed, data_dir=config.data_dir, progress=progress)
    study = prepare_study(qcfg, out / "study" / "zoo", seed=config.seed, data_dir=config.data_dir)
    source, data = study.source, study.data
    surr = [m.model for m in study.testing if m.meta["role"] == "surrogate"]
    refs = [m.model for m in study.testing if m.meta["role"] == "reference"]
    train_s, train_r = study.training_role("surrogate"), study.training_role("reference")

    # 2. one fingerprint per method, CAEAcc on every held-out model
    fps, gen_info = {"cem": load_fingerprint(out / "study" / "fingerprint")}, {}
    if "pgd" in config.methods and qcfg.pgd is not None:
        fps["pgd"] = load_fingerprint(out / "study" / "fingerprint-pgd")
    (out / "fingerprints").mkdir(exist_ok=True)
    for name, params in config.methods.items():
        if name in ("cem", "pgd"):
            continue
        method = _method_obj(name, params, f"methods.{name}")
        if name != "ipguard" and "eps" not in params:
            method = replace(method, eps=qcfg.cem.eps)  # the same budget as the study's CEM
        method = replace(method, size=qcfg.cem.size)
        try:
            fps[name], _ = make_fingerprint(method, f"fingerprints/{name}", out, source, [], [], study.x1, study.y1,
                                             config.seed, data.num_classes, progress)
        except GenerationError as e:
            gen_info[name] = {"error": str(e)}
    control = control_fingerprint(out / "study")  # the study's control set, for its calibrated score
    rows = []
    for m in study.testing:
        oracle = model_oracle(m.model)
        scores = {k: verify_oracle(oracle, f) for k, f in fps.items()}
        if control is not None:
            scores["control"] = verify_oracle(oracle, control)
        rows.append({"name": m.name, "role": m.meta["role"], "arch": m.arch, "scores": scores})
    roc = {}
    for k, f in fps.items():
        pos = [r["scores"][k] for r in rows if r["role"] == "surrogate"]
        neg = [r["scores"][k] for r in rows if r["role"] == "reference"]
        stats = f.manifest.get("stats") or {}
        roc[k] = {**separation_stats(pos, neg), "size": len(f), "generation_seconds": stats.get("seconds"),
                  "adversarial_rate": stats.get("adversarial_rate"), **_perturbation(f),
                  "source_cae_acc": verify_oracle(model_oracle(source.model), f)}
    roc.update(gen_info)
    add_control_difference(rows, roc, len(control) if control is not None else 0)

    # 1. conferrability per ε, from the same candidates
    gen = torch.Generator().manual_seed(config.seed + 17)
    correct = (predict_labels(source.model, study.x1) == study.y1).nonzero().squeeze(1)
    pick = correct[torch.randperm(len(correct), generator=gen)[: config.candidates]]
    xc, yc = study.x1[pick], study.y1[pick]
    curve_methods = [m for m in config.methods if m != "ipguard" or config.methods[m].get("eps") is not None]
    curves: dict[str, list[dict[str, Any]]] = {m: [] for m in curve_methods}
    cem_examples: dict[float, torch.Tensor] = {}
    for eps in config.epsilons:
        for name in curve_methods:
            t = time.perf_counter()
            if name == "cem":
                cem = replace(qcfg.cem, eps=eps)
                x_adv = _cem_examples(cem, source.model, [m.model for m in train_s], [m.model for m in train_r], xc, yc,
                                      config.seed)
            else:
                method = Plain(method="pgd") if name == "pgd" else _method_obj(name, config.methods[name], name)
                method = replace(method, eps=eps)
                x_adv = method.perturb(source.model, xc, yc, torch.Generator().manual_seed(config.seed))
            seconds = time.perf_counter() - t
            target = predict_labels(source.model, x_adv)
            ok = target != yc
            entry: dict[str, Any] = {"eps": eps, "success_rate": float(ok.float().mean()), "n": int(ok.sum()),
                                     "seconds": seconds}
            if ok.any():
                ts = transfer(labels_of(surr, x_adv[ok]), target[ok])
                tr = transfer(labels_of(refs, x_adv[ok]), target[ok])
                entry.update(confer=float((ts * (1 - tr)).mean()), transfer_surrogates=float(ts.mean()),
                             transfer_references=float(tr.mean()))
            curves[name].append(entry)
            if name == "cem":
                cem_examples[eps] = x_adv[ok]
            log.info("ε=%.3f %s: %s", eps, name, entry)

    # 3. evasion
    evasion = None
    if config.evasion is not None:
        t = time.perf_counter()
        thief = next(m for m in study.testing if m.meta["role"] == "surrogate")
        mean, std = data.channel_stats()
        x2 = data.x_train[study.d2]
        det = train_detector(thief.model, x2, config.evasion, seed=config.seed, mean=mean, std=std)
        benign = data.x_test[: config.benign]
        per_eps = [{"eps": e, **evasion_stats(det, xs, benign)} for e, xs in cem_examples.items() if len(xs) >= 2]
        evasion = {"thief_model": thief.name, "detector": asdict(config.evasion), "per_eps": per_eps,
                   "fingerprint": {"eps": qcfg.cem.eps, **evasion_stats(det, fps["cem"].inputs, benign)},
                   "seconds": time.perf_counter() - t}

    results = {"config": {"preset": config.preset, "seed": config.seed, "methods": config.methods,
                          "epsilons": list(config.epsilons), "candidates": config.candidates},
               "study": {"source_test_acc": source.meta["test_acc"], "fingerprint_eps": qcfg.cem.eps,
                         "n_surrogates": len(surr), "n_references": len(refs), "score": study_results["score"]},
               "roc": roc, "models": rows, "conferrability": curves, "evasion": evasion,
               "timings": {"total": time.perf_counter() - t_all}, "versions": versions()}
    write_compare_report(out, results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


def add_control_difference(rows: list[dict[str, Any]], roc: dict[str, Any], control_size: int) -> None:
    """The quickstart's decisive score beside the raw ones: CAEAcc(CEM) − CAEAcc(PGD control set),
    from each row's ``scores["control"]``."""
    if "cem" not in roc or not rows or "control" not in rows[0]["scores"]:
        return
    for r in rows:
        r["scores"]["cem-pgd"] = control_difference(r["scores"]["cem"], r["scores"].pop("control"))
    pos = [r["scores"]["cem-pgd"] for r in rows if r["role"] == "surrogate"]
    neg = [r["scores"]["cem-pgd"] for r in rows if r["role"] == "reference"]
    roc["cem-pgd"] = {**separation_stats(pos, neg), "size": roc["cem"]["size"] + control_size,
                      "note": "CAEAcc(CEM) − CAEAcc(PGD control set): the quickstart's score"}


def _cem_examples(cem, source, surrogates, references, x, y, seed) -> torch.Tensor:
    """CEM's optimised version of every candidate (no selection by τ), in batches."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([cem.attack(source, surrogates, references, x[i: i + cem.batch_size], y[i: i + cem.batch_size], gen)
                      for i in range(0, len(x), cem.batch_size)])


def write_compare_report(out: Path, results: dict[str, Any]) -> None:
    from conferprint.experiments.report import plot_roc, table

    roc = results["roc"]
    rows = [{"method": k, "auc": v.get("roc_auc"), "margin": v.get("margin"), "size": v.get("size"),
             "secs": v.get("generation_seconds"), "linf": v.get("linf_mean"), "l2": v.get("l2_mean"),
             "src": v.get("source_cae_acc"), "error": v.get("error", v.get("note", ""))} for k, v in roc.items()]
    lines = ["# CEM against the baselines", "",
             f"Study preset `{results['config']['preset']}`, seed {results['config']['seed']}: source test accuracy "
             f"{results['study']['source_test_acc']:.4f}; {results['study']['n_surrogates']} held-out surrogates, "
             f"{results['study']['n_references']} held-out references. Raw CAEAcc per fingerprint (ROC AUC: "
             "surrogates positive; margin: lowest surrogate minus highest reference).", "",
             table(rows, [("method", "method"), ("auc", "ROC AUC"), ("margin", "margin"), ("size", "size"),
                          ("secs", "generation s"), ("linf", "mean L∞"), ("l2", "mean L2"),
                          ("src", "source CAEAcc"), ("error", "note")]),
             "", "![roc](roc.png)", "", "## Conferrability on held-out models per ε (Figure 3a)", ""]
    crow = []
    for name, pts in results["conferrability"].items():
        for p in pts:
            crow.append({"method": name, "eps": p["eps"], "succ": p["success_rate"], "confer": p.get("confer"),
                         "ts": p.get("transfer_surrogates"), "tr": p.get("transfer_references")})
    lines += [table(crow, [("method", "method"), ("eps", "ε"), ("succ", "fools source"), ("confer", "Confer"),
                           ("ts", "Transfer(surrogates)"), ("tr", "Transfer(references)")]),
              "", "![conferrability](conferrability.png)", ""]
    ev = results["evasion"]
    if ev is not None:
        erow = [{"eps": p["eps"], "auc": p["roc_auc"], "flag": p["benign_flagged"], "n": p["n_fingerprint"]}
                for p in ev["per_eps"]]
        f = ev["fingerprint"]
        lines += ["## Evasion: the thief's detector (Hitaj et al.)", "",
                  f"Detector trained by the thief on FGM/PGD/CW examples against its own model `{ev['thief_model']}`. "
                  f"On the fingerprint itself (ε = {f['eps']}): ROC AUC {f['roc_auc']:.3f}; catching 90 % of it "
                  f"flags {f['benign_flagged']:.1%} of benign queries.", "",
                  table(erow, [("eps", "ε (CEM examples)"), ("n", "examples"), ("auc", "detector ROC AUC"),
                               ("flag", "benign flagged at 90 % catch")]), "", "![evasion](evasion.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    plot_roc(out / "roc.png", results["models"], {k: k.upper() for k in roc if "error" not in roc[k]})
    _plot_curves(out, results)


def _plot_curves(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, pts in results["conferrability"].items():
        xs = [p["eps"] for p in pts if "confer" in p]
        ax.plot(xs, [p["confer"] for p in pts if "confer" in p], marker="o", label=name.upper())
    ax.set_xlabel("ε (L∞)")
    ax.set_ylabel("mean conferrability on held-out models")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "conferrability.png", dpi=120)
    plt.close(fig)
    ev = results["evasion"]
    if ev is not None and ev["per_eps"]:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot([p["eps"] for p in ev["per_eps"]], [p["roc_auc"] for p in ev["per_eps"]], marker="o")
        ax.set_xlabel("ε of the CEM examples")
        ax.set_ylabel("detector ROC AUC")
        ax.set_ylim(0, 1.02)
        fig.tight_layout()
        fig.savefig(out / "evasion.png", dpi=120)
        plt.close(fig)
