"""More levers on the held-out separation and the verdict, measured on finished default studies (issue: separation).

    python benchmarks/held_out_levers.py noise --studies seed0 seed1 seed2 seed0-bf16 seed1-bf16 seed2-bf16
    python benchmarks/held_out_levers.py mixup --studies seed1 seed0 --members surrogates both
    python benchmarks/held_out_levers.py control --studies seed0 seed1 seed2 seed0-bf16 seed1-bf16 seed2-bf16
    python benchmarks/held_out_levers.py unseen --studies seed0 seed1 seed2
    python benchmarks/held_out_levers.py calibration --studies seed0 seed1 seed2 seed3 seed4 seed0-bf16 seed1-bf16 seed2-bf16
    python benchmarks/held_out_levers.py statistic --studies seed0 seed1 ... seed8 seed0-bf16 seed1-bf16 seed2-bf16

Each study is a finished run of `benchmarks/quickstart_seeds.py` (benchmarks/runs/quickstart-<study>/:
``seed<N>`` the fp32 default, ``seed<N>-bf16`` its bf16 draw); its models are reloaded, none is retrained.

- ``noise`` — **queries averaged over Gaussian noise.** The score's spread within each group is about
  the binomial noise of 100 answers (separation-summary §5). A verifier may ask each fingerprint and
  control query ``k`` times with fresh Gaussian pixel noise of standard deviation σ and count the share
  of answers equal to the key: a graded agreement from top-1 labels only, which might smooth examples
  that sit on a suspect's decision boundary. The study's own fingerprint and control set (no new
  generation); σ = 0 is the study itself.
- ``mixup`` — **a training ensemble distilled on mixed inputs.** On clean test images the training
  surrogates agree with the source no more than the training references do (§6): on D1 the source's
  labels are ground truth for 92 % of the images. Surrogates distilled from the source on mixup
  inputs (λ ~ U(0, 1) between two shifted D1 images, the target the source's probabilities on the
  mixed image, or its top-1 label for the hard-label members; "function matching", Beyer et al., CVPR
  2022) learn more of its function off its training images. ``surrogates``: only the 10 training
  surrogates are replaced; ``both``: the 16 references too, trained on the same mixed inputs with mixed
  ground-truth labels (so that CEM cannot key on the training recipe, as it did on the training length in
  §6). Same architectures, epochs and seeds; then the default's CEM (mixed pool) on the new ensemble.
- ``control`` — **other control sets.** Within each group the calibrated score's spread is the binomial
  noise of the fingerprint's 100 and the control's 500 answers (CAEAcc on the two sets correlates at
  0.88–0.98 across the testing models of one group), so a control can only help by costing less noise or
  less signal. ``source x2000``: the study's control recipe (untargeted PGD on the source, ε = 0.1, the
  source's label as key) with 2,000 examples instead of 500. ``refs ...``: untargeted PGD at ε = 0.1 (20
  steps of 0.01) on the 16 *training references* instead of the source — on their mean logits (``ens``)
  or each example on one reference in turn (``member``) — keyed by the crafting references' label
  (``key refs``) or by the source's (``key source``): a suspect's susceptibility to adversarial examples
  of independent models, which should carry its architecture's level without the source's signal.
  ``+ study``: the mean of that control's CAEAcc and the study's own control's.
- ``unseen`` — **a training ensemble trained on images the source never saw.** The held-out surrogates learn
  the source's answers on data it was not fitted to (D2), the training surrogates its answers on its own
  training data (D1), where they are the ground truth for 92 % of the images (§6). Here the 26 members of the
  default's ensemble (same architectures, labels and seeds' recipe) are trained on the 10,000 test images
  instead, which the source never saw — the defender's held-back validation data — with three times their
  epochs (the same number of optimiser steps), surrogates on the source's answers there, references on the
  ground truth; then the default's CEM on the same D1 candidates.
- ``calibration`` — **the verdict's calibration references.** The threshold is the upper 95 % prediction
  bound of 8 D1 references' scores (§12); one low-scoring reference widens it (§15). ``12`` and ``16``: 3 or 4
  references per held-out architecture instead of 2 (the first 2 are the study's own, the first 3 of the 16 are
  the 12). ``8, origins left out``: 8 references
  trained on D1 without the images the fingerprint's and the control's examples were made from (599–600) — like
  an independent model, they never saw those images with their true labels. Each row: the threshold, the
  references' mean and sd, and how many of the 8 + 8 testing models it calls stolen (score alone).

- ``statistic`` — **other scores from the same answers.** The score subtracts the control's CAEAcc with
  weight 1; the study's 8 calibration references (never seen by generation, never among the testing models)
  could fit a better one: the slope of fingerprint CAEAcc on control CAEAcc across them (``fp − b·control``),
  or per-example weights that count less an example many independent models follow (``1 − p``, ``p`` the
  calibration references' agreement with the key, shrunk by a prior of 0.5 each way), on the fingerprint
  alone or on both sets, or dropping the examples that more than half of them follow. Fixed slopes 0.75 and
  1.25 show how flat the optimum is (a diagnostic: they are not fitted without the testing models' help).
  Scored on the 8 + 8 testing models only: the calibration references fit the statistic.

Scored on the study's 8 + 8 testing models and, as a stricter count, against its 8 calibration
references as well (16 independent references): calibrated score (CAEAcc − CAEAcc on the study's
control set), AUC, margin, gap (mean surrogate − mean reference) and d′ (gap / pooled within-group sd).
Writes benchmarks/results/held-out-levers-fashion-mnist.json (rows are kept across commands) and
docs/results/held-out-levers-fashion-mnist.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conferprint._io import atomic_write_text
from conferprint.experiments.quickstart import DEFAULT, control_fingerprint, origins_in, prepare_study
from conferprint.experiments.zoo_builder import ZooBuilder
from conferprint.fingerprint import Fingerprint
from conferprint.fingerprint.baselines import iterative_gradient_attack
from conferprint.fingerprint.artifact import load_fingerprint
from conferprint.training import TrainConfig, augment_batch, optimizer_and_schedule, predict_labels, uses_channels_last
from conferprint.verify import separation_stats
from conferprint.verify.calibration import prediction_threshold
from conferprint.zoo import ModelSpec, Zoo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PAPERS_POOL_CEM, d_prime, separated, study_key, study_seed  # noqa: E402
from candidate_signals import agreement as agreement_matrix  # noqa: E402  (which models give the key, per example)
from ensemble_families import open_log, put_run  # noqa: E402  (the same result log)

ROOT = Path(__file__).resolve().parents[1]
STEM = "held-out-levers-fashion-mnist"
SIGMAS = (0.0, 0.02, 0.05, 0.1)

# The studies as they were run: 8 calibration references (2 per held-out architecture; the default has 12 since
# stop 23), so that the "16" columns of every row count the same 8 testing and 8 calibration references.
STUDIED = replace(DEFAULT, calibration=tuple(replace(g, count=2) for g in DEFAULT.calibration))


def study_of(name: str, data_dir, config=STUDIED):
    """A finished default study (``seed<N>`` or ``seed<N>-bf16``): its folder and ``config``'s models, reloaded."""
    folder = ROOT / "benchmarks" / "runs" / f"quickstart-{name}"
    if control_fingerprint(folder) is None:
        raise SystemExit(f"{folder}: no finished default study; run benchmarks/quickstart_seeds.py first")
    seed, amp = study_seed(name)
    return folder, seed, amp, prepare_study(config, folder / "zoo", seed=seed, data_dir=data_dir, amp=amp)


