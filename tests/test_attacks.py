"""Every removal attack on tiny models and real digits; the registry's refusals; the evaluation end to end."""
import json
import shutil

import pytest
import torch
from torch import nn

from conferprint.attacks import ATTACKS, AttackConfigError, AttackContext, list_attacks, make_attack
from conferprint.attacks.modification import last_linear, prunable, sparsity
from conferprint.cli import main
from conferprint.experiments.evaluate import parse_config
from conferprint.models import build_model
from conferprint.training import TrainConfig, accuracy

# small settings per attack so the whole set runs in seconds
SMALL = {
    "ftll": {"epochs": 2}, "ftal": {"epochs": 2}, "rtll": {"epochs": 2}, "rtal": {"epochs": 2},
    "pruning": {"rate": 0.8, "steps": 2},
    "retrain": {"epochs": 2, "arch": "digits_linear"}, "blackbox": {"epochs": 2}, "jagielski": {"epochs": 2},
    "papernot": {"epochs": 2, "rounds": 2, "seed_size": 40}, "knockoff": {"epochs": 2, "budget": 600},
    "transfer": {"epochs": 1, "pretrain_epochs": 1}, "ensemble": {"epochs": 2},
    "adv_training": {"epochs": 1, "steps": 2}, "ground_truth": {"epochs": 2, "p": 0.6},
    "dp_sgd": {"epochs": 1, "arch": "digits_cnn"},  # ReLU in place: opacus needs them switched off
}


