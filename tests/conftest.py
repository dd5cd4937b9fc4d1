from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conferprint.allocator import tune_cpu_allocator
from conferprint.data import load_digits
from conferprint.models import build_model
from conferprint.training import TrainConfig, teacher_labels, train_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

torch.set_num_threads(2)
# as the conferprint command does (the suite calls it too): freed tensor memory stays in the process
tune_cpu_allocator()


@pytest.fixture(scope="session")
def tiny_quickstart(tmp_path_factory):
    """The quickstart's tiny preset run once through the CLI: ``(out dir, results)``."""
    import json

    from conferprint.cli import main

    if not FMNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    out = tmp_path_factory.mktemp("qs")
    rc = main(["quickstart", "--out", str(out), "--preset", "tiny", "--seed", "0", "--no-progress",
               "--data-dir", str(FMNIST_DIR)])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="session")
def digits():
    return load_digits(seed=0)


def _train(arch, x, y, seed, epochs=25):
    m = build_model(arch, in_channels=1, num_classes=10, seed=seed)
    train_model(m, x, y, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, augment=False), seed=seed)
    return m.eval()


@pytest.fixture(scope="session")
def digit_models(digits):
    """A source, 2 surrogates (its soft labels) and 2 references (ground truth) on real 8×8 digits."""
    x, y = digits.x_train, digits.y_train
    half = len(x) // 2
    x1, y1 = x[:half], y[:half]
    source = _train("digits_cnn", x1, y1, seed=1)
    soft = teacher_labels(source, x1, "soft")
    surrogates = [_train(a, x1, soft, seed=10 + i) for i, a in enumerate(["digits_cnn", "digits_linear"])]
    references = [_train(a, x1, y1, seed=20 + i) for i, a in enumerate(["digits_cnn", "digits_linear"])]
    return {"source": source, "surrogates": surrogates, "references": references, "x": x1, "y": y1}


@pytest.fixture(scope="session")
def verification_kit(digit_models, digits, tmp_path_factory):
    """Model files and a calibrated fingerprint for the verification tests (all on real digits).

    The null is fitted on 4 references trained on the *other* half of the data (never seen by
    generation); ``reference.safetensors`` is a fifth, unseen one; ``finetuned.safetensors`` is the
    source fine-tuned on that other half (a stolen copy).
    """
    import copy

    from conferprint.fingerprint import CEM, save_fingerprint
    from conferprint.fingerprint.artifact import add_decoys
    from conferprint.verify import model_oracle
    from conferprint.verify.session import fit_null, with_null
    from conferprint.zoo import state_dict_for_save
    from safetensors.torch import save_file

    m = digit_models
    root = tmp_path_factory.mktemp("kit")
    x, y = digits.x_train, digits.y_train
    x2, y2 = x[len(x) // 2:], y[len(y) // 2:]
    cem = CEM(eps=0.15, steps=30, lr=0.03, size=40, batch_size=128, max_candidates=512, tau=0.5, target="conferrable")
    fp = cem.generate(m["source"], m["surrogates"], m["references"], m["x"], m["y"], seed=0, num_classes=10)
    fp = add_decoys(fp, digits.x_test, len(fp), seed=1)
    null_refs = {f"null-{a}-{i}": _train(a, x2, y2, seed=40 + i) for i, a in enumerate(["digits_cnn", "digits_linear"] * 2)}
    fp = with_null(fp, fit_null(fp, {k: model_oracle(v) for k, v in null_refs.items()}))
    save_fingerprint(fp, root / "fp")
    finetuned = copy.deepcopy(m["source"]).requires_grad_(True)
    train_model(finetuned, x2, y2, TrainConfig(epochs=5, batch_size=64, lr=0.01, augment=False), seed=3)
    files = {"source": m["source"], "finetuned": finetuned.eval(), "reference": _train("digits_cnn", x2, y2, seed=77)}
    for name, model in files.items():
        save_file(state_dict_for_save(model), str(root / f"{name}.safetensors"))
    return {"root": root, "fingerprint": root / "fp.json", "arch": "digits_cnn", "models": files,
            "files": {k: root / f"{k}.safetensors" for k in files}}
