"""The classic baselines (foolbox), IPGuard and the thief's evasion detector, on real digits."""
import pytest
import torch

from conferprint.evasion import DetectorConfig, evasion_stats, thief_examples, train_detector
from conferprint.fingerprint.foolbox_baselines import METHODS, Plain
from conferprint.fingerprint.ipguard import IPGuard, boundary_loss, top_two_gap
from conferprint.training import predict_labels, predict_logits

pytest.importorskip("foolbox")


@pytest.fixture(scope="module")
def kit(digit_models):
    return digit_models["source"], digit_models["x"][:400], digit_models["y"][:400]


@pytest.mark.parametrize("method", METHODS)
def test_baseline_stays_in_the_ball_and_fools_the_source(method, kit):
    source, x, y = kit
    eps = 0.2
    fp = Plain(method=method, eps=eps, steps=30, cw_confidence=0.0, size=20, batch_size=128,
               max_candidates=384).generate(source, [], [], x, y, seed=0, num_classes=10)
    assert len(fp) > 0
    assert float((fp.inputs - fp.originals).abs().max()) <= eps + 1e-6
    assert float(fp.inputs.min()) >= 0.0 and float(fp.inputs.max()) <= 1.0
    labels = predict_labels(source, fp.inputs)
    assert (labels != fp.original_labels).all()  # every kept example fools the source
    assert torch.equal(labels, fp.keys)  # the key is the source's label
    assert fp.manifest["method"] == method


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        Plain(method="magic")


def test_ipguard_points_sit_on_the_boundary(kit):
    source, x, y = kit
    ipg = IPGuard(k=0.1, steps=300, size=20, batch_size=128, max_candidates=256)
    fp = ipg.generate(source, [], [], x, y, seed=0, num_classes=10)
    assert len(fp) >= 10
    logits = predict_logits(source, fp.inputs)
    gaps = top_two_gap(logits)
    assert (gaps <= ipg.k + 1e-5).all()  # top-two gap below the margin
    assert float(top_two_gap(predict_logits(source, fp.originals)).median()) > 5 * ipg.k  # it started far away
    assert torch.equal(logits.argmax(1), fp.keys)
    assert float(fp.inputs.min()) >= 0 and float(fp.inputs.max()) <= 1


def test_ipguard_loss_is_zero_exactly_on_the_band():
    i, j = torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])
    logits = torch.tensor([[2.0, 1.95, 0.0], [2.0, 1.0, 0.0], [2.0, 1.95, 1.99]])
    loss = boundary_loss(logits, i, j, k=0.1)
    assert loss[0] == 0 and loss[1] > 0 and loss[2] > 0


def test_ipguard_with_eps_stays_in_the_ball(kit):
    source, x, y = kit
    fp = IPGuard(eps=0.1, steps=200, size=10, batch_size=128, max_candidates=256).generate(
        source, [], [], x, y, seed=0, num_classes=10)
    if len(fp):
        assert float((fp.inputs - fp.originals).abs().max()) <= 0.1 + 1e-6


