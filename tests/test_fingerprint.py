import json

import pytest
import torch

from conferprint.fingerprint import (
    CEM, CIGM, PGD, FingerprintError, GenerationError, iterative_gradient_attack, load_fingerprint, save_fingerprint,
)
from conferprint.fingerprint.ensemble import balanced_pick, keep_mask
from conferprint.fingerprint.scores import confer, soft_conferrability, transfer
from conferprint.verify import model_oracle, random_oracle, verify_oracle

FAST_CEM = CEM(eps=0.15, steps=30, lr=0.03, size=20, batch_size=128, max_candidates=256, tau=0.5, target="conferrable")


@pytest.fixture(scope="module")
def cem_fp(digit_models):
    m = digit_models
    return FAST_CEM.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)


def test_scores_on_hand_computed_labels():
    target = torch.tensor([1, 2, 3])
    surr = torch.tensor([[1, 2, 0], [1, 0, 0]])
    refs = torch.tensor([[0, 2, 3], [1, 0, 3], [0, 0, 3]])
    assert torch.allclose(transfer(surr, target), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(transfer(refs, target), torch.tensor([1 / 3, 1 / 3, 1.0]))
    assert torch.allclose(confer(surr, refs, target), torch.tensor([2 / 3, 1 / 3, 0.0]))
    p = torch.tensor([[0.2, 0.8]])
    e = soft_conferrability([p, torch.tensor([[0.6, 0.4]])], [torch.tensor([[0.5, 0.5]])])
    assert torch.allclose(e, torch.tensor([[0.4 * 0.5, 0.6 * 0.5]]))


def test_cem_outputs_stay_in_the_eps_ball_and_pixel_range(cem_fp):
    assert len(cem_fp) > 0
    linf = (cem_fp.inputs - cem_fp.originals).abs().flatten(1).amax(1)
    assert float(linf.max()) <= FAST_CEM.eps + 1e-6
    assert float(cem_fp.inputs.min()) >= 0.0 and float(cem_fp.inputs.max()) <= 1.0
    assert float(linf.min()) > 0  # the examples were actually perturbed


def test_cem_examples_are_adversarial_and_conferrable_on_training_models(cem_fp, digit_models):
    src = digit_models["source"]
    assert (src(cem_fp.inputs).argmax(1) != cem_fp.original_labels).all()
    assert (cem_fp.train_confer >= FAST_CEM.tau - 1e-6).all()
    # the manifest's statistics agree with the tensors
    assert cem_fp.manifest["stats"]["mean_train_confer"] == pytest.approx(float(cem_fp.train_confer.mean()))


def test_same_seed_same_fingerprint_byte_for_byte(cem_fp, digit_models):
    m = digit_models
    again = FAST_CEM.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    assert torch.equal(again.inputs, cem_fp.inputs) and torch.equal(again.keys, cem_fp.keys)
    other = FAST_CEM.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=1, num_classes=10)
    assert not (len(other) == len(cem_fp) and torch.equal(other.inputs, cem_fp.inputs))


def test_source_verifies_at_one_and_random_answers_near_chance(cem_fp, digit_models):
    assert verify_oracle(model_oracle(digit_models["source"]), cem_fp) == 1.0
    big = CEM(**{**FAST_CEM.__dict__, "size": 200, "max_candidates": 700, "balance": False})
    m = digit_models
    fp = big.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    assert len(fp) >= 100
    scores = [verify_oracle(random_oracle(10, seed=s), fp) for s in range(20)]
    mean = sum(scores) / len(scores)
    assert 0.05 < mean < 0.15, mean


def test_class_balance_spreads_targets():
    targets = torch.tensor([0] * 10 + [1] * 3 + [2] * 1)
    scores = torch.linspace(1, 0, 14)
    pick = balanced_pick(targets, scores, 6, 3, balance=True)
    counts = torch.bincount(targets[pick], minlength=3).tolist()
    assert counts == [3, 2, 1]
    assert pick[:3].tolist() == [0, 10, 13]  # best of each class first
    assert balanced_pick(targets, scores, 6, 3, balance=False).tolist() == [0, 1, 2, 3, 4, 5]


