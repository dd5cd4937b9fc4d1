"""The separation study's benchmark runs end to end (its smoke mode: tiny models, results in the work folder).

It once passed a setting that the library had changed into another type, and would have crashed on its
next real run; this runs every setting of its sweep on tiny models, as a subprocess like its users do."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import FMNIST_DIR, ROOT
import pytest


def smoke_run(script: str, out) -> dict:
    """``benchmarks/<script> --smoke --seeds 0`` run as its users run it (a subprocess) into ``out``; its smoke.json.
    Skips where Fashion-MNIST is not installed."""
    if not FMNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--seeds", "0",
                           "--out", str(out), "--data-dir", str(FMNIST_DIR)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "smoke.json").read_text())


def test_separation_benchmark_smoke_runs_every_setting(tmp_path):
    out = tmp_path / "sep"
    res = smoke_run("separation.py", out)
    settings = res["runs"][0]["settings"]
    # the baseline, the default's CEM and its levers are all there
    assert {"pgd", "cem-pool", "cem-pool-correct", "cem-pool-errors", "cem-source-arch", "cem-base", "pgd-eps0.1"} <= set(settings)
    scored = [s for s in settings.values() if "roc_auc" in s]
    # on tiny models a strict setting (τ = 1, the source's label as target) may keep no example: it says why
    failed = [s for s in settings.values() if "roc_auc" not in s]
    assert all("none of" in s["error"] for s in failed) and len(scored) >= 12
    for s in scored:
        assert 0.0 <= s["roc_auc"] <= 1.0 and s["n_surrogates"] == 3 and s["n_references"] == 3
        assert s["min_surrogate"] - s["max_reference"] == pytest.approx(s["margin"], abs=1e-6)
    assert (out / "smoke.md").is_file() and (out / "smoke-eps.png").is_file()
    assert "(smoke-eps.png)" in (out / "smoke.md").read_text()  # the report links its own plot
    # every CEM setting is also scored as the quickstart scores (the tiny preset has no control set: its PGD baseline)
    ctl = settings["cem-pool"]["calibrated_diff_control"]
    # (the same difference, rounded to 6 decimals as the quickstart rounds it)
    assert ctl["control"] == "pgd"
    assert ctl["margin"] == pytest.approx(settings["cem-pool"]["calibrated_diff_pgd"]["margin"], abs=1e-6)
    # a mixed fingerprint's size lever is a CEM run of its own, not the first 50 of the default's
    assert "derived_from" not in settings["cem-pool-size50"] and settings["cem-pool-size50"]["params"]["candidates"] == "mixed"
    assert "calibrated_diff_control" not in settings["pgd"]


def _one_lever_each(sweep: dict, cfg) -> None:
    """Each CEM setting differs from the preset's CEM in one field (the paper's weights change β and γ together,
    and the target with them in one setting), or in its ensemble alone; each PGD setting from its PGD in ε and step."""
    from dataclasses import fields

    q = cfg.cem
    assert sweep["cem-pool"] == ("pool", q) and sweep["pgd"] == ("none", cfg.pgd)
    for name, (ens, m) in sweep.items():
        base = q if name.startswith("cem-") else cfg.pgd
        changed = {f.name for f in fields(base) if getattr(m, f.name) != getattr(base, f.name)}
        if name.startswith("cem-"):
            assert len(changed) <= (3 if "paper-weights" in name else 1), (name, changed)
            assert (ens == "pool") == bool(changed) or name == "cem-pool", (name, ens, changed)
        else:
            assert ens == "none" and changed <= {"eps", "step_size"}, (name, changed)
            assert m.step_size == pytest.approx(m.eps / 10)


def test_separation_sweeps_change_one_lever_at_a_time_from_their_presets():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from separation import EPS_SERIES, fmnist_settings, settings
    from conferprint.experiments.quickstart import DEFAULT

    sweep = {name: (ens, m) for name, ens, m in fmnist_settings()}
    _one_lever_each(sweep, DEFAULT)
    assert sweep["cem-pool-correct"][1].candidates == "correct" and sweep["cem-pool-errors"][1].candidates == "errors"
    assert sweep["cem-pool-size50"][1].size == 50 and sweep["cem-base"][0] == "base"
    for series in EPS_SERIES["fashion-mnist"].values():
        assert all(n in sweep for n, _ in series)
    assert [n for n, _, _ in settings(False, ["cem-base"], "fashion-mnist")] == ["pgd", "cem-base"]


def test_separation_report_name_must_be_a_plain_file_name(tmp_path, capsys):
    """--report names the follow-up's JSON, markdown and plot; a path or odd name is refused before any work."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from separation import main

    for bad in ("../x", "a/b", "a b"):
        with pytest.raises(SystemExit) as e:
            main(["--report", bad, "--out", str(tmp_path / "work"), "--smoke"])
        assert e.value.code == 2 and "--report" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was trained or written


def test_separation_cifar_sweep_changes_one_lever_at_a_time_and_reuses_only_what_exists(tmp_path):
    """CIFAR-10's sweep changes one lever of the `cifar10-cpu-hour` preset's CEM at a time, the plot's points are
    settings, and the runs of other benchmarks are brought in by the names their settings have (a missing or
    damaged run is skipped; nothing is overwritten)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from separation import EPS_SERIES, cifar_settings, link_reused, reuse_runs
    from conferprint.experiments.quickstart import CIFAR10_CPU_HOUR

    sweep = {name: (ens, m) for name, ens, m in cifar_settings()}
    q = CIFAR10_CPU_HOUR.cem
    _one_lever_each(sweep, CIFAR10_CPU_HOUR)
    assert sweep["cem-pool-eps0.02"][1].eps == 0.02 and sweep["pgd-eps0.005"][1].eps == 0.005
    # the extra, cheaper models join only the ensemble named for them, and are nobody's calibration references
    from types import SimpleNamespace
    from separation import calibration_refs, ensemble

    def member(name, arch):
        return SimpleNamespace(name=name, arch=arch)

    roles = {"surrogate": [member("train-surrogate-cnn32-soft-0", "cnn32"), member("train-surrogate-cnn32-soft-extra0", "cnn32")],
             "reference": [member("train-reference-cnn32-ground_truth-0", "cnn32"), member("train-reference-mlp32-ground_truth-0", "mlp32"),
                           member("train-reference-cnn32-ground_truth-extra0", "cnn32")]}
    study = SimpleNamespace(training_role=roles.__getitem__, source=SimpleNamespace(arch="cnn32"))
    assert [len(g) for g in ensemble(study, "pool")] == [1, 2] and [len(g) for g in ensemble(study, "pool+extra")] == [2, 3]
    assert [m.name for m in ensemble(study, "source-arch")[1]] == ["train-reference-cnn32-ground_truth-0"]
    assert [m.name for m in calibration_refs(study, "source-arch")] == ["train-reference-mlp32-ground_truth-0"]
    assert sweep["cem-pool-more-refs"] == ("pool+extra", q)
    from separation import settings  # Fashion-MNIST's sweep has no extra models, so no ensemble that names them
    assert not any(ens.endswith("+extra") for _, ens, _ in settings(True, [], "fashion-mnist"))
    for series in EPS_SERIES["cifar10"].values():
        assert all(n in sweep for n, _ in series)

    import torch
    from conferprint.fingerprint import Fingerprint, load_fingerprint, save_fingerprint

    def fingerprint(value: float) -> Fingerprint:
        return Fingerprint(torch.full((2, 3, 4, 4), value), torch.tensor([1, 2]), manifest={"method": "test"})

    runs, out = tmp_path / "runs", tmp_path / "sep"
    base = runs / "cifar10-cpu-hour-seed3"
    (base / "zoo").mkdir(parents=True)
    (base / "zoo" / "m.safetensors").write_bytes(b"weights")
    save_fingerprint(fingerprint(0.1), base / "fingerprint")
    save_fingerprint(fingerprint(0.2), base / "fingerprint-pgd")
    save_fingerprint(fingerprint(0.3), runs / "cifar10-cpu-hour-eps0.005-seed3" / "fingerprint")
    save_fingerprint(fingerprint(0.4), base / "fingerprint-control")
    (base / "fingerprint-control.safetensors").write_bytes(b"damaged")  # no longer its manifest's: not brought
    out.mkdir()
    (out / "fp-seed3-pgd.json").write_text('{"mine": 1}')  # already there: kept
    assert set(reuse_runs("fashion-mnist", 3, runs)) == {"zoo", "cem-pool", "pgd", "control"}
    assert reuse_runs("fashion-mnist", 3, runs)["zoo"] == runs / "quickstart-seed3" / "zoo"
    found = reuse_runs("cifar10", 3, runs)
    assert set(found) >= {"zoo", "cem-pool", "pgd", "control", "cem-pool-mixed", "cem-pool-eps0.005", "pgd-eps0.02"}
    assert link_reused(found, out, 3) == ["zoo", "cem-pool", "cem-pool-eps0.005"]
    assert (out / "zoo-seed3" / "m.safetensors").read_bytes() == b"weights"
    assert float(load_fingerprint(out / "fp-seed3-cem-pool").inputs.mean()) == pytest.approx(0.1)
    assert float(load_fingerprint(out / "fp-seed3-cem-pool-eps0.005").inputs.mean()) == pytest.approx(0.3)
    assert (out / "fp-seed3-pgd.json").read_text() == '{"mine": 1}' and not (out / "fp-seed3-pgd.safetensors").exists()
    assert not (out / "fp-seed3-control.safetensors").exists()
    assert link_reused(found, out, 3) == []  # a second run brings nothing again


def test_reference_control_is_crafted_on_the_references_and_keyed_both_ways():
    """held_out_levers' control sets from the training references: inside the ε-ball, wrong for the model that
    crafted each example (its key), and also keyed by the source's own answers."""
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from held_out_levers import REF_CONTROL, reference_control
    from conferprint.training import predict_labels

    torch.manual_seed(0)
    refs = [nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)) for _ in range(3)]
    source = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    x, y = torch.rand(60, 1, 28, 28), torch.randint(0, 10, (60,))
    for per_member in (False, True):
        made = reference_control(refs, source, x, y, per_member=per_member, seed=1)
        xa, key = made["refs"]
        assert 0 < len(xa) <= REF_CONTROL["size"] and torch.equal(made["source"][0], xa)
        assert torch.equal(made["source"][1], predict_labels(source, xa))
        # each example is among the candidates' perturbations: find its original by the ε-ball
        dist = (xa.flatten(1)[:, None, :] - x.flatten(1)[None]).abs().amax(-1)
        orig = dist.argmin(1)
        assert float(dist.min(1).values.max()) <= REF_CONTROL["eps"] + 1e-6
        assert bool((key != y[orig]).all())  # kept only where the crafting model now answers wrong
        if not per_member:  # the ensemble's answer is the key
            ens = torch.stack([m(xa) for m in refs]).mean(0).argmax(1)
            assert torch.equal(key, ens)


