import pytest
import torch

from conferprint.verify import (
    OracleError, cae_acc, query_labels, roc_auc, roc_curve, separation_margin, tpr_at_fpr, verdict,
)


def test_roc_auc_known_values():
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1], [0.9]) == 0.0
    assert roc_auc([0.5], [0.5]) == 0.5
    assert roc_auc([0.3, 0.6, 0.9], [0.2, 0.6, 0.95]) == pytest.approx((1 + 1.5 + 2) / 9)
    with pytest.raises(ValueError):
        roc_auc([], [0.1])


def test_roc_curve_and_tpr_at_fpr():
    fpr, tpr, thr = roc_curve([0.9, 0.7, 0.4], [0.8, 0.3])
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert (abs(fpr[1:] - fpr[:-1]) >= 0).all() and (tpr[1:] >= tpr[:-1]).all()
    assert tpr_at_fpr([0.9, 0.7, 0.4], [0.8, 0.3], 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr([0.9, 0.7, 0.4], [0.8, 0.3], 0.5) == 1.0  # threshold 0.4: FPR 1/2, every positive
    assert tpr_at_fpr([0.9, 0.7, 0.4], [0.8, 0.3], 0.49) == pytest.approx(1 / 3)
    assert separation_margin([0.9, 0.7], [0.3, 0.5]) == pytest.approx(0.2)
    assert separation_margin([0.9, 0.4], [0.3, 0.5]) < 0


def test_cae_acc_and_verdict():
    assert cae_acc(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0])) == 0.5
    with pytest.raises(ValueError):
        cae_acc(torch.tensor([1]), torch.tensor([1, 2]))
    assert verdict(0.8, 0.75) == "stolen" and verdict(0.7, 0.75) == "independent"


@pytest.mark.parametrize("answer,msg", [
    (lambda x: torch.zeros(len(x) - 1, dtype=torch.long), "shape"),
    (lambda x: torch.zeros(len(x)), "float"),
    (lambda x: torch.full((len(x),), 10), "outside"),
    (lambda x: torch.zeros(len(x), 10, dtype=torch.long), "shape"),
])
def test_a_suspect_answering_garbage_is_an_error_not_a_score(answer, msg):
    with pytest.raises(OracleError, match=msg):
        query_labels(answer, torch.rand(4, 1, 8, 8), num_classes=10)


def test_family_inference_and_null_from_labels_only():
    from conferprint.verify.calibration import family_calibrated_score, family_nulls, infer_family

    probe_a = torch.tensor([0, 1, 2, 3, 4, 5])
    cal = {"a0": probe_a, "a1": torch.tensor([0, 1, 2, 3, 4, 0]), "b0": torch.tensor([5, 5, 5, 5, 4, 5])}
    fam = {"a0": "A", "a1": "A", "b0": "B"}
    assert infer_family(torch.tensor([0, 1, 2, 3, 0, 0]), cal, fam) == "A"
    assert infer_family(torch.tensor([5, 5, 5, 0, 4, 5]), cal, fam) == "B"
    nulls = family_nulls({"a0": 0.8, "a1": 0.6, "b0": 0.2}, fam)
    assert nulls == pytest.approx({"A": 0.7, "B": 0.2})
    assert family_calibrated_score(0.9, "A", nulls) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        infer_family(torch.tensor([1, 2]), cal, fam)


def test_family_null_scores_a_model_against_its_own_family(digit_models):
    from conferprint.fingerprint import CEM
    from conferprint.verify import model_oracle
    from conferprint.verify.calibration import FamilyNull

    m = digit_models
    fp = CEM(eps=0.15, steps=20, lr=0.03, size=20, batch_size=128, max_candidates=256, tau=0.5, target="conferrable").generate(
        m["source"], m["surrogates"][:1], m["references"][:1], m["x"], m["y"], seed=0, num_classes=10)
    # calibration: the references generation did not see (here: the second one, a linear model)
    cal = {"ref-linear": ("digits_linear", model_oracle(m["references"][1]))}
    fn = FamilyNull(fp, fp.inputs, cal)
    res = fn.score(model_oracle(m["source"]))
    assert res["family"] == "digits_linear" and res["cae_acc"] == 1.0
    assert res["score"] == pytest.approx(1.0 - fn.nulls["digits_linear"])
    own = fn.score(model_oracle(m["references"][1]))
    assert own["score"] == pytest.approx(0.0)  # a calibration model sits exactly on its family's null