def agreement(model: nn.Module, fp: Fingerprint, sigma: float, k: int, gen: torch.Generator | None) -> float:
    """Share of ``model``'s top-1 answers equal to the keys, over ``k`` noisy copies of every query."""
    if sigma == 0:
        return float((predict_labels(model, fp.inputs) == fp.keys).float().mean())
    hits = [(predict_labels(model, (fp.inputs + sigma * torch.randn(fp.inputs.shape, generator=gen)).clamp(0, 1))
             == fp.keys).float().mean() for _ in range(k)]
    return float(torch.stack(hits).mean())


def summary(rows: list[dict]) -> dict:
    """Separation of the testing surrogates from the 8 testing references, and from those plus the
    calibration references (16)."""
    s = [r["score"] for r in rows if r["role"] == "surrogate"]
    ref8 = [r["score"] for r in rows if r["role"] == "reference" and r["group"] == "testing"]
    ref16 = ref8 + [r["score"] for r in rows if r["group"] == "calibration"]
    out = {}
    for key, refs in (("8", ref8), ("16", ref16)):
        st = separation_stats(s, refs)
        gap, dp = d_prime(s, refs)
        out[key] = {"roc_auc": st["roc_auc"], "margin": st["margin"], "gap": gap, "d_prime": dp}
    return out