def test_default_calibration_has_three_references_per_held_out_architecture():
    """The default's verdict threshold is fitted on 12 D1 references, 3 per testing architecture with its epochs
    (stop 23; docs/results/separation-summary.md §16), and the benchmarks that reload the older studies keep 8."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from held_out_levers import STUDIED
    from conferprint.experiments.quickstart import DEFAULT

    archs = {(g.arch, g.epochs) for g in DEFAULT.testing}
    assert {(g.arch, g.epochs) for g in DEFAULT.calibration} == archs
    assert all(g.count == 3 and g.role == "reference" and g.labels == "ground_truth" for g in DEFAULT.calibration)
    assert sum(g.count for g in STUDIED.calibration) == 8 and STUDIED.testing == DEFAULT.testing


def test_quickstart_seeds_collects_older_runs_and_refits_the_tolerance_rule():
    """quickstart_seeds --collect accepts a run made before a config field existed, where the preset keeps that
    field at its default, and refuses one whose recorded settings differ; its tolerance column refits the bound
    on the run's own calibration scores and counts the testing models at or above it."""
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quickstart_seeds import same_config, tolerance_verdicts
    from conferprint.experiments.quickstart import DEFAULT
    from conferprint.verify.calibration import tolerance_threshold

    # fields at the config's defaults: the verdict's bound (the default preset's until §37) and the CEM's ranking and
    # queries (until §43)
    base = replace(DEFAULT, threshold_rule="prediction",
                   cem=replace(DEFAULT.cem, rank="confer", rank_top=300, query_shifts=False))
    now = base.to_dict()
    older = {k: v for k, v in now.items() if k not in ("threshold_rule", "threshold_confidence")}
    assert same_config(now, base) and same_config(older, base)
    assert not same_config(older, DEFAULT)  # the default preset's verdict now uses the tolerance bound
    assert not same_config({**older, "threshold_alpha": 0.1}, base) and not same_config({**now, "new": 1}, base)
    # a field added to a part (the CEM's ranking, §41) counts as that part's default in a run made before it
    cem_older = {k: v for k, v in now["cem"].items() if k not in ("rank", "rank_top", "query_shifts")}
    assert same_config({**now, "cem": cem_older}, base)
    assert not same_config({**now, "cem": cem_older}, replace(base, cem=replace(base.cem, rank="shift")))
    assert not same_config({**now, "cem": {**cem_older, "eps": 0.1}}, base)
    cal = [0.0, 0.05, -0.05, 0.1, 0.02]
    thr = tolerance_threshold(cal, 0.05, 0.9)["threshold"]
    res = {"threshold_fit": {"scores": cal, "alpha": 0.05},
           "models": [{"role": "surrogate", "score": thr}, {"role": "surrogate", "score": thr - 1e-9},
                      {"role": "reference", "score": thr + 0.1}, {"role": "reference", "score": 0.0}]}
    got = tolerance_verdicts(res)
    assert got["threshold"] == pytest.approx(thr) and (got["surrogates"], got["references"]) == (1, 1)
    assert tolerance_verdicts({"threshold_fit": None, "models": []}) is None


def test_quickstart_seeds_reports_the_prediction_bound_beside_a_tolerance_verdict(tmp_path):
    """quickstart_seeds: where a run's verdict is the tolerance bound (the default since stop 41), the report names
    it so and shows the prediction bound's verdicts beside it, refitted on the run's calibration scores; a series
    of prediction-bound runs keeps the tolerance column."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quickstart_seeds as qs
    from conferprint.verify.calibration import prediction_threshold, tolerance_threshold

    cal = [0.0, 0.05, -0.05, 0.1, 0.02]
    tol, pred = tolerance_threshold(cal, 0.05, 0.9), prediction_threshold(cal, 0.05)
    assert pred["threshold"] < tol["threshold"]
    mid = (pred["threshold"] + tol["threshold"]) / 2
    models = [{"name": f"test-{i}", "cae_acc": 0.5, "role": role, "score": score} for i, (role, score) in enumerate(
        [("surrogate", tol["threshold"] + 0.01), ("surrogate", mid), ("reference", mid), ("reference", 0.0)])]

    def run(fit, thr):
        r = {"threshold_fit": {**fit, "scores": cal, "n_references": 5}, "threshold": thr, "models": models}
        return {**r, "seed": 0, "retrained": {"count": 1, "of": 1}, "timings": {"total": 1.0}, "from_nothing_seconds": 1.0,
                "source_test_acc": 0.9, "roc_auc": 1.0, "margin": 0.1, "d_prime": 3.0, "tpr_at_fpr_0": 1.0,
                "raw_cae_acc": {}, "pgd": None, "goal_met": True, "n_surrogates": 2, "n_references": 2,
                "decisions": {"true_positives": qs.called_stolen(models, thr, "surrogate"),
                              "false_positives": qs.called_stolen(models, thr, "reference")},
                "tolerance_rule": qs.tolerance_verdicts({"threshold_fit": {"scores": cal, "alpha": 0.05}, "models": models})}

    tol_run, pred_run = run(tol, tol["threshold"]), run(pred, pred["threshold"])
    assert qs.is_tolerance(tol_run["threshold_fit"]) and not qs.is_tolerance(pred_run["threshold_fit"])
    got = qs.prediction_verdicts(tol_run)
    assert got["threshold"] == pytest.approx(pred["threshold"]) and (got["surrogates"], got["references"]) == (2, 1)
    t = qs.summary([tol_run])
    assert (t["surrogates_called_stolen"], t["references_called_stolen"]) == (1, 0)
    assert t["prediction"] == {"surrogates_called_stolen": 2, "references_called_stolen": 1}
    assert qs.summary([pred_run])["prediction"] is None and qs.summary([tol_run, pred_run])["prediction"] is None
    payload = {"preset": {"preset": "tiny", "testing": [{"arch": "mlp"}]}, "command": "c", "runs": [tol_run],
               "summary": t}
    qs.write_md(payload, tmp_path / "t.md")
    text = (tmp_path / "t.md").read_text()
    assert "tolerance bound at 90% confidence of the scores" in text and "prediction bound of the scores" not in text
    assert "tolerance bound (the verdict) → prediction bound" in text and "the score at the prediction bound: 2 and 1" in text
    payload = {**payload, "runs": [pred_run], "summary": qs.summary([pred_run])}
    qs.write_md(payload, tmp_path / "p.md")
    text = (tmp_path / "p.md").read_text()
    assert "95% prediction bound of the scores" in text and "prediction bound → tolerance bound" in text


def test_statistic_scores_are_fitted_on_the_calibration_answers_only():
    """held_out_levers' ``statistic`` lever: the study's difference, the slope of fingerprint on control CAEAcc
    across the calibration references, and per-example weights and drops from their agreement."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from held_out_levers import statistic_scores

    ones = lambda k, n: torch.tensor([1.0] * k + [0.0] * (n - k))  # noqa: E731
    cal_c = torch.stack([ones(k, 10) for k in (1, 2, 3, 4)])
    cal_f = torch.stack([ones(2 * k, 10) for k in (1, 2, 3, 4)])  # fingerprint CAEAcc = 2 x control CAEAcc
    f = torch.tensor([[1.0] * 10, [0.0] * 10, [1.0] * 5 + [0.0] * 5])
    c = torch.tensor([[0.0] * 10, [1.0] * 10, [1.0] * 10])
    scores, slope = statistic_scores(f, c, cal_f, cal_c)
    assert slope == pytest.approx(2.0)
    assert torch.allclose(scores["difference (the study's)"], torch.tensor([1.0, -1.0, -0.5]))
    assert torch.allclose(scores["fp − b·control, b fitted on the calibration references"], torch.tensor([1.0, -2.0, -1.5]))
    # examples 0-3 are followed by 3 or 4 of the 4 calibration references (more than half): dropped; of the other
    # six, the third model matches the key on one
    assert torch.allclose(scores["fp without examples p > 0.5, − control"], torch.tensor([1.0, -1.0, 1 / 6 - 1]))
    w = 1 - (cal_f.sum(0) + 0.5) / 5
    assert torch.allclose(scores["fp weighted by 1 − p, − control"][2], (f[2] * w).sum() / w.sum() - 1.0)
    assert float(scores["fp weighted by 1 − p, − control"][2]) < float(scores["difference (the study's)"][2])