def test_member_dropout_keeps_at_least_one_and_drops_at_the_rate():
    g = torch.Generator().manual_seed(0)
    masks = [keep_mask(10, 0.3, g) for _ in range(400)]
    assert all(any(m) for m in masks)
    kept = sum(sum(m) for m in masks) / (400 * 10)
    assert 0.65 < kept < 0.75
    assert keep_mask(3, 0.0, g) == [True] * 3
    assert all(sum(keep_mask(1, 0.99, g)) == 1 for _ in range(20))


def test_cigm_with_one_model_and_no_references_is_targeted_igm(digit_models):
    """sign(∇ −p_t) = sign(∇ −log p_t): C-IGM on {M} ∪ {M} with R = ∅ takes IGM's steps."""
    src = digit_models["source"]
    x0, y = digit_models["x"][:64], digit_models["y"][:64]
    targets = (y + 1) % 10
    cigm = CIGM(eps=0.2, step_size=0.02, steps=15, dropout=0.0)
    ours = cigm.attack(src, [src], [], x0, y, torch.Generator().manual_seed(0), targets=targets)
    igm = iterative_gradient_attack(src, x0, targets, eps=0.2, step_size=0.02, steps=15, targeted=True)
    same = (ours - igm).abs() < 1e-6
    assert float(same.float().mean()) > 0.99
    assert torch.equal(src(ours).argmax(1), src(igm).argmax(1))
    assert float((src(igm).argmax(1) == targets).float().mean()) > 0.5  # and the attack works


