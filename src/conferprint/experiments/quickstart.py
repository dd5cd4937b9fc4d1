"""The quickstart: the whole pipeline of the papers on Fashion-MNIST, from training to verdict.

1. seeded split of the training set into defender (D1) and attacker (D2) halves;
2. source on D1 ground truth; training surrogates (D1, source's soft labels) and training
   references (D1, ground truth), the source's architecture among both;
3. a CEM fingerprint (and, as the baseline, a plain PGD fingerprint of the same size);
4. testing models that generation never saw: surrogates on D2 labelled by the source (soft and
   hard) and references on D2 ground truth;
5. every testing model verified from its top-1 labels; CAEAcc per model and ROC AUC;
6. ``results.json``, ``report.md``, ``roc.png``, ``fingerprint.png``.
Every trained model lives in ``OUT/zoo`` and is reused on a rerun, so an interrupted run resumes.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from conferprint import __version__
from conferprint.data import load_dataset, split_defender_attacker
from conferprint.experiments.zoo_builder import Group, Trained, ZooBuilder
from conferprint.fingerprint import CEM, PGD, Fingerprint, FingerprintError, load_fingerprint, save_fingerprint
from conferprint.training import TrainConfig
from conferprint.verify import model_oracle, roc_auc, separation_margin, tpr_at_fpr, verdict, verify_oracle
from conferprint.zoo import Zoo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuickstartConfig:
    preset: str
    dataset: str = "fashion-mnist"
    per_half: int | None = None  # cap on |D1| and |D2| (smoke runs); None = the full halves
    test_limit: int | None = None  # cap on the test set used for accuracies; None = all
    source_arch: str = "cnn"
    source_epochs: int = 8
    train: TrainConfig = TrainConfig()
    training: tuple[Group, ...] = ()
    testing: tuple[Group, ...] = ()
    cem: CEM = CEM()
    pgd: PGD | None = PGD()  # the plain baseline, measured on the same models; None to skip
    threshold: float = 0.75  # CAEAcc at or above which a suspect is called stolen

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _g(arch, role, labels, count, epochs) -> Group:
    return Group(arch, role, labels, count, epochs)


# Smoke run: every phase on a sliver of the data; its AUC means nothing.
TINY = QuickstartConfig(
    preset="tiny", per_half=2000, test_limit=2000, source_arch="cnn_small", source_epochs=3,
    train=TrainConfig(batch_size=128, lr=0.05),
    training=(_g("cnn_small", "surrogate", "soft", 1, 2), _g("mlp", "surrogate", "soft", 1, 2),
              _g("cnn_small", "reference", "ground_truth", 1, 2), _g("mlp", "reference", "ground_truth", 1, 2)),
    testing=(_g("cnn_small", "surrogate", "soft", 1, 2), _g("mlp", "surrogate", "hard", 1, 2),
             _g("lenet_bn", "surrogate", "soft", 1, 2),
             _g("cnn_small", "reference", "ground_truth", 1, 2), _g("mlp", "reference", "ground_truth", 1, 2),
             _g("lenet_bn", "reference", "ground_truth", 1, 2)),
    cem=CEM(steps=40, lr=0.02, size=20, batch_size=64, max_candidates=192, tau=0.5, target="conferrable"),
    pgd=PGD(steps=10, size=20, batch_size=64, max_candidates=128),
)

# The real demonstration on this 2-core CPU (see docs/results for what it measures).
DEFAULT = QuickstartConfig(
    preset="default", source_arch="cnn", source_epochs=8,
    train=TrainConfig(batch_size=256, lr=0.05),
    training=(
        _g("cnn", "surrogate", "soft", 2, 4), _g("lenet_bn", "surrogate", "soft", 2, 5), _g("mlp", "surrogate", "soft", 2, 10),
        _g("cnn", "reference", "ground_truth", 2, 4), _g("lenet_bn", "reference", "ground_truth", 2, 5),
        _g("mlp", "reference", "ground_truth", 2, 10),
    ),
    testing=(
        _g("cnn", "surrogate", "soft", 1, 6), _g("cnn", "surrogate", "hard", 1, 6),
        _g("lenet_bn", "surrogate", "soft", 1, 6), _g("lenet_bn", "surrogate", "hard", 1, 6),
        _g("mlp", "surrogate", "soft", 1, 10), _g("mlp", "surrogate", "hard", 1, 10),
        _g("cnn_small", "surrogate", "soft", 1, 6), _g("cnn_small", "surrogate", "hard", 1, 6),
        _g("cnn", "reference", "ground_truth", 2, 6), _g("lenet_bn", "reference", "ground_truth", 2, 6),
        _g("mlp", "reference", "ground_truth", 2, 10), _g("cnn_small", "reference", "ground_truth", 2, 6),
    ),
    cem=CEM(steps=150, size=100, batch_size=256, max_candidates=1024, target="conferrable"),
    pgd=PGD(size=100, batch_size=256, max_candidates=1024),
)

PRESETS = {"tiny": TINY, "default": DEFAULT}


def _fingerprint_cached(path: Path, expect: dict[str, Any]) -> Fingerprint | None:
    try:
        fp = load_fingerprint(path)
    except FingerprintError:
        return None
    same = all(fp.manifest.get(k) == json.loads(json.dumps(v)) for k, v in expect.items())
    return fp if same else None


def _make_fingerprint(method, name: str, out: Path, source: Trained, surr: list[Trained], refs: list[Trained],
                      x, y, seed: int, num_classes: int, progress: bool) -> tuple[Fingerprint, bool]:
    expect = {"params": asdict(method), "seed": seed, "source_sha256": source.meta["sha256"],
              "training_models": sorted(m.meta["sha256"] for m in surr + refs)}
    path = out / name
    cached = _fingerprint_cached(path, expect)
    if cached is not None:
        return cached, False
    fp = method.generate(source.model, [m.model for m in surr], [m.model for m in refs], x, y, seed=seed,
                         num_classes=num_classes, source_sha256=source.meta["sha256"], progress=progress)
    fp.manifest["training_models"] = expect["training_models"]
    save_fingerprint(fp, path)
    return fp, True


def run_quickstart(
    out: str | os.PathLike,
    config: QuickstartConfig = DEFAULT,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the quickstart into ``out``; returns the results written to ``out/results.json``."""
    from conferprint.experiments.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    data = load_dataset(config.dataset, data_dir)
    d1, d2 = split_defender_attacker(len(data.y_train), seed)
    if config.per_half is not None:
        d1, d2 = d1[: config.per_half], d2[: config.per_half]
    if config.test_limit is not None:
        data.x_test, data.y_test = data.x_test[: config.test_limit], data.y_test[: config.test_limit]
    assert not set(d1.tolist()) & set(d2.tolist())
    x1, y1, x2, y2 = data.x_train[d1], data.y_train[d1], data.x_train[d2], data.y_train[d2]
    timings["data"] = time.perf_counter() - t

    builder = ZooBuilder(Zoo(out / "zoo"), data, config.train, seed, progress)

    t = time.perf_counter()
    source = builder.build("source", config.source_arch, "source", "D1", x1, y1, "ground_truth", config.source_epochs)
    timings["source"] = time.perf_counter() - t

    t = time.perf_counter()
    training = [m for g in config.training for m in builder.group("train", g, "D1", x1, y1, source)]
    timings["training_models"] = time.perf_counter() - t
    t_surr = [m for m in training if m.meta["role"] == "surrogate"]
    t_refs = [m for m in training if m.meta["role"] == "reference"]

    t = time.perf_counter()
    fp, fp_new = _make_fingerprint(config.cem, "fingerprint", out, source, t_surr, t_refs, x1, y1, seed,
                                   data.num_classes, progress)
    timings["cem"] = time.perf_counter() - t
    baselines: dict[str, Fingerprint] = {}
    if config.pgd is not None:
        t = time.perf_counter()
        baselines["pgd"], _ = _make_fingerprint(config.pgd, "fingerprint-pgd", out, source, [], [], x1, y1, seed,
                                                data.num_classes, progress)
        timings["pgd"] = time.perf_counter() - t

    t = time.perf_counter()
    testing = [m for g in config.testing for m in builder.group("test", g, "D2", x2, y2, source)]
    timings["testing_models"] = time.perf_counter() - t

    t = time.perf_counter()
    fps = {"cem": fp, **baselines}

    def row(m: Trained, group: str) -> dict[str, Any]:
        oracle = model_oracle(m.model)
        scores = {k: verify_oracle(oracle, f) for k, f in fps.items()}
        role = m.meta["role"]
        return {"name": m.name, "group": group, "role": role, "arch": m.arch, "labels": m.meta["label_source"],
                "data": m.meta["data"], "epochs": m.meta["epochs"], "test_acc": m.meta["test_acc"],
                "cae_acc": scores["cem"], "score": scores["cem"],
                "verdict": verdict(scores["cem"], config.threshold),
                "baseline_cae_acc": {k: v for k, v in scores.items() if k != "cem"},
                "sha256": m.meta["sha256"], "trained_seconds": m.meta.get("train_seconds")}

    models = [row(m, "testing") for m in testing]
    training_rows = [row(m, "training") for m in training]
    source_row = row(source, "source")
    timings["verify"] = time.perf_counter() - t

    def summary(key: str) -> dict[str, Any]:
        get = (lambda r: r["cae_acc"]) if key == "cem" else (lambda r: r["baseline_cae_acc"][key])
        pos = [get(r) for r in models if r["role"] == "surrogate"]
        neg = [get(r) for r in models if r["role"] == "reference"]
        res: dict[str, Any] = {"n_surrogates": len(pos), "n_references": len(neg)}
        if pos and neg:
            res.update(roc_auc=roc_auc(pos, neg), margin=separation_margin(pos, neg),
                       tpr_at_fpr_0=tpr_at_fpr(pos, neg, 0.0), min_surrogate=min(pos), max_reference=max(neg),
                       mean_surrogate=sum(pos) / len(pos), mean_reference=sum(neg) / len(neg))
        return res

    per_family = {}
    for arch in sorted({r["arch"] for r in models}):
        pos = [r["cae_acc"] for r in models if r["arch"] == arch and r["role"] == "surrogate"]
        neg = [r["cae_acc"] for r in models if r["arch"] == arch and r["role"] == "reference"]
        per_family[arch] = {"surrogates": pos, "references": neg,
                            "roc_auc": roc_auc(pos, neg) if pos and neg else None,
                            "margin": separation_margin(pos, neg) if pos and neg else None}
    cem_summary = summary("cem")
    tp = sum(r["verdict"] == "stolen" for r in models if r["role"] == "surrogate")
    fpos = sum(r["verdict"] == "stolen" for r in models if r["role"] == "reference")
    timings["total"] = time.perf_counter() - t_all

    results: dict[str, Any] = {
        "roc_auc": cem_summary.get("roc_auc"),
        "n_models": {"surrogates": cem_summary["n_surrogates"], "references": cem_summary["n_references"]},
        "separation": cem_summary,
        "baselines": {k: summary(k) for k in baselines},
        "per_arch": per_family,
        "threshold": config.threshold,
        "decisions": {"true_positives": tp, "false_positives": fpos},
        "fingerprint": {"size": len(fp), "method": fp.manifest["method"], "content_sha256": fp.manifest["content_sha256"],
                        "stats": fp.manifest.get("stats"), "params": fp.manifest.get("params"),
                        "max_linf": float(fp.perturbation_linf().max()) if fp.originals is not None else None,
                        "generated_now": fp_new,
                        "baseline_sizes": {k: len(v) for k, v in baselines.items()}},
        "source": {"arch": source.arch, "test_acc": source.meta["test_acc"], "sha256": source.meta["sha256"],
                   "cae_acc": source_row["cae_acc"]},
        "models": models,
        "training_models": training_rows,
        "timings": timings,
        "retrained": {"count": sum(m.trained_now for m in [source, *training, *testing]),
                      "of": 1 + len(training) + len(testing)},
        "seed": seed,
        "config": config.to_dict(),
        "data": {"dataset": data.name, "source": data.source, "d1": len(d1), "d2": len(d2), "test": len(data.y_test)},
        "versions": {"conferprint": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "machine": platform.machine(), "threads": torch.get_num_threads()},
    }
    write_report(out, results, fp, data.classes, baselines)
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out / "results.json")
    return results


def resolve_config(preset: str, **overrides: Any) -> QuickstartConfig:
    try:
        cfg = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}") from None
    return replace(cfg, **overrides) if overrides else cfg