def test_end_to_end_summary_meets_the_goal_only_fast_and_separated():
    """benchmarks/end_to_end.py: the goal is met under 10 minutes of wall time with AUC ≥ 0.95 and a positive
    margin, not otherwise; the run's own figures are carried over."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from end_to_end import summarize

    res = {"separation": {"margin": 0.1}, "roc_auc": 1.0, "retrained": {"count": 55, "of": 55}, "timings": {"total": 500},
           "recorded_costs": {"total": 480}, "fingerprint": {"content_sha256": "ab"}, "threshold": 0.2,
           "decisions": {"true_positives": 7, "false_positives": 0}, "config": {"preset": "default"}, "seed": 0,
           "versions": {"torch": "x"}}
    ok = summarize(res, commit="c", setup_seconds=30.0, wall_seconds=590.0)
    assert ok["met"] and ok["separation_goal_met"] and ok["fingerprint_sha256"] == "ab" and ok["commit"] == "c"
    assert not summarize(res, commit="c", setup_seconds=30.0, wall_seconds=610.0)["met"]
    res["separation"]["margin"] = -0.01
    slow_or_not = summarize(res, commit="c", setup_seconds=30.0, wall_seconds=100.0)
    assert not slow_or_not["met"] and not slow_or_not["separation_goal_met"]


@pytest.mark.parametrize("pool", ["correct", "errors"])
def test_cifar_levers_replays_cem_generate_candidate_for_candidate(digit_models, digits, pool):
    """cifar_levers optimises each pool as CEM.generate does: its "hard" pick is CEM's fingerprint, example for
    example (same keys, same training Confer, same answers of the testing models)."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from conferprint.fingerprint import CEM
    from conferprint.training import predict_labels

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cifar_levers

    m = digit_models
    half = len(digits.x_train) // 2  # the half the source never saw: it makes mistakes there
    x, y = digits.x_train[half:], digits.y_train[half:]
    wrap = SimpleNamespace
    study = wrap(source=wrap(model=m["source"]), x1=x, y1=y,
                 testing=[wrap(model=m["references"][1]), wrap(model=m["surrogates"][1])],
                 training_role=lambda role: [wrap(model=x) for x in m["surrogates" if role == "surrogate" else "references"]])
    cem = CEM(eps=0.1, steps=8, size=12, batch_size=32, max_candidates=96, target="conferrable", tau=0.5,
              search="best", balance=False, candidates=pool)
    fp = cem.generate(m["source"], m["surrogates"], m["references"], x, y, seed=3)
    c = cifar_levers.optimise_pool(study, cem, 3)
    idx = cifar_levers.pick(c, "hard", cem.size)
    assert len(idx) == len(fp) and c["candidates"] == min(96, int(((predict_labels(m["source"], x) == y)
                                                                  == (pool == "correct")).sum()))
    assert torch.equal(fp.keys, torch.as_tensor(c["t"][idx]))
    assert np.allclose(fp.train_confer.numpy(), c["hard"][idx])
    agree = np.stack([(predict_labels(t.model, fp.inputs) == fp.keys).numpy() for t in study.testing])
    assert (agree == c["agree"][:, idx]).all()
    # the tie-break only reorders candidates of equal hard Confer
    tb = cifar_levers.pick(c, "hard+soft", cem.size)
    assert sorted(c["hard"][tb]) == sorted(c["hard"][idx])
    # cem_budget's premise: CEM with a smaller budget optimises a prefix of the same candidates, so the best of the
    # replay's first half is its fingerprint
    import cem_budget
    from dataclasses import replace

    k = len(c["t"]) // 2
    small = replace(cem, max_candidates=k).generate(m["source"], m["surrogates"], m["references"], x, y, seed=3)
    first = cem_budget.prefix(c, k)
    assert len(first["t"]) == k and first["agree"].shape == (2, k) and first["seconds"] == c["seconds"]
    kept = cifar_levers.pick(first, "hard", cem.size)
    assert torch.equal(small.keys, torch.as_tensor(c["t"][kept]))
    assert np.allclose(small.train_confer.numpy(), c["hard"][kept])


def test_mix_share_takes_each_pools_best_and_ranks_both_jointly():
    """mix_share's fingerprints: k from the mistakes pool and 100 − k from the papers' pool, each by hard Confer
    among its kept candidates; ``joint`` ranks both pools together; a pool that keeps too few gives no fingerprint."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mix_share

    rng = np.random.default_rng(0)
    n, models = 300, 4

    def pool(offset):
        hard = rng.permutation(n) / n + offset  # distinct Confers; the mistakes pool's are higher by ``offset``
        keep = np.ones(n, bool)
        keep[::7] = False  # not adversarial, or below τ: never picked
        agree = np.tile(np.arange(n) + (10_000 if offset else 0), (models, 1))  # answers name the candidate
        return {"hard": hard, "keep": keep, "agree": agree}

    c, e = pool(0.0), pool(0.5)
    fps = mix_share.fingerprints({"correct": c, "errors": e})
    size = mix_share.SIZE
    for k in mix_share.SHARES:
        got = fps[f"{k} mistakes"][0]
        from_e, from_c = got[got >= 10_000] - 10_000, got[got < 10_000]
        assert len(from_e) == k and len(from_c) == size - k
        for ids, p in ((from_c, c), (from_e, e)):
            assert p["keep"][ids].all()
            if len(ids):  # the pool's best: no kept candidate left out beats one taken
                rest = np.setdiff1d(np.flatnonzero(p["keep"]), ids)
                assert p["hard"][ids].min() > p["hard"][rest].max()
    joint = fps["joint"][0]
    assert int(fps["joint_mistakes"]) == int((joint >= 10_000).sum())
    confer = np.where(joint >= 10_000, e["hard"][joint % 10_000], c["hard"][joint % 10_000])
    assert (np.diff(confer) <= 0).all()  # best first, across both pools
    e_short = {**e, "keep": np.arange(n) < 30}  # 30 kept mistakes: 50, 75 and 100 cannot be made
    short = mix_share.fingerprints({"correct": c, "errors": e_short})
    assert short["25 mistakes"] is not None and short["50 mistakes"] is None and short["100 mistakes"] is None


def test_held_back_splits_pools_and_follows_its_protocol():
    """held_back: each setting takes its pools' best by hard Confer; the protocol picks on seeds 0-6 by goal met
    then d', excludes a setting with more false accusations than the default there, and confirms on the rest."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import held_back

    n = 120
    pools = {name: {"hard": np.arange(n)[::-1] / n, "keep": np.ones(n, bool),
                    "agree": np.tile(np.arange(n) + 1000 * i, (2, 1))} for i, name in enumerate(("correct", "errors", "held"))}
    got = held_back.fingerprint_answers(pools, (25, 50, 25))[0]
    assert sorted(got) == [*range(25), *range(1000, 1050), *range(2000, 2025)]  # the first (best) of each pool
    assert held_back.fingerprint_answers(pools, (0, 0, n + 1)) is None

    def row(study, **by):  # by[setting] = (auc, margin, d', references stolen)
        return {"study": study, "settings": {k: {"roc_auc": a, "margin": m, "d_prime": d, "gap": 0.1,
                                                 "surrogates_stolen": 4, "references_stolen": r, "cal_minus_test_refs": 0.0}
                                             for k, (a, m, d, r) in by.items()}}

    good, bad = (1.0, 0.05, 4.0, 0), (0.9, -0.05, 2.0, 0)
    base = dict.fromkeys(held_back.SETTINGS, bad)
    choose = [row(f"seed{s}", **{**base, "held 75": good, "held 100": (1.0, 0.05, 5.0, 1)}) for s in range(7)]
    confirm = [row("seed7", **{**base, "held 75": good}), row("seed0-bf16", **base)]
    proto = held_back.protocol(choose + confirm)
    # held 100 met the goal as often with a higher d', but accused more references than the default: excluded
    assert proto["pick"] == "held 75" and "held 100" not in proto["eligible"] and proto["confirmed"]
    worse = [row("seed7", **base), row("seed0-bf16", **{**base, "D1 75": good})]
    assert not held_back.protocol(choose + worse)["confirmed"]  # the default met it more often there
    assert held_back.protocol(choose[:6] + confirm) is None  # seeds 0-6 not all in yet


def test_cross_fit_halves_and_ranking():
    """cross_fit: D1's two halves are seeded, disjoint and even; a ranking picks among the kept candidates by its
    own key (cross-fitted Confer), ties by Confer on the training models."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cross_fit

    h = cross_fit.halves(1001, seed=3)
    assert set(np.unique(h)) == {0, 1} and abs(int(h.sum()) - 500) <= 1
    assert np.array_equal(h, cross_fit.halves(1001, seed=3)) and not np.array_equal(h, cross_fit.halves(1001, seed=4))
    c = {"keep": np.array([True, True, True, False, True]), "hard": np.array([0.9, 0.5, 0.5, 1.0, 0.1]),
         "cross": np.array([0.2, 0.6, 0.6, 1.0, 0.8]), "seen": np.array([0.9, 0.0, 0.1, 1.0, 0.0])}
    assert cross_fit.pick(c, "training models", 3).tolist() == [0, 1, 2]
    assert cross_fit.pick(c, "cross-fit", 3).tolist() == [4, 1, 2]  # 1 and 2 tie on both keys: by position
    assert cross_fit.pick(c, "seen half", 2).tolist() == [0, 2]  # never the unkept candidate 3


def test_fingerprint_size_splits_pools_and_tells_affinity_from_the_examples_noise():
    """fingerprint_size: a size n takes the pools' best n − ⌊0.75 n⌋ and ⌊0.75 n⌋; the noise decomposition finds
    no affinity in models answering independently, and finds it where each model has its own rate."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fingerprint_size as fs

    rng = np.random.default_rng(0)
    pools = {p: {"keep": np.ones(20, bool), "hard": np.linspace(1, 0, 20), "agree": np.arange(20)[None, :] + 100 * i}
             for i, p in enumerate(("correct", "errors"))}
    from conferprint.experiments.quickstart import DEFAULT

    assert DEFAULT.cem.errors_share == 0.75
    got = fs.pick(pools, 8, DEFAULT.cem)[0]
    assert got.tolist() == [0, 1, 100, 101, 102, 103, 104, 105]  # 2 correct, 6 mistakes, each pool's best first
    assert fs.pick(pools, 40, DEFAULT.cem) is None  # 30 mistakes asked of a pool keeping 20

    is_surr = np.array([True] * 8 + [False] * 8)
    n = 400

    def decompose(rates):
        answers = rng.random((16, n)) < rates[:, None]
        ctl = rng.random((16, 500)) < 0.5
        scores = answers.mean(1) - ctl.mean(1)
        return fs.noise(answers, ctl, scores, is_surr)

    same = [decompose(np.r_[np.full(8, 0.7), np.full(8, 0.4)]) for _ in range(200)]
    own = [decompose(np.r_[rng.normal(0.7, 0.1, 8), rng.normal(0.4, 0.1, 8)].clip(0, 1)) for _ in range(200)]
    examples = (0.7 * 0.3 + 0.4 * 0.6) / 2 / n + 0.25 / 500  # pooled over the two groups; the control's 500 answers
    assert np.mean([d["examples_var"] for d in same]) == pytest.approx(examples, rel=0.1)
    assert abs(np.mean([d["affinity_var"] for d in same])) < 0.1 * examples  # nothing but the examples' noise
    assert np.mean([d["affinity_var"] for d in own]) == pytest.approx(0.01, rel=0.2)  # each model's own rate: sd 0.1