def test_cigm_generates_valid_examples(digit_models):
    m = digit_models
    fp = CIGM(eps=0.2, steps=20, step_size=0.02, size=10, tau=0.5, batch_size=128, max_candidates=256).generate(
        m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    assert 0 < len(fp) <= 10
    assert float((fp.inputs - fp.originals).abs().max()) <= 0.2 + 1e-6
    assert (m["source"](fp.inputs).argmax(1) == fp.keys).all()


def test_cem_without_beta_gamma_on_one_model_is_a_targeted_attack(digit_models):
    """α only, ensemble = the source alone, target = a class ≠ y: minimising −log p_t moves the source to t."""
    src = digit_models["source"]
    x0, y = digit_models["x"][:64], digit_models["y"][:64]
    cem = CEM(eps=0.3, alpha=1.0, beta=0.0, gamma=0.0, steps=60, lr=0.03, dropout=0.0, target="conferrable")
    x = cem.attack(src, [], [], x0, y, torch.Generator().manual_seed(0))
    pred = src(x).argmax(1)
    assert float((pred != y).float().mean()) > 0.8


def test_pgd_baseline_fools_the_source_inside_the_ball(digit_models):
    m = digit_models
    fp = PGD(eps=0.15, steps=20, step_size=0.02, size=30, max_candidates=256).generate(
        m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    assert len(fp) == 30
    assert float((fp.inputs - fp.originals).abs().max()) <= 0.15 + 1e-6
    assert (m["source"](fp.inputs).argmax(1) != fp.original_labels).all()


def test_generation_that_keeps_nothing_says_so(digit_models):
    m = digit_models
    cem = CEM(eps=0.001, steps=2, size=5, max_candidates=32, batch_size=32)
    with pytest.raises(GenerationError, match="none of 32 candidates"):
        cem.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)


def test_search_best_optimises_every_candidate_and_keeps_the_most_conferrable(digit_models):
    from dataclasses import replace

    from conferprint.fingerprint.scores import labels_of

    m = digit_models
    first = replace(FAST_CEM, size=10, balance=False, tau=0.0)
    best = replace(first, search="best")
    fp_first = first.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    fp_best = best.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    # "first" stops after the first batch that fills the quota; "best" spends the whole budget
    assert fp_first.manifest["stats"]["candidates_used"] == FAST_CEM.batch_size
    assert fp_best.manifest["stats"]["candidates_used"] == FAST_CEM.max_candidates
    # the kept scores are the true hard Confer of the kept inputs, and "best" keeps the top of all found
    surr, refs = labels_of(m["surrogates"], fp_best.inputs), labels_of(m["references"], fp_best.inputs)
    assert torch.allclose(fp_best.train_confer, confer(surr, refs, fp_best.keys))
    assert float(fp_best.train_confer.min()) >= float(fp_first.train_confer.min())
    assert float(fp_best.train_confer.mean()) >= float(fp_first.train_confer.mean())
    assert (fp_best.train_confer[:-1] >= fp_best.train_confer[1:]).all()  # best first


@pytest.mark.parametrize("bad", [dict(eps=0.0), dict(dropout=1.0), dict(tau=1.5), dict(target="nope"), dict(steps=0),
                                 dict(search="all"), dict(search="best", max_candidates=None),
                                 dict(candidates="wrong"), dict(rank="gauss"), dict(rank_top=0)])
def test_invalid_cem_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        CEM(**bad)


def test_fingerprint_file_roundtrip_and_tamper_evidence(cem_fp, tmp_path):
    mpath = save_fingerprint(cem_fp, tmp_path / "fp")
    loaded = load_fingerprint(tmp_path / "fp.safetensors")
    assert torch.equal(loaded.inputs, cem_fp.inputs) and torch.equal(loaded.keys, cem_fp.keys)
    assert loaded.manifest["content_sha256"] == json.loads(mpath.read_text())["content_sha256"]

    # change one key in the tensors file, keep the manifest: refused
    from safetensors.torch import save_file

    tensors = cem_fp.tensors()
    tensors["keys"] = tensors["keys"].clone()
    tensors["keys"][0] = (tensors["keys"][0] + 1) % 10
    save_file(tensors, str(tmp_path / "fp.safetensors"))
    with pytest.raises(FingerprintError, match="does not match its manifest"):
        load_fingerprint(tmp_path / "fp")


@pytest.mark.parametrize("corrupt", ["garbage-tensors", "garbage-manifest", "missing", "wrong-format"])
def test_malformed_fingerprint_files_give_clear_errors(cem_fp, tmp_path, corrupt):
    save_fingerprint(cem_fp, tmp_path / "fp")
    if corrupt == "garbage-tensors":
        (tmp_path / "fp.safetensors").write_bytes(b"\x00\x01not safetensors")
    elif corrupt == "garbage-manifest":
        (tmp_path / "fp.json").write_text("{not json")
    elif corrupt == "missing":
        (tmp_path / "fp.json").unlink()
    else:
        (tmp_path / "fp.json").write_text(json.dumps({"format": "pickle"}))
    with pytest.raises(FingerprintError):
        load_fingerprint(tmp_path / "fp.json")


def test_validation_models_rank_by_confer_plus_their_held_out_power(digit_models):
    from dataclasses import replace

    from conferprint.fingerprint.generate import validation_power
    from conferprint.fingerprint.scores import labels_of

    m = digit_models
    cem = replace(FAST_CEM, size=10, balance=False, tau=0.0, search="best")
    args = (m["source"], m["surrogates"], m["references"], m["x"], m["y"])
    # for the mechanics any two model lists do: here the training surrogates and references themselves
    val = ([m["surrogates"][1]], [m["references"][1]])
    plain = cem.generate(*args, seed=0, num_classes=10)
    ranked = cem.generate(*args, seed=0, num_classes=10, validation=val)

    def rank(fp):
        return fp.train_confer + validation_power(val, fp.inputs, fp.keys)

    # train_confer stays the training models' hard Confer; the pick is the top of Confer + power
    surr, refs = labels_of(m["surrogates"], ranked.inputs), labels_of(m["references"], ranked.inputs)
    assert torch.allclose(ranked.train_confer, confer(surr, refs, ranked.keys))
    r = rank(ranked)
    assert (r[:-1] >= r[1:]).all()
    # same candidates, same optimisation: ranking by the sum cannot pick a worse total than Confer alone
    assert float(r.mean()) >= float(rank(plain).mean())
    assert ranked.manifest["stats"]["n_validation_surrogates"] == 1 == ranked.manifest["stats"]["n_validation_references"]
    assert ranked.manifest["stats"]["mean_validation_power"] == pytest.approx(float((r - ranked.train_confer).mean()))
    # no validation model at all is the plain ranking
    empty = cem.generate(*args, seed=0, num_classes=10, validation=([], []))
    assert torch.equal(empty.inputs, plain.inputs) and "n_validation_surrogates" not in empty.manifest["stats"]


def test_validation_power_is_surrogates_minus_references(digit_models):
    from conferprint.fingerprint.generate import validation_power

    m = digit_models
    x = m["x"][:50]
    t = m["source"](x).argmax(1)
    s = (m["surrogates"][0](x).argmax(1) == t).float()
    r = (m["references"][0](x).argmax(1) == t).float()
    assert torch.equal(validation_power(([m["surrogates"][0]], [m["references"][0]]), x, t), s - r)
    assert torch.equal(validation_power(([m["surrogates"][0]], []), x, t), s)


def test_errors_pool_makes_the_sources_own_mistakes_conferrable(cem_fp, digit_models, digits):
    from dataclasses import replace

    m = digit_models
    x, y = digits.x_test, digits.y_test
    wrong = m["source"](x).argmax(1) != y
    assert 5 <= int(wrong.sum()) < len(y)  # the held-out digits hold some of the source's mistakes
    cem = replace(FAST_CEM, candidates="errors", target="source", beta=0.0, tau=0.0, balance=False, size=5, search="best")
    fp = cem.generate(m["source"], m["surrogates"], m["references"], x, y, seed=0, num_classes=10)
    # only the mistakes were optimised, and each example is still one
    assert fp.manifest["stats"]["candidates_used"] == min(int(wrong.sum()), cem.max_candidates)
    assert (m["source"](fp.originals).argmax(1) != fp.original_labels).all()
    assert (m["source"](fp.inputs).argmax(1) == fp.keys).all() and (fp.keys != fp.original_labels).all()
    assert float((fp.inputs - fp.originals).abs().max()) <= cem.eps + 1e-6
    assert fp.manifest["params"]["candidates"] == "errors"
    # the papers' pool never starts from a mistake
    assert (m["source"](cem_fp.originals).argmax(1) == cem_fp.original_labels).all()
    # a pool without a single mistake is refused with the reason
    with pytest.raises(GenerationError, match="none is eligible"):
        cem.generate(m["source"], m["surrogates"], m["references"], x[~wrong], y[~wrong], seed=0, num_classes=10)


def test_a_fingerprint_older_than_a_parameter_counts_as_made_with_its_default(cem_fp, tmp_path):
    from dataclasses import asdict, replace

    from conferprint.experiments.quickstart import _fingerprint_cached

    params = {k: v for k, v in cem_fp.manifest["params"].items() if k != "candidates"}  # as saved before it existed
    save_fingerprint(replace(cem_fp, manifest={**cem_fp.manifest, "params": params}), tmp_path / "fp")
    expect = {"params": asdict(FAST_CEM), "seed": 0}
    assert _fingerprint_cached(tmp_path / "fp", expect, FAST_CEM) is not None
    errors = replace(FAST_CEM, candidates="errors")
    assert _fingerprint_cached(tmp_path / "fp", {**expect, "params": asdict(errors)}, errors) is None
    assert _fingerprint_cached(tmp_path / "fp", expect) is None  # without the method, the missing key differs


def test_mixed_pool_takes_its_share_from_the_sources_mistakes_and_the_rest_from_its_correct_answers(digit_models, digits):
    from dataclasses import replace

    m = digit_models
    x = torch.cat([m["x"], digits.x_test])
    y = torch.cat([m["y"], digits.y_test])
    cem = replace(FAST_CEM, candidates="mixed", tau=0.0, balance=False, size=9, search="best")
    fp = cem.generate(m["source"], m["surrogates"], m["references"], x, y, seed=0, num_classes=10)
    wrong_before = m["source"](fp.originals).argmax(1) != fp.original_labels
    assert len(fp) == 9 and wrong_before.tolist() == [False] * 5 + [True] * 4  # the errors half rounded down
    assert (fp.keys != fp.original_labels).all() and (m["source"](fp.inputs).argmax(1) == fp.keys).all()
    # each half is what its own pool generates
    alone = replace(cem, candidates="errors", size=4).generate(m["source"], m["surrogates"], m["references"], x, y,
                                                              seed=0, num_classes=10)
    assert torch.equal(fp.inputs[5:], alone.inputs)
    st = fp.manifest["stats"]
    assert fp.manifest["params"]["candidates"] == "mixed" and len(st["parts"]) == 2
    assert st["candidates_used"] == sum(p["candidates_used"] for p in st["parts"])
    assert st["mean_train_confer"] == pytest.approx(float(fp.train_confer.mean()))
    with pytest.raises(ValueError, match="one example from each pool"):
        replace(cem, size=1)
    # errors_share sets the split: 3 of 4 from the mistakes here (6 of 9, rounded down), the same examples as
    # each pool alone gives
    three = replace(cem, errors_share=0.75)
    fp3 = three.generate(m["source"], m["surrogates"], m["references"], x, y, seed=0, num_classes=10)
    wrong3 = m["source"](fp3.originals).argmax(1) != fp3.original_labels
    assert wrong3.tolist() == [False] * 3 + [True] * 6 and fp3.manifest["params"]["errors_share"] == 0.75
    assert torch.equal(fp3.inputs[:3], fp.inputs[:3])  # the papers' pool's best 3 are its best 5's first 3
    six = replace(cem, candidates="errors", size=6).generate(m["source"], m["surrogates"], m["references"], x, y,
                                                             seed=0, num_classes=10)
    assert torch.equal(fp3.inputs[3:], six.inputs)
    assert replace(cem, size=100, errors_share=0.29).n_errors == 29  # not 28 from 0.29 · 100 = 28.999…
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="errors_share"):
            replace(cem, errors_share=bad)
    with pytest.raises(ValueError, match="one example from each pool"):
        replace(cem, size=4, errors_share=0.2)  # 0 from the mistakes


