"""Verify a model file someone handed over: safetensors weights + an architecture name, never a pickle."""
from __future__ import annotations

import os
from typing import Any

from safetensors import safe_open

from conferprint.fingerprint import load_fingerprint
from conferprint.models import build_model
from conferprint.verify import model_oracle, verdict, verify_oracle
from conferprint.zoo import ZooError, load_weights, sha256_file


def load_model_file(path: str | os.PathLike, arch: str, *, in_channels: int, num_classes: int):
    """Build ``arch`` and load safetensors weights (normalisation constants included) into it."""
    if not str(path).endswith(".safetensors"):
        raise ZooError(f"{path}: only .safetensors model files are accepted")
    if not os.path.isfile(path):
        raise ZooError(f"model file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except Exception as e:  # noqa: BLE001
        raise ZooError(f"{path}: not a readable safetensors file ({e})") from e
    if "0.mean" not in keys:
        raise ZooError(f"{path}: no normalisation constants ('0.mean'); not a conferprint model of arch {arch!r}")
    return load_weights(build_model(arch, in_channels=in_channels, num_classes=num_classes), path).eval()


def verify_local_model(fingerprint: str | os.PathLike, model: str | os.PathLike, arch: str, *,
                       threshold: float = 0.75) -> dict[str, Any]:
    fp = load_fingerprint(fingerprint)
    num_classes = int(fp.manifest.get("num_classes") or int(fp.keys.max()) + 1)
    net = load_model_file(model, arch, in_channels=int(fp.inputs.shape[1]), num_classes=num_classes)
    score = verify_oracle(model_oracle(net), fp)
    return {"cae_acc": score, "threshold": threshold, "verdict": verdict(score, threshold), "queries_used": len(fp),
            "fingerprint_content_sha256": fp.manifest["content_sha256"], "model_sha256": sha256_file(model), "arch": arch}