def test_pair_cap_caps_balances_and_keeps_confer_order():
    """pair_cap: a cap keeps the best of each (true class, key) pair up to c, in Confer order; the balanced settings
    go round-robin over pairs or keys; never an unkept candidate; None when a pool is short."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pair_cap

    hard = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 1.0])
    keep = np.array([True, True, True, True, True, True, False])
    pairs = np.array([11, 11, 11, 22, 22, 33, 11])
    keys = np.array([1, 1, 1, 2, 2, 1, 1])
    assert pair_cap.choose(hard, keep, pairs, keys, 4, "default").tolist() == [0, 1, 2, 3]
    assert pair_cap.choose(hard, keep, pairs, keys, 4, "cap 2").tolist() == [0, 1, 3, 4]
    assert pair_cap.choose(hard, keep, pairs, keys, 4, "cap 1") is None  # three pairs only
    assert pair_cap.choose(hard, keep, pairs, keys, 4, "pairs balanced").tolist() == [0, 3, 5, 1]
    assert pair_cap.choose(hard, keep, pairs, keys, 4, "keys balanced").tolist() == [0, 3, 1, 4]
    with pytest.raises(ValueError):
        pair_cap.choose(hard, keep, pairs, keys, 4, "cap")


def test_wider_surrogates_rule_needs_seven_studies_and_no_more_false_accusations():
    """wider_surrogates: a candidate beats the default on fp32 seeds 0-6 by goal met, or ties it with a higher d′,
    without calling more references stolen; other studies do not count."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import wider_surrogates as ws

    def row(met: bool, d: float, refs: int = 0) -> dict:
        return {"roc_auc": 1.0 if met else 0.9, "margin": 0.01 if met else -0.01, "d_prime": d, "gap": 0.1,
                "surrogates_stolen": 4, "references_stolen": refs}  # the fields of mix_share.evaluate's rows it counts

    def runs(default, wider, studies=range(7)):
        return [{"study": f"seed{i}", "settings": {"default": default(i), "wider surrogates": wider(i)}} for i in studies]

    assert ws.verdict(runs(lambda i: row(i < 5, 3.0), lambda i: row(i < 5, 3.1), range(6))) is None
    assert ws.verdict(runs(lambda i: row(i < 5, 3.0), lambda i: row(i < 5, 3.1)))["candidate"]  # a tie, higher d′
    assert not ws.verdict(runs(lambda i: row(i < 5, 3.0), lambda i: row(i < 5, 2.9)))["candidate"]
    assert ws.verdict(runs(lambda i: row(i < 5, 3.0), lambda i: row(i < 6, 2.0)))["candidate"]  # met more often
    assert not ws.verdict(runs(lambda i: row(i < 5, 3.0), lambda i: row(i < 6, 4.0, refs=int(i == 0))))["candidate"]
    extra = [{"study": "seed0-bf16", "settings": {"default": row(True, 3.0), "wider surrogates": row(False, 1.0)}}]
    assert ws.verdict(runs(lambda i: row(i < 5, 3.0), lambda i: row(i < 6, 2.0)) + extra)["candidate"]


def test_study_names_parse_sort_and_refuse_strangers():
    """The benchmarks' study names: seed<N> (fp32) and seed<N>-bf16, the fp32 studies first in the reports."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import study_key, study_seed

    assert study_seed("seed12") == (12, False) and study_seed("seed2-bf16") == (2, True)
    names = ["seed2-bf16", "seed10", "seed0-bf16", "seed2", "seed0"]
    assert sorted(names, key=study_key) == ["seed0", "seed2", "seed10", "seed0-bf16", "seed2-bf16"]
    for bad in ("seedX", "seed", "12", "seed1-fp16", "Seed1"):
        with pytest.raises(ValueError, match="seed<N> or seed<N>-bf16"):
            study_seed(bad)


def test_cifar_eps_varies_only_the_budgets_of_the_preset_it_is_given():
    """The ε sweep keeps every model of the preset it replays and moves CEM and the PGD baseline to ε, the control
    to 2ε (the default preset's ratio)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dataclasses import replace

    from cifar_eps import CIFAR_PRESETS, config_for
    from conferprint.experiments.quickstart import PRESETS

    for preset in CIFAR_PRESETS:
        base, cfg = PRESETS[preset], config_for(0.025, preset)
        assert (cfg.cem.eps, cfg.pgd.eps, cfg.control.eps) == (0.025, 0.025, 0.05)
        assert cfg.preset == f"{preset}-eps0.025"
        same = replace(cfg, preset=base.preset, cem=base.cem, pgd=base.pgd, control=base.control)
        assert same == base  # the models (source, training, testing, calibration) are the preset's own
    assert config_for(0.02, "cifar10-cpu-hour").source_arch == "cnn32"


def test_testing_epochs_scales_only_the_testing_groups_and_names_them_apart():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dataclasses import replace

    from separation import DRAWS
    from testing_epochs import factor_of, scaled, study_config

    from conferprint.experiments.quickstart import DEFAULT

    cfg = study_config(2, smoke=False)
    n = len(DEFAULT.testing)
    assert cfg.testing[:n] == DEFAULT.testing and cfg.training == DEFAULT.training and cfg.cem == DRAWS.cem
    # the draws were made before §30 and §31: the default's CEM and control but for the correct pool's budget and steps
    assert DRAWS.cem == replace(DEFAULT.cem, correct_candidates=None) and DRAWS.control == replace(DEFAULT.control, steps=100)
    assert cfg.calibration == ()  # no threshold is fitted: the calibration references are not retrained
    assert [g.epochs for g in cfg.testing[n:]] == [2 * g.epochs for g in DEFAULT.testing]
    assert [(g.arch, g.role, g.labels, g.count) for g in cfg.testing[n:]] == [(g.arch, g.role, g.labels, g.count) for g in DEFAULT.testing]
    assert factor_of("test-surrogate-cnn_small-soft-x3-0") == 3 and factor_of("test-surrogate-cnn_small-soft-0") == 1
    assert factor_of("test-reference-mlp-ground_truth-1") == 1
    with pytest.raises(ValueError, match="at least 2"):
        scaled(DEFAULT.testing, 1)


def test_testing_epochs_smoke_scores_both_sets_of_testing_models(tmp_path):
    out = tmp_path / "te"
    run = smoke_run("testing_epochs.py", out)["runs"][0]
    by_factor = {f: [m for m in run["models"] if m["factor"] == f] for f in (1, 2)}
    assert [len(v) for v in by_factor.values()] == [6, 6]
    epochs = {f: sorted((m["arch"], m["role"], m["epochs"]) for m in v) for f, v in by_factor.items()}
    assert [(a, r, 2 * e) for a, r, e in epochs[1]] == epochs[2]
    for f in ("1", "2"):
        s = run["sets"][f]
        assert s["min_surrogate"] - s["max_reference"] == pytest.approx(s["margin"], abs=1e-6)
        assert all(0.0 <= m["fidelity"] <= 1.0 for m in by_factor[int(f)])
    assert "## Factor 2" in (out / "smoke.md").read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "testing_epochs.py"), "--seeds", "0", "--factor", "1",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--factor" in bad.stderr and not (tmp_path / "bad").exists()


def test_pool_control_picks_eligible_candidates_in_the_fingerprints_split():
    """pool_control's controls: adversarial candidates outside the fingerprint only, the fingerprint's 3 : 1 split,
    ``pool-transfer`` by the training references' mean probability, ``pool-random`` reproducible by seed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from pool_control import control_split, eligible, pool_controls, within_group_corr

    assert control_split(500, 0.75) == {"correct": 125, "errors": 375}
    assert control_split(100, 0.29) == {"correct": 71, "errors": 29}  # rounded as CEM.n_errors rounds
    rng = np.random.default_rng(0)

    def pool(n):
        y = rng.integers(0, 10, n)
        t = np.where(rng.random(n) < 0.8, (y + 1) % 10, y)  # a fifth not adversarial
        return {"y": y, "t": t, "p_ref": rng.random((16, n)).astype(np.float16)}

    pools = {"correct": pool(300), "errors": pool(600)}
    fp_idx = {"correct": np.flatnonzero(pools["correct"]["t"] != pools["correct"]["y"])[:25],
              "errors": np.flatnonzero(pools["errors"]["t"] != pools["errors"]["y"])[:75]}
    ok = eligible(pools["errors"], fp_idx["errors"])
    assert not set(ok) & set(fp_idx["errors"]) and (pools["errors"]["t"][ok] != pools["errors"]["y"][ok]).all()
    split = control_split(200, 0.75)
    a, b = pool_controls(pools, fp_idx, split, seed=3), pool_controls(pools, fp_idx, split, seed=3)
    for name in ("pool-random", "pool-transfer"):
        for p, n in split.items():
            idx = a[name][p]
            assert len(idx) == n == len(set(idx)) and set(idx) <= set(eligible(pools[p], fp_idx[p]))
            assert np.array_equal(idx, b[name][p])
    mean_ref = pools["errors"]["p_ref"].astype(np.float64).mean(0)
    rest = np.setdiff1d(ok, a["pool-transfer"]["errors"])
    assert mean_ref[a["pool-transfer"]["errors"]].min() >= mean_ref[rest].max()
    assert not np.array_equal(pool_controls(pools, fp_idx, split, seed=4)["pool-random"]["errors"], a["pool-random"]["errors"])
    with pytest.raises(SystemExit, match="fewer than"):
        pool_controls(pools, fp_idx, control_split(2000, 0.75), seed=0)
    is_surr = np.array([True] * 4 + [False] * 4)
    f = np.arange(8.0)
    assert within_group_corr(f, 2 * f + 1, is_surr) == pytest.approx(1.0)
    assert within_group_corr(f, -f, is_surr) == pytest.approx(-1.0)


def test_pool_control_smoke_scores_every_control(tmp_path):
    out = tmp_path / "pc"
    res = smoke_run("pool_control.py", out)
    run = res["runs"][0]
    assert set(run["settings"]) == {"study", "pool-random", "pool-transfer", "pool-random + study", "pool-transfer + study"}
    surr = ["surrogate" in m for m in run["models"]]
    for s in run["settings"].values():
        pos = [v for v, is_s in zip(s["scores"], surr) if is_s]
        neg = [v for v, is_s in zip(s["scores"], surr) if not is_s]
        assert 0.0 <= s["roc_auc"] <= 1.0 and min(pos) - max(neg) == pytest.approx(s["margin"], abs=1e-6)
    # the combined control is the mean of its two parts, so its references' mean control is too
    st, pr, both = (run["settings"][k]["control_mean_references"] for k in ("study", "pool-random", "pool-random + study"))
    assert both == pytest.approx((st + pr) / 2)
    assert res["totals"]["study"]["draws"] == 1 and "candidate" in res["totals"]["pool-transfer"]
    assert "| pool-transfer + study |" in (out / "smoke.md").read_text()


def test_control_recipe_variants_change_one_knob_and_the_rule_picks_the_cheapest_eligible():
    """control_recipe's variants differ from the study's recipe only in their named knobs; §30's rule keeps a variant
    only with no fewer draws met, no more references called stolen and at most 0.10 less mean d′, then the cheapest."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dataclasses import asdict

    from conferprint.experiments.quickstart import DEFAULT
    from control_recipe import NAMES, STUDY_CONTROL, decide, recipes

    base = STUDY_CONTROL
    assert base.steps == 100 and DEFAULT.control == recipes(base)["steps 50"]  # the recipe §30 chose is the default's
    made = recipes(base)
    assert made["replay"] == base
    for name, pgd in made.items():
        changed = {k for k, v in asdict(pgd).items() if v != asdict(base)[k]}
        assert changed == ({"steps"} if name.startswith("steps") else
                           {"balance"} if name == "unbalanced" else {"balance", "steps"} if "unbalanced" in name else set())

    def row(met, d, refs, secs):  # one draw's scores for one control
        return {"roc_auc": 1.0 if met else 0.9, "margin": 0.01 if met else -0.01, "d_prime": d, "gap": 0.1,
                "surrogates_stolen": 5, "references_stolen": refs, "corr_with_fingerprint": 0.9, "seconds": secs}

    study = [(True, 3.0, 0, 30.0), (False, 2.0, 1, 30.0)]
    per = {"study": study, "replay": study,
           "steps 50": [(True, 3.0, 0, 15.0), (False, 1.95, 1, 15.0)],  # eligible: d′ −0.025
           "steps 25": [(True, 3.0, 0, 8.0), (False, 2.0, 2, 8.0)],  # one more reference stolen
           "steps 10": [(False, 3.5, 0, 3.0), (False, 2.5, 0, 3.0)],  # fewer draws met
           "unbalanced": [(True, 2.95, 0, 5.0), (False, 1.95, 0, 5.0)],  # eligible: d′ −0.05, and cheaper
           "unbalanced, steps 25": [(True, 2.8, 0, 1.0), (False, 1.9, 0, 1.0)],  # d′ −0.15
           "unbalanced, steps 10": [(True, 3.0, 0, 0.5), (False, 1.0, 0, 0.5)]}  # d′ −0.5
    assert set(per) == set(NAMES)
    runs = [{"seed": i, "settings": {k: row(*v[i]) for k, v in per.items()}} for i in range(2)]
    t = decide(runs)
    assert [k for k in NAMES[2:] if t[k]["eligible"]] == ["steps 50", "unbalanced"]
    assert t["chosen"] == "unbalanced" and t["unbalanced"]["seconds_mean"] == 5.0
    runs[0]["settings"]["unbalanced"]["margin"] = -0.01  # one draw fewer met: no longer eligible
    assert decide(runs)["chosen"] == "steps 50"