def test_mixed_pool_gives_its_correct_part_its_own_budget(digit_models, digits):
    """``correct_candidates`` is the correct pool's budget in a mixed CEM: that part is the correct pool alone at that
    budget, the errors part keeps ``max_candidates``."""
    from dataclasses import replace

    m = digit_models
    x = torch.cat([m["x"], digits.x_test])
    y = torch.cat([m["y"], digits.y_test])
    cem = replace(FAST_CEM, candidates="mixed", tau=0.0, balance=False, size=9, search="best", batch_size=64)
    cut = replace(cem, correct_candidates=64)
    assert cut.part("correct").max_candidates == 64 and cut.part("errors").max_candidates == cem.max_candidates
    assert cut.part("correct").size == 5 and cut.part("errors").size == 4 and cut.part("correct").correct_candidates is None
    fp = cut.generate(m["source"], m["surrogates"], m["references"], x, y, seed=0, num_classes=10)
    full = cem.generate(m["source"], m["surrogates"], m["references"], x, y, seed=0, num_classes=10)
    parts, full_parts = fp.manifest["stats"]["parts"], full.manifest["stats"]["parts"]
    assert parts[0]["candidates_used"] == 64 < full_parts[0]["candidates_used"]
    assert parts[1]["candidates_used"] == full_parts[1]["candidates_used"]
    alone = replace(cem, candidates="correct", size=5, max_candidates=64).generate(
        m["source"], m["surrogates"], m["references"], x, y, seed=0, num_classes=10)
    assert torch.equal(fp.inputs[:5], alone.inputs)
    assert torch.equal(fp.inputs[5:], full.inputs[5:])  # the errors part is untouched
    assert fp.manifest["params"]["correct_candidates"] == 64
    with pytest.raises(ValueError, match="correct_candidates"):
        replace(cem, correct_candidates=0)
    with pytest.raises(ValueError, match="needs candidates 'mixed'"):
        FAST_CEM.part("correct")


