"""The decision: null fit, p-values, the curtailed sequential test, journals, budgets, the digest."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conferprint.cli import main
from conferprint.errors import JournalError
from conferprint.fingerprint import Fingerprint, FingerprintError, load_fingerprint, save_fingerprint
from conferprint.fingerprint.artifact import add_decoys, fingerprint_digest
from conferprint.verify import model_oracle
from conferprint.verify.local import verify_target
from conferprint.verify.null import NullModel
from conferprint.verify.session import VerifyOptions, plan_batches, verify_suspect, with_null


def test_null_p_values_are_monotone_and_the_critical_count_is_the_first_below_alpha():
    null = NullModel.fit([0.2, 0.3, 0.25, 0.35], n=50)
    p = [null.p_value(k, 50) for k in range(52)]
    assert p[0] == 1.0 and p[51] == 0.0 and all(a >= b for a, b in zip(p, p[1:]))
    k = null.critical_count(50, 1e-3)
    assert p[k] <= 1e-3 < p[k - 1]
    assert null.empirical_p(0.99) == pytest.approx(1 / 5) and null.empirical_p(0.0) == 1.0


def test_null_is_wider_than_binomial_and_wider_still_for_spread_references():
    from scipy.stats import binom

    tight = NullModel.fit([0.3, 0.3, 0.3], n=100)
    spread = NullModel.fit([0.05, 0.3, 0.55], n=100)
    assert tight.p_value(45, 100) > binom.sf(44, 100, 0.3)  # the dispersion floor: never a bare binomial
    assert spread.p_value(80, 100) > tight.p_value(80, 100)
    assert spread.critical_count(100, 1e-3) > tight.critical_count(100, 1e-3)


def test_false_accusation_rate_holds_for_models_drawn_from_the_null():
    """Independent models whose agreement rates follow the fitted Beta: stolen verdicts ≤ α (+ noise)."""
    null = NullModel.fit([0.15, 0.3, 0.22, 0.4, 0.28], n=100)
    rng = np.random.default_rng(0)
    rates = rng.beta(null.a, null.b, 20000)
    k = rng.binomial(100, rates)
    alpha = 0.05
    false_rate = float((k >= null.critical_count(100, alpha)).mean())
    assert false_rate <= alpha + 0.005


def test_prediction_threshold_is_the_student_bound_and_covers_new_references():
    from scipy.stats import t as student_t

    from conferprint.verify.calibration import prediction_threshold

    fit = prediction_threshold([0.0, 0.1, 0.2], 0.05)
    assert fit["mean"] == pytest.approx(0.1) and fit["sd"] == pytest.approx(0.1)
    assert fit["threshold"] == pytest.approx(0.1 + student_t.ppf(0.95, 2) * 0.1 * (4 / 3) ** 0.5)
    assert prediction_threshold([0.0, 0.1, 0.2], 0.01)["threshold"] > fit["threshold"]  # rarer accusations, higher bar
    # the bound's promise: a new reference from the same (normal) population lands above it with rate alpha,
    # averaged over calibration sets of 8 (a plain mean + z·sd would exceed alpha at this r)
    rng = np.random.default_rng(0)
    cal, new = rng.normal(0.05, 0.06, (4000, 8)), rng.normal(0.05, 0.06, 4000)
    above = [n >= prediction_threshold(c, 0.05)["threshold"] for c, n in zip(cal, new)]
    assert abs(np.mean(above) - 0.05) < 0.012


def test_tolerance_threshold_bounds_the_false_accusation_rate_with_its_confidence():
    """The tolerance bound's promise, per calibration set: the share of the references' population above it
    is at most alpha in a fraction ``confidence`` of sets. The prediction bound only keeps alpha on average,
    so a fair share of its sets accuse more than alpha of independent models."""
    from scipy.stats import nct, norm

    from conferprint.verify.calibration import fit_threshold, prediction_threshold, tolerance_threshold

    fit = tolerance_threshold([0.0, 0.1, 0.2, 0.3], 0.05, 0.9)
    k = nct.ppf(0.9, 3, norm.ppf(0.95) * 2) / 2
    assert fit["threshold"] == pytest.approx(0.15 + k * fit["sd"]) and fit["confidence"] == 0.9
    assert fit["rule"] == "normal upper tolerance bound"
    assert fit_threshold([0.0, 0.1, 0.2, 0.3], 0.05, "tolerance", 0.9) == fit
    assert fit_threshold([0.0, 0.1, 0.2, 0.3], 0.05) == prediction_threshold([0.0, 0.1, 0.2, 0.3], 0.05)
    assert fit["threshold"] > prediction_threshold([0.0, 0.1, 0.2, 0.3], 0.05)["threshold"]
    assert tolerance_threshold([0.0, 0.1, 0.2, 0.3], 0.05, 0.95)["threshold"] > fit["threshold"]
    rng = np.random.default_rng(1)
    mu, sigma = 0.05, 0.06
    cal = rng.normal(mu, sigma, (4000, 12))
    rate = lambda thr: 1 - norm.cdf((thr - mu) / sigma)  # noqa: E731  (the set's own false-accusation rate)
    tol = np.array([rate(tolerance_threshold(c, 0.05, 0.9)["threshold"]) for c in cal])
    pred = np.array([rate(prediction_threshold(c, 0.05)["threshold"]) for c in cal])
    assert abs(np.mean(tol <= 0.05) - 0.9) < 0.015
    assert np.mean(pred <= 0.05) < 0.7 and abs(pred.mean() - 0.05) < 0.005


@pytest.mark.parametrize("rule,confidence", [("median", 0.9), ("tolerance", 0.0), ("tolerance", 1.0)])
def test_fit_threshold_refuses_unknown_rules_and_confidences(rule, confidence):
    from conferprint.verify.calibration import fit_threshold

    with pytest.raises(ValueError):
        fit_threshold([0.1, 0.2, 0.3], 0.05, rule, confidence)


@pytest.mark.parametrize("bad,alpha", [([0.1, 0.2], 0.05), ([0.1, 0.2, float("nan")], 0.05), ([0.1, 0.2, 0.3], 0.0),
                                       ([0.1, 0.2, 0.3], 0.5)])
def test_prediction_threshold_refuses_too_few_or_invalid_inputs(bad, alpha):
    from conferprint.verify.calibration import prediction_threshold

    with pytest.raises(ValueError):
        prediction_threshold(bad, alpha)


@pytest.mark.parametrize("bad", [[0.5], [0.2, 1.5], [0.2, float("nan")]])
def test_a_null_needs_valid_scores(bad):
    with pytest.raises(ValueError):
        NullModel.fit(bad, n=10)


def _toy_fingerprint(n=30, decoys=30, null_scores=(0.1, 0.15, 0.2, 0.12)):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    keys = torch.randint(0, 5, (n,), generator=gen)
    fp = Fingerprint(x, keys, manifest={"num_classes": 5, "content_sha256": "x"})
    fp = add_decoys(fp, torch.rand(decoys + 5, 1, 4, 4, generator=gen), decoys, seed=0)
    return with_null(fp, NullModel.fit(list(null_scores), n))


def _table_oracle(fp, agree: torch.Tensor, calls: list):
    """Answers the key on fingerprint rows where ``agree``, another label elsewhere; decoys get 0."""
    rows = {tuple(fp.inputs[i].flatten().tolist()): i for i in range(len(fp))}

    def oracle(x):
        calls.append(len(x))
        out = []
        for r in x:
            i = rows.get(tuple(r.flatten().tolist()))
            out.append(0 if i is None else int(fp.keys[i]) if agree[i] else (int(fp.keys[i]) + 1) % 5)
        return torch.tensor(out)

    return oracle


@settings(max_examples=60, deadline=None, derandomize=True)
@given(agree=st.lists(st.booleans(), min_size=30, max_size=30), batch=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_curtailed_test_gives_the_full_tests_verdict(agree, batch, seed):
    fp = _toy_fingerprint()
    fp.manifest["content_sha256"] = fp.content_sha256()
    a = torch.tensor(agree)
    full = verify_suspect(fp, _table_oracle(fp, a, []), suspect="t", seed=seed,
                          options=VerifyOptions(batch_size=batch, sequential=False))
    early = verify_suspect(fp, _table_oracle(fp, a, []), suspect="t", seed=seed, options=VerifyOptions(batch_size=batch))
    assert full["fingerprint_queries"] == 30 and full["matches"] == int(a.sum())
    assert early["verdict"] == full["verdict"] and early["queries_used"] <= full["queries_used"]
    want = "stolen" if full["p_value"] <= 1e-3 else "independent"
    assert full["verdict"] == want and full["p_value_kind"] == "exact"
    if early["p_value_kind"] == "upper_bound":
        assert early["p_value"] >= full["p_value"]


def test_query_plan_mixes_decoys_and_varies_batch_sizes():
    batches = plan_batches(40, 40, 16, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(list(range(40)) + [-1 - j for j in range(40)])
    assert all(8 <= len(b) <= 16 for b in batches[:-1]) and len({len(b) for b in batches}) > 1
    assert all(any(i < 0 for i in b) and any(i >= 0 for i in b) for b in batches[:-1])
    assert plan_batches(40, 40, 16, seed=3) == batches != plan_batches(40, 40, 16, seed=4)


def test_budget_stops_undecided_and_never_overspends():
    fp = _toy_fingerprint()
    fp.manifest["content_sha256"] = fp.content_sha256()
    calls = []
    res = verify_suspect(fp, _table_oracle(fp, torch.ones(30, dtype=torch.bool), calls), suspect="t", seed=1,
                         options=VerifyOptions(batch_size=4, budget=10))
    assert res["verdict"] == "undecided" and "budget" in res["reason"] and res["queries_used"] == sum(calls) <= 10


def test_unreachable_alpha_is_undecided_not_independent():
    fp = _toy_fingerprint(n=5, decoys=0, null_scores=(0.2, 0.6, 0.9))
    fp.manifest["content_sha256"] = fp.content_sha256()
    res = verify_suspect(fp, _table_oracle(fp, torch.ones(5, dtype=torch.bool), []), suspect="t", seed=0)
    assert res["verdict"] == "undecided" and "would not reach" in res["reason"]


def test_journal_of_another_verification_is_refused(verification_kit, tmp_path):
    kit = verification_kit
    j = tmp_path / "j.jsonl"
    res = verify_target(kit["fingerprint"], model=kit["files"]["source"], arch=kit["arch"], journal=j)
    assert res["verdict"] == "stolen"
    again = verify_target(kit["fingerprint"], model=kit["files"]["source"], arch=kit["arch"], journal=j)
    assert again["resumed_finished"] and again["verdict"] == "stolen"
    with pytest.raises(JournalError, match="another verification.*suspect"):
        verify_target(kit["fingerprint"], model=kit["files"]["reference"], arch=kit["arch"], journal=j)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"conferprint-journal/1"}\nnot json\n')
    with pytest.raises(JournalError, match="line 2"):
        verify_target(kit["fingerprint"], model=kit["files"]["source"], arch=kit["arch"], journal=bad)


def test_digest_commits_to_tensors_and_null_and_verify_checks_it(verification_kit, tmp_path, capsys):
    kit = verification_kit
    fp = load_fingerprint(kit["fingerprint"])
    assert main(["commit", str(kit["fingerprint"])]) == 0
    printed = capsys.readouterr().out.split()[0]
    assert printed == fp.digest() == fingerprint_digest(fp.manifest) and printed.startswith("sha256:")
    res = verify_target(kit["fingerprint"], model=kit["files"]["source"], arch=kit["arch"], expect_digest=printed)
    assert res["fingerprint_digest"] == printed
    with pytest.raises(FingerprintError, match="committed"):
        verify_target(kit["fingerprint"], model=kit["files"]["source"], arch=kit["arch"], expect_digest="sha256:" + "0" * 64)
    # a moved null is a different commitment; a changed tensor is refused outright
    manifest = json.loads(kit["fingerprint"].read_text())
    manifest["null"]["a"] *= 2
    assert fingerprint_digest(manifest) != printed
    copy = tmp_path / "fp"
    save_fingerprint(fp, copy)
    assert load_fingerprint(copy).digest() == printed  # the file name is not part of the commitment
    tensors = copy.with_suffix(".safetensors")
    from safetensors.torch import load_file, save_file

    t = load_file(str(tensors))
    t["keys"][0] = (t["keys"][0] + 1) % 10
    save_file(t, str(tensors))
    assert main(["verify", "--fingerprint", str(copy) + ".json", "--model", str(kit["files"]["source"]),
                 "--arch", kit["arch"]]) == 2
    assert "does not match its manifest" in capsys.readouterr().err


def test_calibrate_cli_writes_a_null_and_verify_without_null_needs_a_threshold(verification_kit, tmp_path, capsys):
    kit = verification_kit
    bare = load_fingerprint(kit["fingerprint"])
    bare.manifest.pop("null")
    save_fingerprint(bare, tmp_path / "bare")
    with pytest.raises(ValueError, match="no null"):
        verify_target(tmp_path / "bare.json", model=kit["files"]["source"], arch=kit["arch"])
    res = verify_target(tmp_path / "bare.json", model=kit["files"]["source"], arch=kit["arch"],
                        options=VerifyOptions(threshold=0.9))
    assert res["verdict"] == "stolen" and res["p_value"] is None and res["decision_rule"] == "threshold"
    ref = f"{kit['files']['reference']}:{kit['arch']}"
    assert main(["calibrate", "--fingerprint", str(tmp_path / "bare.json"), "--reference", ref, "--reference",
                 f"{kit['files']['finetuned']}:{kit['arch']}", "--out", str(tmp_path / "cal")]) == 0
    out = json.loads(capsys.readouterr().out)
    cal = load_fingerprint(tmp_path / "cal.json")
    assert cal.null is not None and len(cal.null.scores) == 2 and out["digest"] == cal.digest() != bare.digest()
    assert cal.null.model_ids == ("reference.safetensors", "finetuned.safetensors")


def test_cli_verify_prints_the_required_fields(verification_kit, tmp_path, capsys):
    kit = verification_kit
    rc = main(["verify", "--fingerprint", str(kit["fingerprint"]), "--model", str(kit["files"]["reference"]),
               "--arch", kit["arch"], "--budget", "500", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert {"cae_acc", "queries_used", "p_value", "verdict", "threshold", "fingerprint_digest"} <= set(res)
    assert res["verdict"] == "independent" and res["p_value"] > 1e-3
    assert json.loads(capsys.readouterr().out) == res
    assert main(["verify", "--fingerprint", str(kit["fingerprint"]), "--model", str(kit["files"]["reference"])]) == 2
    assert "--arch" in capsys.readouterr().err


def test_verdict_uses_only_top1_labels(verification_kit):
    kit = verification_kit
    fp = load_fingerprint(kit["fingerprint"])
    model = kit["models"]["source"]
    res = verify_suspect(fp, model_oracle(model), suspect="local", seed=0)
    flipped = verify_suspect(fp, lambda x: (model_oracle(model)(x) + 1) % 10, suspect="local", seed=0)
    assert res["verdict"] == "stolen" and flipped["verdict"] == "independent" and flipped["matches"] == 0


def test_origins_are_found_among_the_candidates_and_a_stranger_is_refused():
    """The calibration references without the examples' origins: the origins of every fingerprint given are found
    by exact match (each once); an original that is not among the candidates, or a fingerprint that stores no
    originals, is refused."""
    import torch

    from conferprint.experiments.quickstart import origins_in
    from conferprint.fingerprint import Fingerprint

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 4, 4, generator=gen)
    fp = Fingerprint(inputs=x[[3, 7]] + 0.01, keys=torch.tensor([1, 2]), originals=x[[3, 7]].clone())
    ctl = Fingerprint(inputs=x[[7, 12, 0]], keys=torch.tensor([0, 0, 0]), originals=x[[7, 12, 0]].clone())
    assert origins_in(x, fp, ctl).tolist() == [0, 3, 7, 12]
    stranger = Fingerprint(inputs=x[:1], keys=torch.tensor([0]), originals=torch.rand(1, 1, 4, 4, generator=gen))
    with pytest.raises(ValueError, match="not among the candidates"):
        origins_in(x, fp, stranger)
    with pytest.raises(ValueError, match="original images"):
        origins_in(x, fp, Fingerprint(inputs=x[:1], keys=torch.tensor([0])))


def test_grouped_queries_count_each_example_once_and_the_curtailed_test_agrees():
    """An example asked as several queries (Fingerprint.groups) counts once: its share of matching queries; the
    sequential test stops on the same verdict as the full one, and rounding matches down never accuses more."""
    from conferprint.verify.metrics import cae_acc, whole_matches

    gen = torch.Generator().manual_seed(1)
    sizes = [1, 3, 2, 4, 1, 2, 3, 1, 2, 1] * 3  # 30 examples, 60 queries
    groups = torch.repeat_interleave(torch.arange(30), torch.tensor(sizes))
    keys = torch.randint(0, 5, (30,), generator=gen)[groups]
    fp = Fingerprint(torch.rand(len(groups), 1, 4, 4, generator=gen), keys, groups=groups,
                     manifest={"num_classes": 5, "content_sha256": "x"})
    fp = add_decoys(fp, torch.rand(40, 1, 4, 4, generator=gen), 20, seed=0)
    fp = with_null(fp, NullModel.fit([0.1, 0.15, 0.2, 0.12], 30))
    fp.manifest["content_sha256"] = fp.content_sha256()
    assert fp.n_examples == 30 and len(fp) == 60 and fp.groups is not None
    for p in (0.2, 0.9, 0.95, 1.0):
        agree = torch.rand(60, generator=gen) < p
        share = torch.stack([agree[groups == i].double().mean() for i in range(30)])
        want = float(share.mean())
        assert cae_acc(torch.where(agree, keys, (keys + 1) % 5), keys, groups) == pytest.approx(want)
        full = verify_suspect(fp, _table_oracle(fp, agree, []), suspect="t", seed=2,
                              options=VerifyOptions(batch_size=7, sequential=False))
        early = verify_suspect(fp, _table_oracle(fp, agree, []), suspect="t", seed=2, options=VerifyOptions(batch_size=7))
        assert full["fingerprint_queries"] == full["fingerprint_rows"] == 60 and full["fingerprint_size"] == 30
        assert full["cae_acc"] == pytest.approx(want) and full["matches"] == pytest.approx(30 * want, abs=1e-6)
        k = whole_matches(30 * want)
        assert k <= 30 * want + 1e-9 and full["p_value"] == pytest.approx(fp.null.p_value(k, 30))
        assert full["verdict"] == ("stolen" if k >= full["critical_matches"] else "independent") == early["verdict"]
        assert early["queries_used"] <= full["queries_used"]
    assert whole_matches(86.99999999) == 87 and whole_matches(86.6) == 86 and whole_matches(87) == 87