def test_thief_examples_cover_methods_and_radii(digit_models):
    thief = digit_models["surrogates"][0]
    x, y = digit_models["x"][:60], digit_models["y"][:60]
    cfg = DetectorConfig(methods=("fgm", "pgd"), epsilons=(0.1, 0.3), attack_steps=5)
    adv = thief_examples(thief, x, y, cfg, seed=0)
    d = (adv - x).abs().amax(dim=(1, 2, 3))
    assert float(d.max()) <= 0.3 + 1e-6 and float(d[:15].max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_detector_catches_large_eps_examples(digit_models, digits):
    """It can work: trained on the thief's large-ε PGD examples, it separates fresh ones from benign inputs."""
    thief = digit_models["surrogates"][0]
    cfg = DetectorConfig(arch="digits_cnn", methods=("pgd",), epsilons=(0.3,), train_size=300, epochs=15,
                         attack_steps=10)
    det = train_detector(thief, digit_models["x"], cfg, seed=0)
    x_test, y_test = digits.x_test[:200], digits.y_test[:200]
    fresh = Plain(method="pgd", eps=0.3, steps=10, step_size=0.075).perturb(digit_models["source"], x_test[:100], y_test[:100])
    stats = evasion_stats(det, fresh, x_test[100:], catch=0.9)
    assert stats["roc_auc"] > 0.9
    assert stats["fingerprint_flagged"] >= 0.9
    assert 0.0 <= stats["benign_flagged"] < 0.5


def test_compare_end_to_end(tiny_quickstart, tmp_path):
    import json
    import shutil

    from conftest import FMNIST_DIR
    from conferprint.cli import main

    study, _ = tiny_quickstart
    out = tmp_path / "cmp"
    shutil.copytree(study, out / "study")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
study: {{preset: tiny, seed: 0, data_dir: {FMNIST_DIR}}}
methods: {{cem: {{}}, pgd: {{}}, ipguard: {{steps: 60}}, fgm: {{}}}}
epsilons: [0.1, 0.2]
candidates: 24
benign: 50
evasion: {{arch: cnn_small, methods: [fgm, pgd], epsilons: [0.1], train_size: 150, epochs: 1, attack_steps: 3}}
""")
    assert main(["compare", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    for f in ("report.md", "roc.png", "conferrability.png", "evasion.png"):
        assert (out / f).stat().st_size > 0, f
    assert set(res["roc"]) == {"cem", "pgd", "ipguard", "fgm", "cem-pgd"}
    for k in ("cem", "pgd", "fgm"):
        r = res["roc"][k]
        assert 0 <= r["roc_auc"] <= 1 and r["size"] > 0 and r["source_cae_acc"] == 1.0
        assert r["linf_mean"] <= 0.1 + 1e-6  # the study's ε
    assert {m["role"] for m in res["models"]} == {"surrogate", "reference"}
    assert set(res["conferrability"]) == {"cem", "pgd", "fgm"}  # unbounded IPGuard has no ε curve
    for pts in res["conferrability"].values():
        assert [p["eps"] for p in pts] == [0.1, 0.2]
        for p in pts:
            assert 0 <= p["success_rate"] <= 1
            if "confer" in p:
                assert 0 <= p["confer"] <= p["transfer_surrogates"] + 1e-9
    ev = res["evasion"]
    assert 0 <= ev["fingerprint"]["roc_auc"] <= 1 and 0 <= ev["fingerprint"]["benign_flagged"] <= 1
    assert "| ipguard |" in (out / "report.md").read_text()


@pytest.mark.parametrize("doc, key", [
    ({"methods": {"cem": {}, "magic": {}}}, "methods.magic"),
    ({"methods": {"cem": {}, "fgm": {"epz": 1}}}, "methods.fgm.epz"),
    ({"methods": {"pgd": {}}}, "methods"),
    ({"epsilons": [0.1, 2]}, "epsilons"),
    ({"evasion": {"layers": 3}}, "evasion.layers"),
    ({"candidates": 0}, "candidates"),
    ({"study": {"preset": "huge"}}, "study.preset"),
])
def test_invalid_compare_configs_are_refused_naming_the_key(doc, key):
    from conferprint.attacks import AttackConfigError
    from conferprint.experiments.compare import parse_compare_config

    with pytest.raises(AttackConfigError, match=key):
        parse_compare_config(doc)


def test_shipped_compare_configs_parse():
    from conftest import ROOT
    from conferprint.experiments.compare import load_compare_config

    c = load_compare_config(ROOT / "configs" / "fmnist-compare.yaml")
    assert set(c.methods) == {"cem", "pgd", "ipguard", "fgm", "bim", "cw", "deepfool"}
    assert load_compare_config(ROOT / "configs" / "cifar10-compare.yaml").preset == "cifar10"