def test_control_recipe_smoke_replays_the_study_control_and_scores_every_variant(tmp_path):
    out = tmp_path / "cr"
    res = smoke_run("control_recipe.py", out)
    run = res["runs"][0]
    assert list(run["settings"]) == ["study", "replay", "steps 50", "steps 25", "steps 10", "unbalanced",
                                     "unbalanced, steps 25", "unbalanced, steps 10"]
    # the replay gave back the study's control (checked example for example), so it scores identically
    assert run["settings"]["replay"]["scores"] == run["settings"]["study"]["scores"]
    for s in run["settings"].values():
        assert s["size"] == 20 and sum(s["keys_per_class"]) == 20 and s["seconds"] >= 0
    assert "Chosen by §30's rule" in (out / "smoke.md").read_text()


@pytest.mark.parametrize("arch", ["cnn_small", "cnn", "lenet_bn", "digits_cnn", "cnn_small32", "vgg16_bn"])
def test_pooling_before_the_relu_is_the_textbook_network_bit_for_bit(arch):
    """The zoo's nets pool before the ReLU (models/small.py): the same outputs, input and weight gradients and
    parameter names as ReLU-then-pool, which benchmarks/pool_order.py times."""
    import copy

    import torch
    from torch import nn
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pool_order import pairs, relu_first
    from conferprint.models import arch_info, build_model

    size = arch_info(arch).input_size
    c = 3 if size == 32 else 1
    new = build_model(arch, in_channels=c, num_classes=10, seed=3)
    old = relu_first(copy.deepcopy(new))
    assert pairs(new) >= 1 and pairs(old) == 0  # every ReLU that met a pooling now follows it
    assert any(isinstance(a, nn.ReLU) and isinstance(b, nn.MaxPool2d)
               for m in old.modules() if isinstance(m, nn.Sequential) for a, b in zip(m, list(m)[1:]))
    assert list(new.state_dict()) == list(old.state_dict())  # models saved in the old order load
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, c, size, size, generator=gen)  # centred: many windows whose maximum is negative
    y = torch.randint(0, 10, (4,), generator=gen)
    outs = []
    for m in (new, old):
        m.train()
        xi = x.clone().contiguous(memory_format=torch.channels_last) if arch_info(arch).channels_last else x.clone()
        xi.requires_grad_(True)
        logits = m(xi)
        torch.nn.functional.cross_entropy(logits, y).backward()
        outs.append((logits.detach(), xi.grad, [p.grad for p in m.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][2], outs[1][2]))
    assert outs[0][1].abs().sum() > 0