@pytest.fixture(scope="module")
def setting(digit_models, digits):
    """The source of the digits kit (trained on the first half: D1) and the attacker's half D2."""
    n = len(digits.y_train)
    d1, d2 = torch.arange(n // 2), torch.arange(n // 2, n)
    return digit_models["source"], digits, d1, d2


def _ctx(setting, seed=3):
    source, digits, _, d2 = setting
    return AttackContext(source, "digits_cnn", digits, d2, seed, train=TrainConfig(batch_size=64, augment=False))


def test_every_attack_has_small_settings():
    assert set(SMALL) == set(list_attacks())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_attack_runs_leaves_the_source_alone_and_never_reads_d1(name, setting):
    if name == "dp_sgd":
        pytest.importorskip("opacus")
    source, digits, d1, d2 = setting
    before = {k: v.clone() for k, v in source.state_dict().items()}
    ctx = _ctx(setting)
    stolen = make_attack(name, SMALL[name]).run(ctx)
    # the defender's model is untouched, bit for bit
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    # the attacker read D2 only (Knockoff reads none of it: its data come from another domain)
    assert not (ctx.touched & set(d1.tolist()))
    assert ctx.touched <= set(d2.tolist())
    assert ctx.touched or name == "knockoff"
    assert ctx.source_queries > 0
    # a real, different model that classifies
    assert stolen.model is not source
    out = stolen.model(digits.x_test[:16])
    assert out.shape == (16, 10) and torch.isfinite(out).all()
    rebuilt = build_model(stolen.arch, in_channels=1, num_classes=10)
    rebuilt.load_state_dict(stolen.model.state_dict())  # the arch name reproduces the model
    if stolen.arch == "digits_cnn":
        assert any(not torch.equal(before[k], v) for k, v in stolen.model.state_dict().items())
    assert accuracy(stolen.model, digits.x_test, digits.y_test) > 0.0


def test_pruning_reaches_its_target_sparsity_in_every_layer(setting):
    stolen = make_attack("pruning", {"rate": 0.9, "steps": 3}).run(_ctx(setting))
    for w in prunable(stolen.model):
        assert abs(float((w == 0).float().mean()) - 0.9) < 0.01
    assert sparsity(stolen.model) >= 0.89
    assert stolen.info["sparsity_schedule"][-1] == pytest.approx(0.9)


@pytest.mark.parametrize("name", ["ftll", "rtll"])
def test_last_layer_attacks_change_only_the_last_layer(name, setting):
    source = setting[0]
    stolen = make_attack(name, {"epochs": 2}).run(_ctx(setting))
    head = next(n for n, m in stolen.model.named_modules() if m is last_linear(stolen.model))
    before, after = source.state_dict(), stolen.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{head}.weight", f"{head}.bias"}


def test_all_layer_attacks_change_more_than_the_last_layer(setting):
    source = setting[0]
    stolen = make_attack("ftal", {"epochs": 2}).run(_ctx(setting))
    changed = {k for k, v in source.state_dict().items() if not torch.equal(v, stolen.model.state_dict()[k])}
    assert len(changed) > 2


def test_ensemble_is_the_average_of_disjoint_members(setting):
    stolen = make_attack("ensemble", {"members": 3, "epochs": 1}).run(_ctx(setting))
    assert stolen.arch == "ensemble3-digits_cnn"
    assert sum(stolen.info["part_sizes"]) == len(setting[3])
    members = stolen.model[1].members
    x = setting[1].x_test[:8]
    normed = stolen.model[0](x)
    mean = torch.stack([m(normed).softmax(1) for m in members]).mean(0)
    assert torch.allclose(stolen.model(x).exp(), mean, atol=1e-5)


def test_ground_truth_attack_asks_the_source_only_for_the_rest(setting):
    ctx = _ctx(setting)
    stolen = make_attack("ground_truth", {"p": 0.75, "epochs": 1}).run(ctx)
    n = len(setting[3])
    assert stolen.info["ground_truth_labels"] == round(0.75 * n)
    assert ctx.source_queries == n - round(0.75 * n)


@pytest.mark.parametrize("params, key", [
    ({"epoch": 3}, "params.epoch"),
    ({"epochs": "three"}, "params.epochs"),
    ({"epochs": 2.5}, "params.epochs"),
    ({"lr": -1.0}, "params.lr"),
    ({"labels": "psychic"}, "params.labels"),
    ({"lr": float("nan")}, "params.lr"),
])
def test_invalid_attack_parameters_are_refused_naming_the_key(params, key):
    with pytest.raises(AttackConfigError, match=key.replace(".", r"\.")):
        make_attack("ftll", params, "attacks[0]")


def test_unknown_attack_and_unknown_architecture_are_refused():
    with pytest.raises(AttackConfigError, match=r"attacks\[2\]\.name.*unknown attack 'steal'"):
        make_attack("steal", {}, "attacks[2]")
    with pytest.raises(AttackConfigError, match="unknown architecture 'resnet1000'"):
        make_attack("retrain", {"arch": "resnet1000"})
    with pytest.raises(AttackConfigError, match="rate.*outside"):
        make_attack("pruning", {"rate": 1.5})


@pytest.mark.parametrize("doc, key", [
    ({"attacks": [{"name": "ftll"}], "extra": 1}, "extra"),
    ({"attacks": [{"name": "ftll"}], "study": {"preset": "huge"}}, "study.preset"),
    ({"attacks": [{"name": "ftll"}], "study": {"sed": 1}}, "study.sed"),
    ({"attacks": [{"name": "ftll"}], "evaluation": {"repeats": 0}}, "evaluation.repeats"),
    ({"attacks": [{"name": "ftll"}], "evaluation": {"decision": "vibes"}}, "evaluation.decision"),
    ({"attacks": [{"name": "ftll"}], "evaluation": {"accuracy_margin": "5%"}}, "evaluation.accuracy_margin"),
    ({"attacks": [{"name": "ftll", "parms": {}}]}, r"attacks\[0\]\.parms"),
    ({"attacks": [{"name": "ftll"}, {"name": "pruning", "params": {"rate": 2}}]}, r"attacks\[1\]\.params\.rate"),
    ({"attacks": [{"name": "ftll"}, {"name": "ftll"}]}, r"attacks\[1\]\.label"),
    ({"attacks": []}, "attacks"),
    ([1, 2], "mapping"),
])
def test_invalid_configs_are_refused_naming_the_key(doc, key):
    with pytest.raises(AttackConfigError, match=key):
        parse_config(doc)


def test_shipped_configs_parse():
    from conftest import ROOT
    from conferprint.experiments.evaluate import load_config

    fm = load_config(ROOT / "configs" / "fmnist-removal.yaml")
    names = {e.attack.name for e in fm.attacks}
    assert names == set(ATTACKS)  # the Fashion-MNIST config runs every attack
    assert {e.attack.rate for e in fm.attacks if e.attack.name == "pruning"} == {0.7, 0.8, 0.9}
    assert {e.attack.p for e in fm.attacks if e.attack.name == "ground_truth"} == {0.5, 0.6, 0.7, 0.8}
    assert load_config(ROOT / "configs" / "cifar10-removal.yaml").preset == "cifar10"


def test_evaluate_end_to_end_and_resume(tiny_quickstart, tmp_path):
    from conftest import FMNIST_DIR

    study, _ = tiny_quickstart
    out = tmp_path / "eval"
    shutil.copytree(study, out / "study")  # the defender's study is reused from its zoo
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
study: {{preset: tiny, seed: 0, data_dir: {FMNIST_DIR}}}
evaluation: {{repeats: 2, decision: score}}
attacks:
  - {{name: ftll, params: {{epochs: 1}}}}
  - {{name: retrain, label: retrain-mlp, repeats: 1, params: {{arch: mlp, epochs: 1, labels: hard}}}}
""")
    assert main(["evaluate", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    for f in ("report.md", "removal.png"):
        assert (out / f).stat().st_size > 0
    rows = {r["label"]: r for r in res["attacks"]}
    assert set(rows) == {"ftll-epochs=1", "retrain-mlp"}
    assert rows["ftll-epochs=1"]["repeats"] == 2 and rows["retrain-mlp"]["repeats"] == 1
    for r in rows.values():
        assert {"params", "test_acc", "fidelity", "cae_acc", "verdict", "removal_succeeded"} <= set(r)
        assert 0 <= r["cae_acc"]["mean"] <= 1 and r["cae_acc"]["std"] >= 0
        for run in r["runs"]:
            assert run["verdict"] == ("stolen" if run["score"] >= res["decision"]["threshold"] else "not stolen")
        ok = [run["test_acc"] >= res["source"]["test_acc"] - 0.05 and run["verdict"] != "stolen" for run in r["runs"]]
        assert r["removal_succeeded"] == (sum(ok) * 2 > len(ok))
    assert rows["retrain-mlp"]["runs"][0]["arch"] == "mlp"
    by_rule = res["agreement_with_paper"]["by_rule"]
    assert set(by_rule) == set(res["decision"]["rules"]) and by_rule["score"] == res["agreement_with_paper"]["agree"]
    # the two FTLL repeats are different models (their own seeds)
    assert rows["ftll-epochs=1"]["runs"][0]["seed"] != rows["ftll-epochs=1"]["runs"][1]["seed"]
    assert (out / "zoo" / "ftll-epochs=1-r1.safetensors").is_file()
    assert "| ftll-epochs=1 |" in (out / "report.md").read_text()

    # interrupted: one stolen model lost; the rerun attacks once more and reuses the rest
    (out / "zoo" / "ftll-epochs=1-r1.json").unlink()
    kept = json.loads((out / "zoo" / "retrain-mlp-r0.json").read_text())
    assert main(["evaluate", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert json.loads((out / "zoo" / "retrain-mlp-r0.json").read_text()) == kept
    assert (out / "zoo" / "ftll-epochs=1-r1.json").is_file()
    r0 = {r["label"]: r for r in again["attacks"]}["retrain-mlp"]["runs"][0]
    assert r0["cae_acc"] == rows["retrain-mlp"]["runs"][0]["cae_acc"]


def test_attack_command_saves_a_loadable_model(tiny_quickstart, tmp_path):
    from conftest import FMNIST_DIR
    from conferprint.suspects import load_torch_model

    study, res = tiny_quickstart
    rc = main(["attack", "ftal", "--source", str(study / "zoo" / "source.safetensors"), "--arch", res["source"]["arch"],
               "--data-dir", str(FMNIST_DIR), "--set", "epochs=1", "--set", "fraction=0.05", "--out", str(tmp_path / "z"),
               "--no-progress"])
    assert rc == 0
    meta = json.loads((tmp_path / "z" / "ftal-s0.json").read_text())
    assert meta["role"] == "stolen" and meta["spec"]["labels"] == "ftal" and meta["spec"]["train"]["epochs"] == 1
    model = load_torch_model(tmp_path / "z" / "ftal-s0.safetensors", res["source"]["arch"])
    assert isinstance(model, nn.Module)
    assert main(["attack", "ftal", "--source", str(study / "zoo" / "source.safetensors"), "--arch",
                 res["source"]["arch"], "--set", "epoch=1", "--out", str(tmp_path / "z")]) == 2


def test_repeats_override_applies_to_entries_without_their_own():
    doc = {"attacks": [{"name": "ftll"}, {"name": "ftal", "repeats": 2}], "evaluation": {"repeats": 1}}
    cfg = parse_config(doc, repeats=3)
    assert [e.repeats for e in cfg.attacks] == [3, 2]
    with pytest.raises(AttackConfigError, match="evaluation.repeats"):
        parse_config(doc, repeats=0)


def test_the_study_rule_adds_the_raw_cae_acc_test_to_the_score(tiny_quickstart):
    """A copy of the source follows it on the control set too (score 0): the quickstart's calibrated verdict
    still calls it stolen through raw CAEAcc, the score alone does not."""
    from conferprint.experiments.evaluate import EvalConfig, Judge
    from conferprint.experiments.quickstart import control_fingerprint
    from conferprint.fingerprint import load_fingerprint
    from conferprint.suspects import load_torch_model

    study, res = tiny_quickstart
    fp, control = load_fingerprint(study / "fingerprint"), control_fingerprint(study)
    copy = load_torch_model(study / "zoo" / "source.safetensors", res["source"]["arch"])
    n = len(fp)
    for critical, expect in ((n, "stolen"), (n + 1, "not stolen")):
        study_results = {**res, "score": "control_diff", "threshold": 0.2,
                         "threshold_fit": {"raw_cae_acc_rule": {"critical_matches": critical}}}
        row = Judge(fp, control, study_results, EvalConfig(preset="tiny", decision="study"))(copy)
        assert row["cae_acc"] == 1.0 and row["score"] == pytest.approx(0.0)
        assert row["verdicts"]["score"] == "not stolen" and row["verdicts"]["study"] == expect == row["verdict"]
    with pytest.raises(AttackConfigError, match="study"):  # a study without the calibrated rule cannot decide so
        Judge(fp, control, {**res, "score": "control_diff"}, EvalConfig(preset="tiny", decision="study"))