def test_bf16_optimisation_gives_a_valid_fingerprint_selected_in_fp32(cem_fp, digit_models):
    from dataclasses import replace

    from conferprint.fingerprint.scores import confer

    m = digit_models
    cem = replace(FAST_CEM, bf16=True)
    fp = cem.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    assert len(fp) > 0 and fp.manifest["params"]["bf16"] is True
    assert not torch.equal(fp.inputs[: len(cem_fp)], cem_fp.inputs[: len(fp)])  # the autocast did change the steps
    assert float((fp.inputs - fp.originals).abs().max()) <= cem.eps + 1e-6
    with torch.no_grad():  # keys and the kept examples' Confer are those of the fp32 models
        assert torch.equal(m["source"](fp.inputs).argmax(1), fp.keys)
        surr = torch.stack([s(fp.inputs).argmax(1) for s in m["surrogates"]])
        refs = torch.stack([r(fp.inputs).argmax(1) for r in m["references"]])
    assert torch.allclose(confer(surr, refs, fp.keys), fp.train_confer)
    assert (fp.train_confer >= cem.tau - 1e-6).all()


def test_members_call_a_folded_copy_and_freeze_the_model_itself():
    from conferprint.fingerprint.ensemble import Member
    from conferprint.models import build_model

    m = build_model("lenet_bn", in_channels=1, num_classes=10, seed=0)
    member = Member(m)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert member.model is not m and getattr(member.model, "batchnorm_folded", False)
    assert not any(p.requires_grad for p in member.model.parameters())
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(member.logits(x), m(x), rtol=1e-4, atol=1e-5)
    assert Member(m, fold=False).model is m  # IPGuard's: the model's own outputs


