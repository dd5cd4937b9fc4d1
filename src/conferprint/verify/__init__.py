from conferprint.verify.metrics import (
    cae_acc, roc_auc, roc_curve, separation_margin, separation_stats, tpr_at_fpr, verdict, whole_matches,
)
from conferprint.verify.oracle import Oracle, OracleError, model_oracle, query_labels, random_oracle

__all__ = ["Oracle", "OracleError", "model_oracle", "random_oracle", "query_labels", "cae_acc", "roc_auc",
           "roc_curve", "tpr_at_fpr", "separation_margin", "separation_stats", "verdict", "verify_oracle",
           "whole_matches"]


def verify_oracle(oracle: Oracle, fingerprint, batch_size: int = 256) -> float:
    """CAEAcc of a labels-only suspect on ``fingerprint`` (queried in batches)."""
    import torch

    num_classes = fingerprint.manifest.get("num_classes")
    answers = torch.cat([query_labels(oracle, fingerprint.inputs[i: i + batch_size], num_classes)
                         for i in range(0, len(fingerprint), batch_size)])
    return cae_acc(answers, fingerprint.keys, fingerprint.groups)