def score(study, fp: Fingerprint, ctl: Fingerprint, sigma: float = 0.0, k: int = 1, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(10_000 + seed)
    rows = []
    for group, models in (("testing", study.testing), ("calibration", study.calibration)):
        for m in models:
            f, c = agreement(m.model, fp, sigma, k, gen), agreement(m.model, ctl, sigma, k, gen)
            rows.append({"name": m.name, "group": group, "role": m.meta["role"], "cae_acc": f, "control": c,
                         "score": f - c})
    return rows


def run_noise(name: str, data_dir, k: int) -> list[dict]:
    folder, seed, _, study = study_of(name, data_dir)
    fp, ctl = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    out = []
    for sigma in SIGMAS:
        rows = score(study, fp, ctl, sigma, k, seed)
        out.append({"lever": "noise", "study": name, "setting": f"sigma={sigma}", "sigma": sigma,
                    "queries_per_example": 1 if sigma == 0 else k, **summary(rows), "models": rows})
    return out


REF_CONTROL = {"eps": 0.1, "steps": 20, "size": 500}  # the training references' control sets (``control``)


class MeanLogits(nn.Module):
    """An ensemble as one model: the mean of its members' logits."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def reference_control(refs: list[nn.Module], source: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      per_member: bool, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Untargeted PGD on the training references (their mean logits, or example i on reference i mod n) from
    candidates ``x``; the first ``REF_CONTROL['size']`` examples the crafting model(s) now get wrong, keyed by
    the crafting model's label (``refs``) and by the source's (``source``)."""
    gen = torch.Generator().manual_seed(seed)
    eps, steps = REF_CONTROL["eps"], REF_CONTROL["steps"]
    crafters = refs if per_member else [MeanLogits(refs).eval()]
    owner = torch.arange(len(x)) % len(crafters)
    xa, key = torch.empty_like(x), torch.empty_like(y)
    for j, m in enumerate(crafters):
        sel = owner == j
        xa[sel] = iterative_gradient_attack(m, x[sel], y[sel], eps=eps, step_size=eps / 10, steps=steps,
                                            targeted=False, random_start=True, gen=gen)
        key[sel] = predict_labels(m, xa[sel])
    keep = torch.nonzero(key != y).flatten()[: REF_CONTROL["size"]]
    xa, key = xa[keep], key[keep]
    return {"refs": (xa, key), "source": (xa, predict_labels(source, xa))}


def run_control(name: str, data_dir) -> list[dict]:
    folder, seed, _, study = study_of(name, data_dir)
    fp, ctl = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    t = time.perf_counter()
    big = replace(DEFAULT.control, size=2000, max_candidates=8192).generate(
        study.source.model, [], [], study.x1, study.y1, seed=seed + 100, num_classes=study.data.num_classes)
    controls = {"source x2000": ((big.inputs, big.keys), time.perf_counter() - t)}
    order = torch.randperm(len(study.x1), generator=torch.Generator().manual_seed(seed + 300))[: 2 * REF_CONTROL["size"]]
    refs = [m.model for m in study.training_role("reference")]
    for per_member in (False, True):
        t = time.perf_counter()
        made = reference_control(refs, study.source.model, study.x1[order], study.y1[order], per_member=per_member,
                                 seed=seed + 400)
        for key, pair in made.items():
            controls[f"refs {'member' if per_member else 'ens'}, key {key}"] = (pair, time.perf_counter() - t)
    base = score(study, fp, ctl)
    out = [{"lever": "control", "study": name, "setting": "study's control (500)", **summary(base), "models": base}]
    for label, ((xc, kc), seconds) in controls.items():
        c = {(r["group"], r["name"]): float((predict_labels(m.model, xc) == kc).float().mean())
             for r, m in zip(base, study.testing + study.calibration)}
        for mix in (False,) if label == "source x2000" else (False, True):
            rows = []
            for r in base:
                new = c[(r["group"], r["name"])]
                rows.append({**r, "control_new": new, "score": r["cae_acc"] - ((new + r["control"]) / 2 if mix else new)})
            out.append({"lever": "control", "study": name, "setting": label + (" + study" if mix else ""),
                        "control_size": len(kc), "control_seconds": seconds, **summary(rows), "models": rows})
    return out


def mixup_train(model: nn.Module, spec: ModelSpec, source: nn.Module, x: torch.Tensor, y: torch.Tensor,
                amp: bool) -> dict:
    """Train ``model`` (``spec``'s) in place on mixup inputs: surrogates on the source's answers to the mixed
    image (probabilities, or top-1 for hard-label ones), references on the mixed ground-truth labels. The zoo's
    optimiser and schedule, shifts and seed. Returns the metrics the zoo stores."""
    t0 = time.perf_counter()
    cfg, n = TrainConfig(**spec.train), len(x)
    opt, sched = optimizer_and_schedule(model.parameters(), cfg, cfg.epochs * math.ceil(n / cfg.batch_size))
    channels_last = uses_channels_last(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        gen = torch.Generator().manual_seed(spec.seed)
        model.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg.batch_size):
                idx = perm[i: i + cfg.batch_size]
                xb = augment_batch(x[idx], cfg.shift, False, gen)
                lam = torch.rand(len(idx), 1, 1, 1, generator=gen)
                j = torch.randperm(len(idx), generator=gen)
                xm = lam * xb + (1 - lam) * xb[j]
                if spec.role == "surrogate":
                    with torch.no_grad():
                        p = F.softmax(source(xm), 1)
                    target = p if spec.labels == "soft" else F.one_hot(p.argmax(1), p.shape[1]).float()
                else:
                    onehot, w = F.one_hot(y[idx], spec.num_classes).float(), lam.view(-1, 1)
                    target = w * onehot + (1 - w) * onehot[j]
                if channels_last:
                    xm = xm.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    loss = -(target * F.log_softmax(model(xm), 1)).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return {"train_seconds": time.perf_counter() - t0}


def run_mixup(name: str, data_dir, members: str) -> list[dict]:
    folder, seed, amp, study = study_of(name, data_dir)
    zoo = Zoo(folder / "mixup-members")  # the distilled members, reused by a rerun
    source = study.source.model.eval()
    surr, refs, seconds = [], [], 0.0
    for m in study.training:
        role = m.meta["role"]
        if role == "surrogate" or members == "both":
            spec = ModelSpec.from_json(m.meta["spec"])
            spec = replace(spec, extra={**spec.extra, "mixup": "lambda~U(0,1)"})
            model, meta, now = zoo.get_or_train(spec, lambda mm, sp=spec: mixup_train(mm, sp, source, study.x1,
                                                                                     study.y1, amp))
            seconds += meta["train_seconds"] if now else 0.0
        else:
            model = m.model
        (surr if role == "surrogate" else refs).append(model)
    x_test = study.data.x_test
    on_source = predict_labels(source, x_test)
    clean = [float((predict_labels(mm, x_test) == on_source).float().mean()) for mm in surr + refs]
    cem = replace(DEFAULT.cem, bf16=amp, steps=PAPERS_POOL_CEM.steps)  # the step count of the studies it is compared with
    t = time.perf_counter()
    fp = cem.generate(source, surr, refs, study.x1, study.y1, seed=seed, num_classes=study.data.num_classes)
    cem_seconds = time.perf_counter() - t
    rows = score(study, fp, control_fingerprint(folder))
    return [{"lever": "mixup", "study": name, "setting": f"mixup {members}", "members": members,
             "train_seconds": seconds, "cem_seconds": cem_seconds,
             "clean_agreement_with_source": {"surrogates": clean[: len(surr)], "references": clean[len(surr):]},
             **summary(rows), "models": rows}]


def builder_for(study, zoo_dir: Path, seed: int, amp: bool) -> ZooBuilder:
    """Trains (or reloads from ``zoo_dir``) extra models of ``study`` with the default's recipe."""
    return ZooBuilder(Zoo(zoo_dir), study.data, DEFAULT.train, seed, amp=amp)


UNSEEN_EPOCHS = 3  # 10,000 test images instead of 30,000 D1 ones: three times the epochs, the same steps


def run_unseen(name: str, data_dir) -> list[dict]:
    folder, seed, amp, study = study_of(name, data_dir)
    b = builder_for(study, folder / "unseen-members", seed, amp)
    x, y = study.data.x_test, study.data.y_test
    jobs = [j for g in DEFAULT.training
            for j in b.group_jobs("trainT", replace(g, epochs=g.epochs * UNSEEN_EPOCHS), "T", x, y, study.source)]
    members = b.run_all(jobs)
    surr = [m.model for m in members if m.meta["role"] == "surrogate"]
    refs = [m.model for m in members if m.meta["role"] == "reference"]
    t = time.perf_counter()
    fp = replace(DEFAULT.cem, bf16=amp).generate(study.source.model, surr, refs, study.x1, study.y1, seed=seed,
                                                  num_classes=study.data.num_classes)
    cem_seconds = time.perf_counter() - t
    rows = score(study, fp, control_fingerprint(folder))
    return [{"lever": "unseen", "study": name, "setting": f"ensemble on the test images, x{UNSEEN_EPOCHS} epochs",
             "train_seconds": float(sum(m.meta.get("train_seconds") or 0.0 for m in members)), "cem_seconds": cem_seconds,
             **summary(rows), "models": rows}]


def run_calibration(name: str, data_dir) -> list[dict]:
    folder, seed, amp, study = study_of(name, data_dir)
    fp, ctl = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    base = score(study, fp, ctl)
    testing = [r for r in base if r["group"] == "testing"]
    # 16: the same groups with 4 members each (members 0 and 1 are the study's own, from its zoo)
    own = builder_for(study, folder / "zoo", seed, amp)
    four = own.run_all([j for g in STUDIED.calibration
                        for j in own.group_jobs("cal", replace(g, count=4), "D1", study.x1, study.y1, study.source)])
    keep = torch.ones(len(study.x1), dtype=torch.bool)
    dropped = origins_in(study.x1, fp, ctl)
    keep[dropped] = False
    b = builder_for(study, folder / "calibration-clean", seed, amp)
    clean = b.run_all([j for g in STUDIED.calibration
                       for j in b.group_jobs("calx", g, "D1x", study.x1[keep], study.y1[keep], study.source)])

    out = []
    three = [m for m in four if m.name[-1] in "012"]  # the first 3 of each group: ``count=3``, the default since stop 23
    for setting, models in (("8 (the study's)", study.calibration), ("12 (3 per architecture)", three),
                            ("16 (4 per architecture)", four),
                            ("8, origins left out", clean)):
        cal = [agreement(m.model, fp, 0.0, 1, None) - agreement(m.model, ctl, 0.0, 1, None) for m in models]
        fit = prediction_threshold(cal, DEFAULT.threshold_alpha)
        called = {role: sum(r["score"] >= fit["threshold"] for r in testing if r["role"] == role)
                  for role in ("surrogate", "reference")}
        out.append({"lever": "calibration", "study": name, "setting": setting, "threshold": fit["threshold"],
                    "cal_mean": fit["mean"], "cal_sd": fit["sd"], "cal_scores": cal,
                    "cal_models": [m.name for m in models], "surrogates_stolen": called["surrogate"],
                    "references_stolen": called["reference"], "origins_left_out": len(dropped) if models is clean else 0,
                    "new_train_seconds": float(sum(m.meta.get("train_seconds") or 0.0 for m in models
                                                   if m.name not in {c.name for c in study.calibration})),
                    "testing_scores": {r["name"]: r["score"] for r in testing}})
    return out


def statistic_scores(f: torch.Tensor, c: torch.Tensor, cal_f: torch.Tensor, cal_c: torch.Tensor
                     ) -> tuple[dict[str, torch.Tensor], float]:
    """The ``statistic`` lever's scores of the models whose answers on the fingerprint and the control are ``f``
    and ``c``, each fitted on the calibration references' answers ``cal_f`` and ``cal_c`` only; and the fitted slope."""
    r = len(cal_f)
    fa, ca = cal_f.mean(1), cal_c.mean(1)
    b = float(((ca - ca.mean()) * (fa - fa.mean())).sum() / ((ca - ca.mean()) ** 2).sum().clamp_min(1e-12))
    w_f, w_c = 1 - (cal_f.sum(0) + 0.5) / (r + 1), 1 - (cal_c.sum(0) + 0.5) / (r + 1)
    weighted = lambda a, w: (a * w).sum(1) / w.sum()  # noqa: E731
    keep = cal_f.mean(0) <= 0.5
    return {"difference (the study's)": f.mean(1) - c.mean(1),
            "fp − b·control, b fitted on the calibration references": f.mean(1) - b * c.mean(1),
            "fp − 0.75·control (diagnostic)": f.mean(1) - 0.75 * c.mean(1),
            "fp − 1.25·control (diagnostic)": f.mean(1) - 1.25 * c.mean(1),
            "fp weighted by 1 − p, − control": weighted(f, w_f) - c.mean(1),
            "fp and control weighted by 1 − p": weighted(f, w_f) - weighted(c, w_c),
            "fp without examples p > 0.5, − control": f[:, keep].mean(1) - c.mean(1)}, b


def run_statistic(name: str, data_dir) -> list[dict]:
    folder, _, _, study = study_of(name, data_dir)
    fp, ctl = load_fingerprint(folder / "fingerprint.json"), control_fingerprint(folder)
    roles = [m.meta["role"] for m in study.testing]
    answers = lambda models, f: torch.from_numpy(agreement_matrix(models, f.inputs, f.keys))  # noqa: E731
    scores, slope = statistic_scores(answers(study.testing, fp), answers(study.testing, ctl),
                                     answers(study.calibration, fp), answers(study.calibration, ctl))
    out = []
    for order, (setting, sc) in enumerate(scores.items()):
        pos = [float(v) for v, r in zip(sc, roles) if r == "surrogate"]
        neg = [float(v) for v, r in zip(sc, roles) if r == "reference"]
        st = separation_stats(pos, neg)
        gap, dp = d_prime(pos, neg)
        out.append({"lever": "statistic", "study": name, "setting": setting, "order": order, "slope": slope,
                    "8": {"roc_auc": st["roc_auc"], "margin": st["margin"], "gap": gap, "d_prime": dp},
                    "scores": {m.name: float(v) for m, v in zip(study.testing, sc)}})
    return out


def write_md(payload: dict, path: Path) -> None:
    lines = ["# Held-out levers: noisy queries, a mixup-distilled training ensemble, other control sets, an ensemble on "
             "unseen images, the calibration references, other statistics (Fashion-MNIST)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload["commands"]), "",
             "Each row: the study's testing surrogates against its 8 testing references, and against those plus its 8 "
             "calibration references (16). Score = CAEAcc − CAEAcc on the study's control set. `sigma=0` is the study "
             "itself; `mixup` rows regenerate the fingerprint (the default's CEM) on the distilled ensemble; `control` rows "
             "keep the fingerprint and replace the control set (`+ study`: the mean of both controls' CAEAcc); the `unseen` row "
             "regenerates it on an ensemble trained on the test images.", "",
             "| study | setting | AUC (8) | margin (8) | gap (8) | d′ (8) | AUC (16) | margin (16) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in (x for x in payload["runs"] if x["lever"] not in ("calibration", "statistic")):
        a, b = r["8"], r["16"]
        lines.append(f"| {r['study']} | {r['setting']} | {a['roc_auc']:.3f} | {a['margin']:+.3f} | {a['gap']:.3f} | "
                     f"{a['d_prime']:.2f} | {b['roc_auc']:.3f} | {b['margin']:+.3f} |")
    mix = [r for r in payload["runs"] if r["lever"] == "mixup"]
    if mix:
        lines += ["", "Mixup rows: agreement with the source on the test images (mean over members), training and CEM time:", ""]
        for r in mix:
            c = r["clean_agreement_with_source"]
            lines.append(f"- {r['study']}, {r['setting']}: surrogates {np.mean(c['surrogates']):.3f}, references "
                         f"{np.mean(c['references']):.3f}; trained {r['train_seconds']:.0f} s (0 = reused), CEM {r['cem_seconds']:.0f} s")
    cal = [r for r in payload["runs"] if r["lever"] == "calibration"]
    if cal:
        lines += ["", "Calibration rows (`calibration`): the verdict's threshold (upper 95 % prediction bound of the "
                  "calibration references' scores) and the testing models it calls stolen by the score:", "",
                  "| study | calibration references | mean | sd | threshold | surrogates stolen | references stolen |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in cal:
            lines.append(f"| {r['study']} | {r['setting']} | {r['cal_mean']:+.3f} | {r['cal_sd']:.3f} | {r['threshold']:.3f} | "
                         f"{r['surrogates_stolen']} / 8 | {r['references_stolen']} / 8 |")
        for setting in dict.fromkeys(r["setting"] for r in cal):
            rows = [r for r in cal if r["setting"] == setting]
            lines.append(f"| all {len(rows)} | {setting} | | | | {sum(r['surrogates_stolen'] for r in rows)} / {8 * len(rows)} | "
                         f"{sum(r['references_stolen'] for r in rows)} / {8 * len(rows)} |")
    stat = [r for r in payload["runs"] if r["lever"] == "statistic"]
    if stat:
        studies = sorted(dict.fromkeys(r["study"] for r in stat),
                         key=study_key)
        lines += ["", "Statistic rows (`statistic`): other scores from the same answers, fitted on the study's 8 calibration "
                  "references; AUC / margin / d′ on the 8 + 8 testing models, and over the studies: how many meet the goal "
                  "(AUC ≥ 0.95, margin > 0) and the mean d′. Slopes fitted: " + ", ".join(
                      f"{n} {r['slope']:.2f}" for n in studies for r in stat
                      if r["study"] == n and r["setting"].startswith("fp − b")) + ".", "",
                  "| statistic | " + " | ".join(studies) + " | goal met | mean d′ |", "| --- |" + " --- |" * (len(studies) + 2)]
        settings = list(dict.fromkeys(r["setting"] for r in sorted(stat, key=lambda r: r.get("order", 99))))
        for setting in settings:
            rows = {r["study"]: r["8"] for r in stat if r["setting"] == setting}
            cells = [f"{rows[s]['roc_auc']:.3f} / {rows[s]['margin']:+.3f} / {rows[s]['d_prime']:.2f}" if s in rows else "–"
                     for s in studies]
            met = sum(separated(v["roc_auc"], v["margin"]) for v in rows.values())
            lines.append(f"| {setting} | " + " | ".join(cells) + f" | {met} / {len(rows)} | "
                         f"{np.mean([v['d_prime'] for v in rows.values()]):.2f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lever", choices=["noise", "mixup", "control", "unseen", "calibration", "statistic"])
    p.add_argument("--studies", nargs="+", default=["seed0", "seed1", "seed2"])
    p.add_argument("--members", nargs="+", choices=["surrogates", "both"], default=["surrogates", "both"])
    p.add_argument("--k", type=int, default=8, help="noisy copies of every query (noise)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    out = ROOT / "benchmarks" / "results" / f"{STEM}.json"
    payload = open_log(out, "python benchmarks/held_out_levers.py " + " ".join(sys.argv[1:] if argv is None else argv))
    for name in args.studies:
        if args.lever == "noise":
            rows = run_noise(name, args.data_dir, args.k)
        elif args.lever == "control":
            rows = run_control(name, args.data_dir)
        elif args.lever == "unseen":
            rows = run_unseen(name, args.data_dir)
        elif args.lever == "calibration":
            rows = run_calibration(name, args.data_dir)
        elif args.lever == "statistic":
            rows = run_statistic(name, args.data_dir)
        else:
            rows = [r for members in args.members for r in run_mixup(name, args.data_dir, members)]
        for r in rows:
            put_run(payload, r, key=lambda x: (x["lever"], x["study"], x["setting"]))
        atomic_write_text(out, json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / f"{STEM}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