def test_cem_folds_each_member_once_per_run_and_selects_on_the_models_themselves(monkeypatch):
    import conferprint.fingerprint.ensemble as ensemble
    from conferprint.models import build_model

    folds = []
    real = ensemble.fold_batchnorm

    def counting(model):
        out = real(model)
        if out is not model:
            folds.append(model)
        return out

    monkeypatch.setattr(ensemble, "fold_batchnorm", counting)
    models = [build_model(a, in_channels=1, num_classes=10, seed=i).eval()
              for i, a in enumerate(["cnn_small", "lenet_bn", "mlp", "cnn_small", "lenet_bn"])]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = models[0](x).argmax(1)  # every candidate classified correctly by the untrained source
    cem = CEM(eps=0.2, steps=3, lr=0.05, size=4, batch_size=32, max_candidates=96, tau=0.0, balance=False,
              target="conferrable", search="best")  # every batch optimised
    called = []
    attack = CEM.attack
    monkeypatch.setattr(CEM, "attack", lambda self, s, su, re, *a, **k: called.append((s, *su, *re)) or
                        attack(self, s, su, re, *a, **k))
    fp = cem.generate(models[0], models[1:3], models[3:], x, y, seed=0, num_classes=10)
    assert len(fp) > 0
    # the four BatchNorm models folded once each for the three batches; the MLP has nothing to fold
    assert sorted(map(id, folds)) == sorted(id(m) for m in models if m is not models[2])
    assert len(called) == 3 and all(getattr(c, "batchnorm_folded", False) or c is models[2] for c in called[0])
    # the kept examples' keys are the source's own labels (selection on the model itself)
    assert torch.equal(models[0](fp.inputs).argmax(1), fp.keys)


def test_shift_moves_with_a_zero_border_and_refuses_the_whole_image():
    from conferprint.fingerprint.ensemble import SHIFTS, SHIFTS2, shifted

    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert shifted(x, 1, 0)[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [3, 4, 5]]  # down one row
    assert shifted(x, 0, -1)[0, 0].tolist() == [[1, 2, 0], [4, 5, 0], [7, 8, 0]]  # left one column
    assert torch.equal(shifted(x, 0, 0), x) and len(SHIFTS) == 8 and (0, 0) not in SHIFTS
    assert shifted(x, -2, 1)[0, 0].tolist() == [[0, 6, 7], [0, 0, 0], [0, 0, 0]]  # up two rows, right one column
    assert len(SHIFTS2) == 24 and set(SHIFTS) < set(SHIFTS2) and (0, 0) not in SHIFTS2
    with pytest.raises(ValueError, match="smaller than the image"):
        shifted(x, 3, 0)


