import pytest
import torch

from conferprint.training import TrainConfig
from conferprint.zoo import ModelSpec, Zoo, ZooError, load_weights


def spec(**kw):
    base = dict(name="m", arch="digits_linear", role="reference", dataset="digits", data="D1", labels="ground_truth",
                seed=0, train=TrainConfig(epochs=1).to_dict(), in_channels=1, num_classes=10, mean=(0.5,), std=(0.5,))
    return ModelSpec(**{**base, **kw})


def test_store_reuse_and_metadata(tmp_path):
    zoo = Zoo(tmp_path)
    calls = []

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model[1][1].weight.add_(1.0)
        return {"test_acc": 0.5}

    m1, meta, now = zoo.get_or_train(spec(), train)
    assert now and calls == [1]
    for key in ("arch", "role", "sha256", "spec", "test_acc"):
        assert key in meta
    assert meta["spec"]["seed"] == 0 and meta["spec"]["data"] == "D1" and meta["spec"]["labels"] == "ground_truth"
    m2, meta2, now2 = zoo.get_or_train(spec(), train)
    assert not now2 and calls == [1] and meta2["sha256"] == meta["sha256"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_changed_spec_or_corrupted_weights_retrain(tmp_path):
    zoo = Zoo(tmp_path)
    n = []
    train = lambda m: n.append(1) or {"test_acc": 0.1}  # noqa: E731
    zoo.get_or_train(spec(), train)
    zoo.get_or_train(spec(seed=1), train)
    assert len(n) == 2
    w, _ = zoo.paths("m")
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    zoo.get_or_train(spec(seed=1), train)
    assert len(n) == 3


def test_half_written_entry_is_ignored(tmp_path):
    zoo = Zoo(tmp_path)
    w, j = zoo.paths("m")
    w.write_bytes(b"partial")  # weights without metadata: an interrupted write
    assert zoo.load(spec()) is None
    j.write_text("{truncated")
    assert zoo.load(spec()) is None


def test_invalid_names_and_roles_are_refused():
    with pytest.raises(ValueError):
        spec(name="../escape")
    with pytest.raises(ValueError):
        spec(role="thief")


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"nope": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ZooError, match="do not fit"):
        load_weights(spec().build(), tmp_path / "w.safetensors")
    (tmp_path / "x.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ZooError, match="not a readable safetensors"):
        load_weights(spec().build(), tmp_path / "x.safetensors")