def test_allocator_benchmark_pairs_each_repeat_and_flags_other_weights():
    """benchmarks/allocator.py: a child's rows (the real thing, in this process) and the summary of the repeats:
    speed-ups paired within a repeat, and the weights' digests that must agree across the kinds."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from allocator import STAGES, child, summarize

    got = child("default", ["mlp"], 512, 1, 2)
    row = got["rows"]["mlp"]
    assert set(row) == {*STAGES, "digest"} and row["train"]["images"] == 512 and row["gradients"]["images"] == 512
    assert child("default", ["mlp"], 512, 1, 2)["rows"]["mlp"]["digest"] == row["digest"]  # seeded: the same weights

    def run(kind, repeat, seconds, digest="a"):
        stage = {"seconds": seconds, "images": 100, "faults": 10 if kind == "default" else 1}
        return {"kind": kind, "repeat": repeat, "rows": {"m": {"digest": digest, **{s: stage for s in STAGES}}}}

    # repeat 0: tuned twice as fast; repeat 1: tuned 4/3 as fast; repeat 2 tuned slower (0.5)
    runs = [run("default", 0, 2.0), run("tuned", 0, 1.0), run("tuned", 1, 3.0), run("default", 1, 4.0),
            run("default", 2, 1.0), run("tuned", 2, 2.0)]
    digests, summary = summarize(runs, ["m"])
    train = summary["m"]["train"]
    assert train["speedup_paired_median"] == pytest.approx(4 / 3)
    assert train["images_per_s_median"] == {"default": 50.0, "tuned": pytest.approx(100 / 2)}
    assert train["faults_median"] == {"default": 10, "tuned": 1} and digests == {"m": {"a"}}
    digests, _ = summarize(runs[:-1] + [run("tuned", 2, 2.0, digest="b")], ["m"])
    assert digests == {"m": {"a", "b"}}


def test_fold_batchnorm_benchmark_times_both_kinds_and_measures_how_far_they_are_apart():
    """benchmarks/fold_batchnorm.py: the folded and unfolded members really differ in kind (the switch restores
    Member's folding), agree up to rounding, and the CEM row times both on the default ensemble."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import conferprint.fingerprint.ensemble as ensemble
    from conferprint.models import build_model
    from fold_batchnorm import cem, members, unfolded

    m = build_model("cnn_small", in_channels=1, num_classes=10, seed=0).eval()
    with unfolded():
        assert ensemble.Member(m).model is m
    assert ensemble.Member(m).model is not m
    (row,) = members(["lenet_bn"], 1, 1)
    assert row["arch"] == "lenet_bn" and set(row["seconds"]) == {"model", "folded"} and row["speedup"] > 0
    assert 0 < row["max_abs_logit_diff"] < 1e-4 and row["max_grad_diff_relative"] < 1e-4
    got = cem(1, 1)
    assert got["members"] == 27 and set(got["seconds"]) == {"unfolded", "folded"}
    assert 0 <= got["max_abs_input_diff"] <= 2 * 0.05  # both inside the same ε-ball around the same inputs


def test_fingerprint_phases_pairs_each_repeat_per_phase():
    """benchmarks/fingerprint_phases.py's summary: the baseline's time over this code's within each repeat, the
    median over repeats, per phase and for the three together."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fingerprint_phases import summarize

    def row(kind, repeat, cem, pgd, control):
        return {"kind": kind, "repeat": repeat, "timings": {"cem": cem, "pgd": pgd, "control": control}}

    rows = [row("baseline", 0, 60.0, 4.0, 10.0), row("head", 0, 40.0, 4.0, 8.0),
            row("head", 1, 30.0, 2.0, 10.0), row("baseline", 1, 60.0, 4.0, 10.0),
            row("baseline", 2, 50.0, 5.0, 5.0), row("head", 2, 50.0, 5.0, 5.0)]
    s = summarize(rows)
    assert s["cem"]["speedup_paired_median"] == pytest.approx(1.5)  # 1.5, 2.0, 1.0
    assert s["pgd"]["speedup_paired_median"] == pytest.approx(1.0)  # 1.0, 2.0, 1.0
    assert s["control"]["speedup_paired_median"] == pytest.approx(1.0)  # 1.25, 1.0, 1.0
    assert s["all"]["speedup_paired_median"] == pytest.approx(74 / 52)  # 74/52, 74/42, 60/60
    assert s["cem"]["seconds_median"] == {"baseline": 60.0, "head": 40.0}


def test_quickstart_seeds_series_merge_and_eps_override(tiny_quickstart, tmp_path, monkeypatch):
    """quickstart_seeds --tag names a series of its own, --merge keeps the series' other seeds (refusing a file of
    other settings), --cem-eps makes another fingerprint on the same models in folders of its own; each run gets
    its gap and d′, the file a summary."""
    import json
    import shutil

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quickstart_seeds

    from conftest import FMNIST_DIR

    study, res = tiny_quickstart
    for d in ("benchmarks/results", "docs/results", "benchmarks/runs"):
        (tmp_path / d).mkdir(parents=True)
    shutil.copytree(study, tmp_path / "benchmarks/runs/tiny-seed0")  # its models are reused, nothing retrains
    monkeypatch.setattr(quickstart_seeds, "ROOT", tmp_path)
    base = ["--preset", "tiny", "--data-dir", str(FMNIST_DIR), "--seeds", "0", "--tag", "new"]
    assert quickstart_seeds.main(base) == 0
    path = tmp_path / "benchmarks/results/quickstart-seeds-tiny-new.json"
    first = json.loads(path.read_text())
    (run,) = first["runs"]
    assert run["retrained"]["count"] == 0 and run["roc_auc"] == res["roc_auc"]
    assert first["summary"]["draws"] == 1 and first["summary"]["goal_met"] == int(run["goal_met"])
    # another seed recorded by an earlier command of the series is kept by --merge, dropped without it
    first["runs"].append({**run, "seed": 7, "goal_met": True})
    path.write_text(json.dumps(first))
    assert quickstart_seeds.main(base + ["--merge"]) == 0
    merged = json.loads(path.read_text())
    assert [r["seed"] for r in merged["runs"]] == [0, 7] and merged["summary"]["draws"] == 2
    assert merged["runs"][0]["command"] == merged["command"]
    assert "Over the 2 draws" in (tmp_path / "docs/results/quickstart-seeds-tiny-new.md").read_text()
    assert quickstart_seeds.main(base) == 0
    assert [r["seed"] for r in json.loads(path.read_text())["runs"]] == [0]
    # a series file of other settings is refused, not mixed
    other = json.loads(path.read_text())
    other["preset"]["threshold_alpha"] = 0.2
    path.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other settings"):
        quickstart_seeds.main(base + ["--merge"])
    # ε override: the same models copied into the variant's folder, a fingerprint at the new ε
    eps = quickstart_seeds.PRESETS["tiny"].cem.eps / 2
    assert quickstart_seeds.main(base + ["--cem-eps", str(eps)]) == 0
    var = json.loads((tmp_path / f"benchmarks/results/quickstart-seeds-tiny-eps{eps:g}-new.json").read_text())
    assert var["runs"][0]["eps"] == pytest.approx(eps) and var["runs"][0]["retrained"]["count"] == 0
    assert (tmp_path / f"benchmarks/runs/tiny-seed0-eps{eps:g}/zoo").is_dir()
    for bad in (["--tag", "../x"], ["--cem-eps", "0"]):
        with pytest.raises(SystemExit):
            quickstart_seeds.main(base[:-2] + bad)


def test_series_compare_pairs_seeds_and_applies_the_pooled_rule(tmp_path, monkeypatch):
    """series_compare pairs two quickstart_seeds series by seed; the variant is adopted only if it meets the goal on
    more draws with no more references called stolen, on the new draws and again pooled with earlier totals."""
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import series_compare

    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "docs/results").mkdir(parents=True)
    monkeypatch.setattr(series_compare, "ROOT", tmp_path)

    def run(seed, met, d, tp, fp):
        return {"seed": seed, "roc_auc": 1.0 if met else 0.9, "margin": 0.01 if met else -0.01, "d_prime": d,
                "goal_met": met, "decisions": {"true_positives": tp, "false_positives": fp}, "threshold": 0.2, "eps": 0.05,
                "n_surrogates": 8, "n_references": 8}

    def put(name, runs):
        (tmp_path / f"benchmarks/results/{name}.json").write_text(json.dumps({"runs": runs}))

    put("b", [run(21, False, 2.0, 5, 1), run(22, True, 3.0, 8, 0), run(23, False, 1.0, 2, 0)])
    put("v", [run(22, True, 3.5, 8, 0), run(21, True, 2.5, 6, 0)])  # seed 23 not run: left out of the pairs
    put("old", [])
    earlier = json.loads((tmp_path / "benchmarks/results/old.json").read_text())
    earlier["across_seeds"] = {"B": {"seeds": 14, "ctl_separated": 5, "ctl_stolen_surrogates": 72, "ctl_stolen_references": 6},
                               "V": {"seeds": 14, "ctl_separated": 7, "ctl_stolen_surrogates": 84, "ctl_stolen_references": 10}}
    (tmp_path / "benchmarks/results/old.json").write_text(json.dumps(earlier))

    assert series_compare.main(["--base", "b", "--variant", "v", "--out", "cmp"]) == 0
    c = json.loads((tmp_path / "benchmarks/results/cmp.json").read_text())["comparison"]
    assert [p["seed"] for p in c["pairs"]] == [21, 22]
    assert (c["new"]["base"]["goal_met"], c["new"]["variant"]["goal_met"]) == (1, 2)
    assert (c["new"]["base"]["references_called_stolen"], c["new"]["variant"]["references_called_stolen"]) == (1, 0)
    assert c["paired_d_prime_change"]["mean"] == pytest.approx(0.5) and c["paired_d_prime_change"]["up_on"] == 2
    assert c["new_draws_condition"] and c["adopt"] and c["pooled_condition"] is None
    # pooled with the earlier draws the variant accuses 10 against 7: the default stays
    assert series_compare.main(["--base", "b", "--variant", "v", "--out", "cmp", "--earlier", "old:B:V"]) == 0
    c = json.loads((tmp_path / "benchmarks/results/cmp.json").read_text())["comparison"]
    assert c["pooled"]["variant"]["draws"] == 16 and c["pooled"]["base"]["references_called_stolen"] == 7
    assert c["new_draws_condition"] and c["pooled_condition"] is False and not c["adopt"]
    assert "the default stays" in (tmp_path / "docs/results/cmp.md").read_text()
    for bad in (["--earlier", "old:B"], ["--earlier", "old:B:X"], ["--out", "../x"]):
        with pytest.raises(SystemExit):
            series_compare.main(["--base", "b", "--variant", "v", "--out", "cmp"] + bad)  # a later --out overrides
    with pytest.raises(SystemExit, match="no such result"):
        series_compare.main(["--base", "nope", "--variant", "v", "--out", "cmp"])


def test_calibration_origins_reproduces_the_run_and_trains_without_the_origins(tmp_path):
    """calibration_origins on a finished run of a tiny calibrated preset: the run's own references reproduce its
    verdicts (checked inside), the clean ones are trained on D1 less exactly the examples' origins with the same
    initial weights' names, a rerun reuses them, and the rule adopts a candidate only below α and above the
    tolerance bar."""
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import calibration_origins as co
    from conferprint.experiments.quickstart import TINY, _g, run_quickstart
    from conferprint.fingerprint import PGD

    if not FMNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    cfg = replace(TINY, preset="tiny-cal", pgd=None, control=PGD(steps=5, size=30, batch_size=64, max_candidates=64),
                  score="control_diff", threshold="calibrated",
                  calibration=(_g("cnn_small", "reference", "ground_truth", 2, 1), _g("mlp", "reference", "ground_truth", 2, 1)))
    run = tmp_path / "run"
    res = run_quickstart(run, cfg, seed=0, data_dir=FMNIST_DIR, progress=False)
    row = co.run_seed(0, cfg, run, FMNIST_DIR)
    assert row["clean_trained_now"] == 4 and 0 < row["origins_left_out"] <= res["fingerprint"]["size"] + 30
    assert row["clean_training_images"] == cfg.per_half - row["origins_left_out"]
    own = row["settings"]["own"]
    assert (own["surrogates_stolen"], own["references_stolen"]) == (res["decisions"]["true_positives"],
                                                                  res["decisions"]["false_positives"])
    assert own["threshold"] == pytest.approx(res["threshold"]) and own["n_calibration"] == 4
    assert row["settings"]["own + clean"]["n_calibration"] == 8
    assert row["own_scores"] == pytest.approx(res["threshold_fit"]["scores"])
    specs = sorted((run / "calibration-clean").glob("*.json"))
    assert [p.stem for p in specs] == sorted(m["name"] for m in res["training_models"] if m["group"] == "calibration")
    assert all(f"n={row['clean_training_images']}" in json.loads(p.read_text())["spec"]["data"] for p in specs)
    again = co.run_seed(0, cfg, run, FMNIST_DIR)
    assert again["clean_trained_now"] == 0 and again["clean_scores"] == row["clean_scores"]
    with pytest.raises(SystemExit, match="not a run"):
        co.run_seed(0, replace(cfg, threshold_alpha=0.1), run, FMNIST_DIR)
    # a run whose verdict used the clean references too (§37's candidate): checked against that setting, its
    # clean references the very models this benchmark trains (nothing new), whatever the preset now says
    both = tmp_path / "both"
    shutil.copytree(run, both)
    res2 = run_quickstart(both, replace(cfg, calibration_without_origins=True), seed=0, data_dir=FMNIST_DIR,
                          progress=False)
    assert res2["retrained"]["count"] == 0  # the benchmark's clean zoo is the library's
    row2 = co.run_seed(0, cfg, both, FMNIST_DIR)
    assert row2["settings"]["own + clean"]["threshold"] == pytest.approx(res2["threshold"])
    assert co.run_setting(res2["config"]) == "own + clean" and co.run_setting(res["config"]) == "own"
    assert co.run_setting({"threshold_rule": "tolerance"}) == "own, tolerance"
    with pytest.raises(SystemExit, match="does not score"):
        co.run_setting({"threshold_rule": "tolerance", "calibration_without_origins": True})
    with pytest.raises(SystemExit, match="no results.json"):
        co.run_seed(1, cfg, tmp_path / "none", FMNIST_DIR)

    def tot(own_tol, clean, both):
        base = {"surrogates": 160, "references": 160, "mean_bias": 0.0, "mean_threshold": 0.2}
        return {"own": {**base, "surrogates_stolen": 126, "references_stolen": 12},
                "own, tolerance": {**base, "surrogates_stolen": own_tol, "references_stolen": 4},
                "clean": {**base, "surrogates_stolen": clean[0], "references_stolen": clean[1]},
                "own + clean": {**base, "surrogates_stolen": both[0], "references_stolen": both[1]}}
    assert co.decision(tot(91, (110, 8), (120, 9)))["adopt"] == "clean"  # 9 > 8 = 5 % of 160
    assert co.decision(tot(91, (110, 8), (120, 6)))["adopt"] == "own + clean"
    assert co.decision(tot(91, (115, 6), (115, 6)))["adopt"] == "clean"  # a tie goes to the cheaper
    assert co.decision(tot(115, (115, 6), (100, 2)))["adopt"] is None  # no more caught than the tolerance bound


def test_calibration_origins_null_spread_is_alpha_on_average_and_more_when_shifted():
    """The chance spread of a series' false accusations: a prediction bound exactly at α calls α of the testing
    references stolen on average, a shifted testing group more; the tail starts at 1 and falls."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from calibration_origins import null_spread

    exact = null_spread(20, 12, 8, 0.05, reps=4000)
    assert exact["mean"] == pytest.approx(8.0, abs=0.4) and exact["p_at_least"][0] == 1.0
    assert all(a >= b for a, b in zip(exact["p_at_least"], exact["p_at_least"][1:]))
    assert null_spread(20, 12, 8, 0.05, shift=0.5, reps=4000)["mean"] > 15