def test_shift_rank_orders_the_top_by_confer_around_the_example_then_the_rest(digit_models):
    from conferprint.fingerprint.ensemble import shift_confer, shift_rank

    m = digit_models
    x, t = m["x"][:12], m["source"](m["x"][:12]).argmax(1)
    scores = torch.tensor([0.9, 0.5, 0.9, 0.7, 0.1, 0.3, 0.8, 0.2, 0.6, 0.4, 0.95, 0.05])
    rank = shift_rank(m["surrogates"], m["references"], x, t, scores, top=5)
    order = torch.argsort(rank, descending=True).tolist()
    top5 = [10, 0, 2, 6, 3]  # the five best by Confer
    key = shift_confer(m["surrogates"], m["references"], x, t)
    assert sorted(order[:5]) == sorted(top5) and order[5:] == [8, 1, 9, 5, 7, 4, 11]  # the rest by Confer
    got = [(-float(key[i]), -float(scores[i]), i) for i in order[:5]]
    assert got == sorted(got)  # by the shift key, ties by Confer, then position
    assert len(set(rank.tolist())) == 12
    # a wider neighbourhood is the mean over its shifts: the 24 of two pixels are the 8 and the other 16
    from conferprint.fingerprint.ensemble import SHIFTS, SHIFTS2
    outer = [s for s in SHIFTS2 if s not in SHIFTS]
    wide = shift_confer(m["surrogates"], m["references"], x, t, shifts=SHIFTS2)
    rest = shift_confer(m["surrogates"], m["references"], x, t, shifts=outer)
    assert torch.allclose(wide, (8 * key + 16 * rest) / 24) and not torch.equal(wide, key)
    with pytest.raises(ValueError, match="empty"):
        shift_confer(m["surrogates"], m["references"], x, t, shifts=())


def test_cem_rank_shift_keeps_the_best_by_confer_around_the_example(digit_models):
    from dataclasses import replace

    from conferprint.fingerprint.ensemble import folded, shift_confer
    from conferprint.fingerprint.scores import labels_of

    m = digit_models
    cem = replace(FAST_CEM, size=10, balance=False, tau=0.0, search="best")
    args = (m["source"], m["surrogates"], m["references"], m["x"], m["y"])
    plain = cem.generate(*args, seed=0, num_classes=10)
    shift = replace(cem, rank="shift", rank_top=40).generate(*args, seed=0, num_classes=10)
    assert shift.manifest["params"]["rank"] == "shift" and not torch.equal(shift.inputs, plain.inputs)
    # the same optimisation: every picked example is one the plain run kept too, with its true hard Confer stored
    surr, refs = labels_of(m["surrogates"], shift.inputs), labels_of(m["references"], shift.inputs)
    assert torch.allclose(shift.train_confer, confer(surr, refs, shift.keys))
    key = shift_confer(folded(m["surrogates"]), folded(m["references"]), shift.inputs, shift.keys)
    assert (key[:-1] >= key[1:]).all()  # best first by the shift key
    with pytest.raises(ValueError, match="one"):
        replace(cem, rank="shift").generate(*args, seed=0, num_classes=10, validation=([m["surrogates"][0]], []))
    # no validation model at all is no second ranking, as for the plain ranking
    empty = replace(cem, rank="shift", rank_top=40).generate(*args, seed=0, num_classes=10, validation=([], []))
    assert torch.equal(empty.inputs, shift.inputs)


