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