def test_calibration_origins_confirmation_adopts_the_first_candidate_consistent_with_alpha():
    """§37's rule: a candidate is consistent with α when its false accusations are not improbably many on the new draws
    (seeds ≥ 56) nor on all draws; the first consistent one in order (own, own + clean, tolerance) is adopted, the
    tolerance bound when none is; nothing is decided before a new draw."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from calibration_origins import confirmation

    def run(seed, own, both, tol):
        cell = lambda acc, n_cal: {"references_stolen": acc, "surrogates_stolen": 6, "n_calibration": n_cal}  # noqa: E731
        return {"seed": seed, "n_references": 8, "n_surrogates": 8,
                "settings": {"own": cell(own, 12), "own + clean": cell(both, 24), "own, tolerance": cell(tol, 12)}}

    old = [run(s, 1, 0, 0) for s in range(21, 41)]  # own: 20 of 160 before, P ≈ 0.01
    assert confirmation(old, reps=2000) is None
    conf = confirmation(old + [run(s, 0, 0, 0) for s in range(56, 61)], reps=2000)
    assert conf["new_seeds"] == [56, 57, 58, 59, 60] and conf["candidates"]["own + clean"]["n_calibration"] == 24
    own = conf["candidates"]["own"]
    assert own["new"]["references_stolen"] == 0 and own["new"]["p_at_least"] == 1.0
    assert own["all"]["references_stolen"] == 20 and own["all"]["p_at_least"] < 0.05 and not own["consistent"]
    assert conf["adopt"] == "own + clean"
    # many accusations on the new draws alone disqualify too; none consistent: the tolerance bound
    assert confirmation(old + [run(s, 0, 3, 0) for s in range(56, 61)], reps=2000)["adopt"] == "own, tolerance"
    assert confirmation(old + [run(s, 0, 3, 3) for s in range(56, 61)], reps=2000)["adopt"] == "own, tolerance"
    fine = [run(s, 0, 0, 0) for s in range(21, 41)] + [run(56, 1, 0, 0)]
    assert confirmation(fine, reps=2000)["adopt"] == "own"


def test_split_calibration_trains_the_ensemble_and_the_calibration_on_disjoint_halves(tmp_path):
    """split_calibration on a finished run of a tiny calibrated preset: the default's verdicts are reproduced, the
    ensemble and the calibration references are trained on disjoint halves of D1 (twice the epochs), the examples
    come from the ensemble's half, a rerun reuses everything, and §38's rule needs all three checks."""
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import split_calibration as sc
    from conferprint.experiments.quickstart import TINY, _g, run_quickstart
    from conferprint.fingerprint import PGD, load_fingerprint

    if not FMNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    cfg = replace(TINY, preset="tiny-cal", pgd=PGD(steps=5, size=20, batch_size=64, max_candidates=64),
                  control=PGD(steps=5, size=30, batch_size=64, max_candidates=64),
                  score="control_diff", threshold="calibrated",
                  calibration=(_g("cnn_small", "reference", "ground_truth", 2, 1), _g("mlp", "reference", "ground_truth", 2, 1)))
    run = tmp_path / "run"
    res = run_quickstart(run, cfg, seed=0, data_dir=FMNIST_DIR, progress=False)
    row = sc.run_seed(0, cfg, run, FMNIST_DIR)
    own = row["settings"]["own"]
    assert (own["surrogates_stolen"], own["references_stolen"]) == (res["decisions"]["true_positives"],
                                                                  res["decisions"]["false_positives"])
    assert row["d1a"] + row["d1b"] == row["d1"] == cfg.per_half
    assert row["split"]["trained_now"] == 4 + 4 and len(row["split"]["own_calibration_scores"]) == 4
    assert row["default"]["goal"]["roc_auc"] == pytest.approx(res["separation"]["roc_auc"])
    metas = [json.loads(p.read_text()) for p in (run / sc.FOLDER / "zoo").glob("*.json")]
    assert sorted(m["spec"]["data"].split("(")[0] for m in metas) == ["D1a"] * 4 + ["D1b"] * 4
    assert {m["epochs"] for m in metas} == {2 * g.epochs for g in cfg.training + cfg.calibration}
    # the halves are disjoint, and the split's examples were made from D1a's images
    from conferprint.data import load_dataset, split_defender_attacker
    data = load_dataset("fashion-mnist", FMNIST_DIR)
    d1 = split_defender_attacker(len(data.y_train), 0)[0][: cfg.per_half]
    a, b = sc.halves(len(d1), 0)
    assert not set(a.tolist()) & set(b.tolist())
    xa, xb = data.x_train[d1][a], data.x_train[d1][b]
    fp = load_fingerprint(run / sc.FOLDER / "fingerprint")
    rows_a = {x.numpy().tobytes() for x in xa}
    assert all(o.numpy().tobytes() in rows_a for o in fp.originals)
    assert not {x.numpy().tobytes() for x in xb} & {o.numpy().tobytes() for o in fp.originals}
    again = sc.run_seed(0, cfg, run, FMNIST_DIR)
    assert again["split"]["trained_now"] == 0 and again["split"]["scores"] == row["split"]["scores"]
    with pytest.raises(SystemExit, match="not a run"):
        sc.run_seed(0, replace(cfg, threshold_alpha=0.1), run, FMNIST_DIR)
    clean = tmp_path / "clean"  # a run whose verdict used the clean references too: refused, not compared
    shutil.copytree(run, clean)
    recorded = json.loads((clean / "results.json").read_text())
    recorded["config"]["calibration_without_origins"] = True
    (clean / "results.json").write_text(json.dumps(recorded))
    with pytest.raises(SystemExit, match="clean calibration references"):
        sc.run_seed(0, cfg, clean, FMNIST_DIR)

    def draw(seed, split_acc, tol_caught, split_caught, met, dp):
        cell = lambda caught, acc: {"surrogates_stolen": caught, "references_stolen": acc, "n_calibration": 12,  # noqa: E731
                                    "bias": 0.0, "threshold": 0.2}
        return {"seed": seed, "n_surrogates": 8, "n_references": 8,
                "settings": {"own": cell(7, 1), "own, tolerance": cell(tol_caught, 0), "split": cell(split_caught, split_acc),
                             "split, tolerance": cell(split_caught - 1, 0)},
                "default": {"goal": {"goal_met": met[0], "d_prime": dp[0]}},
                "split": {"goal": {"goal_met": met[1], "d_prime": dp[1]}}}
    good = [draw(s, 0, 5, 6, (False, True), (2.0, 2.5)) for s in range(10)]
    assert sc.decision(good, reps=2000)["candidate"]
    assert not sc.decision([draw(s, 2, 5, 6, (False, True), (2.0, 2.5)) for s in range(10)], reps=2000)["candidate"]
    assert not sc.decision([draw(s, 0, 6, 6, (False, True), (2.0, 2.5)) for s in range(10)], reps=2000)["candidate"]
    assert not sc.decision([draw(s, 0, 5, 6, (True, False), (2.0, 2.5)) for s in range(10)], reps=2000)["candidate"]
    assert not sc.decision([draw(s, 0, 5, 6, (False, True), (2.5, 2.0)) for s in range(10)], reps=2000)["candidate"]
    assert sc.decision([]) is None


def test_neighbourhood_rank_shifts_ranks_and_chooses_on_its_own_draws():
    """neighbourhood_rank: the shift key is the mean Confer over the eight one-pixel moves; a key ranks the kept candidates
    (unscored ones last, ties by hard Confer then position); the protocol chooses on seeds 21-42 only."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import neighbourhood_rank as nr

    from conferprint.fingerprint.ensemble import SHIFTS, shifted
    from conferprint.fingerprint.scores import confer, labels_of

    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    noisy = nr.gauss_copies(x / 9, "gauss 0.05", torch.Generator().manual_seed(0))
    assert len(noisy) == nr.COPIES and all(0 <= float(c.min()) and float(c.max()) <= 1 for c in noisy)
    # the shift key: the mean Confer over the eight one-pixel moves (the library's, as CEM(rank="shift") ranks)
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 3)) for _ in range(4)]
    xs, t = torch.rand(6, 1, 3, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    want = torch.stack([confer(labels_of(models[:2], shifted(xs, dy, dx)), labels_of(models[2:], shifted(xs, dy, dx)), t)
                        for dy, dx in SHIFTS]).mean(0)
    assert np.allclose(nr.neighbourhood_confer(models[:2], models[2:], xs, t, "shift", torch.Generator()), want.numpy())

    c = {"hard": np.array([0.9, 0.8, 0.8, 0.7, 0.95]), "keep": np.array([True, True, True, True, False])}
    assert nr.ranked(c, None, 3).tolist() == [0, 1, 2]  # the default: hard Confer, the unkept one never
    key = np.array([0.5, 0.6, 0.6, np.nan, 1.0])
    assert nr.ranked(c, key, 4).tolist() == [1, 2, 0, 3]  # key first, ties by hard Confer then position, NaN last

    def row(study, **by):
        return {"study": study, "settings": {k: {"roc_auc": a, "margin": m, "d_prime": d, "gap": 0.1,
                                                 "surrogates_stolen": 4, "references_stolen": 0,
                                                 "surrogates_stolen_tolerance": 3, "references_stolen_tolerance": 0}
                                             for k, (a, m, d) in by.items()}}

    good, bad = (1.0, 0.05, 4.0), (0.9, -0.05, 2.0)
    base = dict.fromkeys(nr.SETTINGS, bad)
    choose = [row(f"seed{s}", **{**base, "shift": good}) for s in range(21, 43)]
    fresh = [row("seed66", **{**base, "shift": good}), row("seed67", **base)]
    proto = nr.protocol(choose + [row("seed43", **{**base, "shift": good})] + fresh, nr.SETTINGS, "default", nr.CHOOSE,
                        nr.CONFIRM)
    assert proto["pick"] == "shift" and proto["confirmed"] and proto["confirm_studies"] == ["seed43"]  # not the fresh
    assert nr.protocol(choose[1:] + [row("seed43", **base)], nr.SETTINGS, "default", nr.CHOOSE) is None
    # §41: shift against the default on the fresh draws only, accusations at the tolerance bound
    assert nr.fresh_rule(choose) is None
    got = nr.fresh_rule(choose + fresh + [row("seed76", **base)])  # §42's draws are not §41's
    assert got["studies"] == ["seed66", "seed67"] and got["adopt"] and got["shift"]["met"] == 1
    worse = [row("seed66", **{**base, "shift": good}), row("seed67", **base)]
    worse[0]["settings"]["shift"]["references_stolen_tolerance"] = 2
    assert not nr.fresh_rule(worse)["adopt"]  # two more false accusations than the default's none


def _rule_row(study, accused=None, caught=None, **by):
    """A draw's row for the rule tests: per setting (AUC, margin, d′), gap 0.1, 4 of 8 thieves and no stranger called
    stolen at the prediction bound, and at the tolerance bound ``caught`` / ``accused`` of them (default 4 and 0)."""
    accused, caught = accused or {}, caught or {}
    return {"study": study, "settings": {k: {"roc_auc": a, "margin": m, "d_prime": d, "gap": 0.1,
                                             "surrogates_stolen": 4, "references_stolen": 0,
                                             "surrogates_stolen_tolerance": caught.get(k, 4),
                                             "references_stolen_tolerance": accused.get(k, 0)}
                                         for k, (a, m, d) in by.items()}}


def test_neighbourhood_wide_chooses_among_shift_keys_by_alpha_then_adopts_on_fresh_draws():
    """neighbourhood_wide: the choice needs every draw of seeds 21-75 and excludes a key whose tolerance-bound
    accusations are unlikely for a verdict at alpha; the adoption judges the pick on seeds 76+ only, against the
    default's goal, d' and catches, and alpha on the new draws and on all of them."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import neighbourhood_wide as nw

    row = _rule_row

    good, bad = (1.0, 0.05, 4.0), (0.9, -0.05, 2.0)
    base = dict.fromkeys(nw.SETTINGS, bad)
    # shift2 separates best but accuses 2 of 8 on every draw (110 of 440: impossible at alpha); shift+gauss next
    chosen = [row(f"seed{s}", accused={"shift2": 2}, **{**base, "shift2": good, "shift+gauss": good if s % 2 else bad})
              for s in nw.CHOOSE_SEEDS]
    assert nw.choose_rule(chosen[:-1]) is None  # not every draw there yet
    got = nw.choose_rule(chosen + [row("seed80", **base)])  # a fresh draw does not enter the choice
    assert got["studies"] == 55 and got["eligible"] == ["shift", "shift+gauss"] and got["pick"] == "shift+gauss"
    assert got["totals"]["shift2"]["p_accused"] < 0.05 < got["totals"]["shift"]["p_accused"]
    assert 0.3 < nw.p_accused(22, 55) < 0.7 and nw.p_accused(0, 55) == 1.0  # about alpha's mean, 0.05 x 440
    fresh = [row("seed76", **{**base, "shift+gauss": good}), row("seed77", **base)]
    assert nw.fresh_rule(chosen, "shift+gauss") is None and nw.fresh_rule(chosen + fresh, None) is None
    got = nw.fresh_rule(chosen + fresh, "shift+gauss")
    assert got["studies"] == ["seed76", "seed77"] and got["adopt"] and got["shift+gauss"]["met"] == 1
    assert got["all_draws"]["shift+gauss"]["studies"] == 57
    fewer = [row("seed76", caught={"shift+gauss": 3}, **{**base, "shift+gauss": good}), row("seed77", **base)]
    assert not nw.fresh_rule(chosen + fewer, "shift+gauss")["adopt"]  # catches fewer thieves than the default
    many = [row("seed76", accused={"shift+gauss": 4}, **{**base, "shift+gauss": good}), row("seed77", **base)]
    assert not nw.fresh_rule(chosen + many, "shift+gauss")["adopt"]  # 4 of 16 accused: unlikely at alpha
    level = [row("seed76", **base), row("seed77", **base)]
    assert not nw.fresh_rule(chosen + level, "shift+gauss")["adopt"]  # no higher d'


def test_shift_queries_share_counts_only_the_shifts_the_source_keeps_and_chooses_among_its_settings():
    """shift_queries: a model's answer on an example is the share of its key over the example and those of its
    eight shifts on which the source gives the key, each example weighing the same; §43 applies §42's rules to
    default+q and shift+q only."""
    import numpy as np
    import torch
    from conferprint.fingerprint.ensemble import SHIFTS, shifted
    from conferprint.fingerprint.scores import labels_of

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import shift_queries as sq

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)) for _ in range(4)]
    x, t = torch.rand(7, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    share, at_x, kept = sq.shift_answers(models[0], models[1:], x, t)
    assert share.shape == at_x.shape == (3, 7) and kept.shape == (7,)
    for i in range(7):  # by hand, one example at a time
        queries = [x[i:i + 1]] + [xs for dy, dx in SHIFTS if int(labels_of([models[0]], xs := shifted(x[i:i + 1], dy, dx))[0, 0]) == int(t[i])]
        assert kept[i] == len(queries) - 1
        for m in range(3):
            hits = [int(labels_of([models[1 + m]], q)[0, 0]) == int(t[i]) for q in queries]
            assert share[m, i] == pytest.approx(np.mean(hits)) and at_x[m, i] == hits[0]
    assert 0 < kept.sum() < 8 * 7  # the source keeps some shifts and drops others: the filter was exercised
    # a source that never gives the key on a shift leaves the plain answers
    never = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        never[1].weight.zero_(), never[1].bias.copy_(torch.tensor([0.0, 0.0, 9.0]))
    share, at_x, kept = sq.shift_answers(never, models[1:], x[t != 2], t[t != 2])
    assert kept.sum() == 0 and np.array_equal(share, at_x)

    row = _rule_row
    good, bad = (1.0, 0.05, 4.0), (0.9, -0.05, 2.0)
    base = dict.fromkeys(sq.SETTINGS, bad)
    # the shift ranking (no queries) separates best but is not a candidate of §43
    runs = [row(f"seed{s}", **{**base, "shift": good, "shift+q": good if s % 2 else bad}) for s in range(21, 76)]
    payload = {"runs": runs + [row("seed76", **{**base, "shift+q": good})]}
    sq._extra(payload)
    assert payload["choice"]["pick"] == "shift+q" and payload["fresh"]["studies"] == ["seed76"]
    assert payload["fresh"]["adopt"]


def test_query_neighbourhood_groups_shares_by_example_and_applies_its_own_seeds_rules():
    """query_neighbourhood: a grouped fingerprint's answers become per-example shares (unequal groups;
    verify.metrics.example_shares, which the library's CAEAcc averages), and §44
    chooses on seeds 103-108 only among its candidates, then judges the pick against shift+q on seeds 109+."""
    import numpy as np
    import torch
    from conferprint.verify.metrics import cae_acc, example_shares

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import query_neighbourhood as qn

    groups, answers = torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([[1, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 1]])
    assert np.allclose(example_shares(answers, groups).numpy(), [[1 / 3, 1, 1], [1, 0, 0.5]])
    keys = torch.tensor([1, 1, 1, 2, 0, 0])  # the library's grouped CAEAcc is their mean, model by model
    labels = torch.where(answers.bool(), keys, (keys + 1) % 3)
    assert [cae_acc(lab, keys, groups) for lab in labels] == pytest.approx([7 / 9, 0.5])
    row = _rule_row
    good, bad = (1.0, 0.05, 4.0), (0.9, -0.05, 2.0)
    base = dict.fromkeys(qn.SETTINGS, bad)
    # shift separates best but is reported only; shift+q2 wins the choice on 103-108 (an earlier seed is ignored)
    runs = [row("seed60", **{**base, "shift+qc": good})]
    runs += [row(f"seed{s}", **{**base, "shift": good, "shift+q2": good, "shift+qc": good if s % 2 else bad})
             for s in qn.CHOOSE_SEEDS]
    payload = {"runs": runs[:-1]}
    qn._extra(payload)
    assert payload["choice"] is None and payload["fresh"] is None  # not every choice draw there yet
    payload = {"runs": runs + [row("seed109", **{**base, "shift+q2": good}), row("seed110", **base)]}
    qn._extra(payload)
    assert payload["choice"]["studies"] == 6 and payload["choice"]["pick"] == "shift+q2"
    fresh = payload["fresh"]
    assert fresh["studies"] == ["seed109", "seed110"] and fresh["default_setting"] == "shift+q" and fresh["adopt"]
    assert fresh["all_draws"]["shift+q2"]["studies"] == 8  # seeds 103 on, not seed 60
    payload = {"runs": runs + [row("seed109", **{**base, "shift+q": good, "shift+q2": good})]}
    qn._extra(payload)
    assert not payload["fresh"]["adopt"]  # level with shift+q on goals and d': not adopted


def test_family_rank_takes_confer_within_each_family():
    """family_rank: Confer within each architecture family's training models, then their mean and their least."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import family_rank

    t = torch.tensor([1, 2])
    # surrogates: two of family a (both give the key on example 0, one on 1), one of b (gives it on 0 only)
    surr = torch.tensor([[1, 2], [1, 0], [1, 0]])
    # references: one of a (gives it on example 1), one of b (never), one of c (ignored: no surrogate of c)
    refs = torch.tensor([[0, 2], [0, 0], [1, 2]])
    got = family_rank.family_confer(surr, ["a", "a", "b"], refs, ["a", "b", "c"], t)
    # example 0: a 1·1, b 1·1; example 1: a 0.5·0, b 0·1
    assert np.allclose(got["family mean"], [1.0, 0.0]) and np.allclose(got["family min"], [1.0, 0.0])
    surr2 = torch.tensor([[1, 2], [1, 2], [0, 2]])
    got = family_rank.family_confer(surr2, ["a", "a", "b"], torch.tensor([[0, 0], [0, 0]]), ["a", "b"], t)
    assert np.allclose(got["family mean"], [0.5, 1.0]) and np.allclose(got["family min"], [0.0, 1.0])