def test_shift_queries_ask_each_example_with_the_shifts_the_source_keeps(digit_models, tmp_path):
    """with_shift_queries: each example, then its one-pixel shifts on which the source gives the key, one group;
    the file keeps the groups; a suspect's CAEAcc is the mean over the examples of its share of their queries."""
    from conferprint.fingerprint.artifact import add_decoys
    from conferprint.fingerprint.ensemble import SHIFTS, shifted, with_shift_queries
    from conferprint.fingerprint.scores import labels_of

    m = digit_models
    fp = FAST_CEM.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    g = with_shift_queries(fp, m["source"])
    assert g.n_examples == len(fp) < len(g) and g.manifest["stats"]["queries"] == len(g)
    rows = 0
    for i in range(len(fp)):  # by hand: the example, then the kept shifts in SHIFTS' order
        kept = [(dy, dx) for dy, dx in SHIFTS
                if int(labels_of([m["source"]], shifted(fp.inputs[i:i + 1], dy, dx))[0, 0]) == int(fp.keys[i])]
        want = torch.cat([fp.inputs[i:i + 1]] + [shifted(fp.inputs[i:i + 1], dy, dx) for dy, dx in kept])
        mine = g.groups == i
        assert torch.equal(g.inputs[mine], want) and (g.keys[mine] == fp.keys[i]).all()
        assert torch.equal(g.originals[mine][1:], torch.cat([shifted(fp.originals[i:i + 1], dy, dx) for dy, dx in kept])
                           if kept else g.originals[mine][1:])
        rows += 1 + len(kept)
    assert rows == len(g) and 0 < len(g) - len(fp) < 8 * len(fp)  # some shifts kept, some not
    assert float(g.perturbation_linf().max()) <= FAST_CEM.eps + 1e-6
    assert g.manifest["stats"]["query_shifts_kept"] == pytest.approx((len(g) - len(fp)) / len(fp))
    # a suspect's CAEAcc: the mean over examples of its share of each example's queries
    other = m["references"][0]
    hit = (labels_of([other], g.inputs)[0] == g.keys).double()
    share = torch.stack([hit[g.groups == i].mean() for i in range(len(fp))])
    assert verify_oracle(model_oracle(other), g) == pytest.approx(float(share.mean()))
    assert verify_oracle(model_oracle(m["source"]), g) == 1.0
    # saved and loaded with its groups; the manifest's size counts the examples
    g = add_decoys(g, m["x"], 10, seed=1)
    save_fingerprint(g, tmp_path / "g")
    back = load_fingerprint(tmp_path / "g")
    assert torch.equal(back.groups, g.groups) and back.manifest["size"] == len(fp) and back.manifest["queries"] == len(g)
    with pytest.raises(ValueError, match="without groups or decoys"):
        with_shift_queries(back, m["source"])
    # a file whose groups are not numbered in order, or whose example's queries disagree on the key, is refused
    from conferprint.fingerprint.artifact import Fingerprint

    with pytest.raises(FingerprintError, match="groups must number"):
        save_fingerprint(Fingerprint(g.inputs, g.keys, groups=g.groups.flip(0)), tmp_path / "bad")
    second = int(torch.nonzero(g.groups == int(torch.bincount(g.groups).argmax()))[1])  # a shifted copy's row
    keys = g.keys.clone()
    keys[second] = (keys[second] + 1) % 10
    with pytest.raises(FingerprintError, match="share its key"):
        save_fingerprint(Fingerprint(g.inputs, keys, groups=g.groups), tmp_path / "bad")
    # CEM(query_shifts=True): the same examples as without, each asked with its shifts
    from dataclasses import replace

    q = replace(FAST_CEM, query_shifts=True).generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"],
                                                       seed=0, num_classes=10)
    assert torch.equal(q.inputs[q.example_rows()], fp.inputs) and torch.equal(fp.example_rows(), torch.arange(len(fp)))
    assert torch.equal(q.groups[q.example_rows()], torch.arange(q.n_examples))
    from conferprint.experiments.report import plot_fingerprint

    plot_fingerprint(tmp_path / "q.png", q, [str(c) for c in range(10)])  # the examples, not their copies
    assert (tmp_path / "q.png").stat().st_size > 0 and torch.equal(q.groups, with_shift_queries(fp, m["source"]).groups)
    assert q.manifest["params"]["query_shifts"] is True and q.n_examples == FAST_CEM.size
    # two pixels' shifts (query_radius=2): the same examples again, each with up to 24 copies, the one-pixel ones among them
    from conferprint.fingerprint.ensemble import SHIFTS2, shifts_within

    q2 = replace(FAST_CEM, query_shifts=True, query_radius=2).generate(
        m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    assert torch.equal(q2.inputs[q2.example_rows()], fp.inputs) and len(q2) > len(q)
    assert torch.equal(q2.groups, with_shift_queries(fp, m["source"], SHIFTS2).groups)
    assert int(torch.bincount(q2.groups).max()) <= 25 and shifts_within(1) == SHIFTS
    # a PGD control asked the same way: its own examples, each with the shifts the source keeps
    from conferprint.fingerprint import PGD

    pgd = PGD(eps=0.1, steps=5, size=12, batch_size=64, max_candidates=64, balance=False)
    plain = pgd.generate(m["source"], [], [], m["x"], m["y"], seed=0, num_classes=10)
    asked = replace(pgd, query_shifts=True).generate(m["source"], [], [], m["x"], m["y"], seed=0, num_classes=10)
    assert torch.equal(asked.inputs[asked.example_rows()], plain.inputs) and asked.n_examples == len(plain) < len(asked)
    assert torch.equal(asked.groups, with_shift_queries(plain, m["source"]).groups)
    for bad in (0, 3):
        with pytest.raises(ValueError, match="radius must be 1 or 2"):
            replace(FAST_CEM, query_radius=bad)
        with pytest.raises(ValueError, match="radius must be 1 or 2"):
            PGD(query_radius=bad)
