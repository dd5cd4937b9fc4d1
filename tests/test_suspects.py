"""Untrusted model and fingerprint files: ONNX, weights-only .pt, hostile pickles, fuzzed bytes."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conferprint.errors import ConferprintError, ModelFileError
from conferprint.fingerprint import FingerprintError, load_fingerprint
from conferprint.suspects import export_onnx, load_suspect, load_torch_model
from conferprint.verify.local import verify_target

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def onnx_files(verification_kit, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(model, root / f"{name}.onnx", SHAPE) for name, model in verification_kit["models"].items()}


def test_onnx_suspects_verify_like_the_torch_models(verification_kit, onnx_files):
    kit = verification_kit
    x = torch.rand(16, *SHAPE)
    for name, model in kit["models"].items():
        s = load_suspect(onnx_files[name], input_shape=SHAPE, num_classes=10)
        assert torch.equal(s.oracle(x), model(x).argmax(1)), name
    verdicts = {name: verify_target(kit["fingerprint"], model=onnx_files[name])["verdict"] for name in onnx_files}
    assert verdicts == {"source": "stolen", "finetuned": "stolen", "reference": "independent"}


def test_onnx_of_the_wrong_shape_is_refused(verification_kit, tmp_path):
    path = export_onnx(verification_kit["models"]["source"], tmp_path / "m.onnx", SHAPE)
    with pytest.raises(ModelFileError, match="takes inputs"):
        load_suspect(path, input_shape=(3, 8, 8), num_classes=10)


def test_weights_only_pt_state_dict_loads(verification_kit, tmp_path):
    kit = verification_kit
    path = tmp_path / "source.pt"
    torch.save(kit["models"]["source"].state_dict(), path)
    res = verify_target(kit["fingerprint"], model=path, arch=kit["arch"])
    assert res["verdict"] == "stolen" and res["suspect_info"]["kind"] == "torch"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create a file when unpickled


def test_a_hostile_pickle_is_refused_and_never_executed(verification_kit, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"0.mean": torch.zeros(1), "payload": _Exploit(str(marker))}, path)
    with pytest.raises(ModelFileError, match="weights_only"):
        load_suspect(path, verification_kit["arch"], input_shape=SHAPE, num_classes=10)
    path2 = tmp_path / "evil2.pth"
    path2.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ModelFileError):
        load_suspect(path2, verification_kit["arch"], input_shape=SHAPE, num_classes=10)
    assert not marker.exists()


@pytest.mark.parametrize("name,arch,words", [("x.bin", "digits_cnn", "unknown model format"),
                                             ("x.safetensors", None, "architecture"),
                                             ("x.safetensors", "nonsense", "unknown architecture")])
def test_bad_suspect_arguments_are_clear_errors(verification_kit, tmp_path, name, arch, words):
    path = tmp_path / name
    shutil.copy(verification_kit["files"]["source"], path)
    with pytest.raises(ModelFileError, match=words):
        load_suspect(path, arch, input_shape=SHAPE, num_classes=10)


def test_weights_of_another_architecture_do_not_fit(verification_kit):
    with pytest.raises(ModelFileError, match="do not fit"):
        load_torch_model(verification_kit["files"]["source"], "digits_linear")


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8)
CUT = st.none() | st.integers(0, 4000)


@pytest.fixture(scope="module")
def model_bytes(verification_kit, onnx_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("pt")
    torch.save(verification_kit["models"]["source"].state_dict(), root / "m.pt")
    return {".safetensors": verification_kit["files"]["source"].read_bytes(), ".onnx": onnx_files["source"].read_bytes(),
            ".pt": (root / "m.pt").read_bytes()}


@FUZZ
@given(suffix=st.sampled_from([".safetensors", ".onnx", ".pt"]), edits=EDITS, cut=CUT, junk=st.binary(max_size=64))
def test_fuzzed_model_files_raise_only_the_library_error(model_bytes, verification_kit, tmp_path_factory, suffix,
                                                         edits, cut, junk):
    path = tmp_path_factory.mktemp("fz") / f"m{suffix}"
    path.write_bytes(_mutate(model_bytes[suffix], edits, cut) + junk)
    try:
        s = load_suspect(path, verification_kit["arch"], input_shape=SHAPE, num_classes=10)
        labels = s.oracle(torch.rand(4, *SHAPE))
        assert labels.shape == (4,) and labels.dtype == torch.int64
    except ConferprintError:
        pass


def _load_fully_or_fingerprint_error(path) -> None:
    """Load, digest and read the null; the only error allowed is FingerprintError."""
    try:
        fp = load_fingerprint(path)
        fp.digest()
        _ = fp.null
    except FingerprintError:
        pass


@FUZZ
@given(target=st.sampled_from(["tensors", "manifest"]), edits=EDITS, cut=CUT, junk=st.binary(max_size=64))
def test_fuzzed_fingerprint_files_raise_only_fingerprint_error(verification_kit, tmp_path_factory, target, edits, cut, junk):
    src = verification_kit["fingerprint"]
    root = tmp_path_factory.mktemp("fpfz")
    shutil.copy(src, root / "fp.json")
    shutil.copy(src.with_suffix(".safetensors"), root / "fp.safetensors")
    victim = root / ("fp.safetensors" if target == "tensors" else "fp.json")
    victim.write_bytes(_mutate(victim.read_bytes(), edits, cut) + junk)
    _load_fully_or_fingerprint_error(root / "fp.json")


@FUZZ
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                          max_leaves=10),
       key=st.sampled_from(["null", "num_classes", "content_sha256", "format"]))
def test_fuzzed_manifest_fields_raise_only_fingerprint_error(verification_kit, tmp_path_factory, value, key):
    src = verification_kit["fingerprint"]
    root = tmp_path_factory.mktemp("mf")
    shutil.copy(src.with_suffix(".safetensors"), root / "fp.safetensors")
    manifest = json.loads(src.read_text())
    manifest[key] = value
    (root / "fp.json").write_text(json.dumps(manifest))
    _load_fully_or_fingerprint_error(root / "fp.json")
