"""Suspect model files someone handed over, loaded without ever executing code from them.

Accepted formats:

* ``.safetensors`` weights plus an architecture name (``conferprint archs``): tensors only, no code;
* ``.onnx`` through ``onnxruntime`` (the optional ``onnx`` extra): a graph of standard operators;
* ``.pt`` / ``.pth`` state dicts through ``torch.load(weights_only=True)``, which refuses any pickle
  opcode that would build an object other than tensors and plain containers.

Every failure, whatever the parser underneath raised, surfaces as :class:`ModelFileError` with the
path and the reason; the parsers' own exceptions are chained for debugging.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from conferprint._io import atomic_write
from conferprint.errors import ModelFileError
from conferprint.models import arch_info, build_model
from conferprint.training import predict_labels
from conferprint.verify.oracle import Oracle

MAX_BYTES = 2 * 1024**3  # refuse files above 2 GiB before reading them
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIXES = (".onnx",)


@dataclass
class Suspect:
    """A loaded suspect: a labels-only oracle plus what was loaded."""

    oracle: Oracle
    kind: str  # "safetensors" | "torch" | "onnx"
    path: str
    arch: str | None
    input_shape: tuple[int, ...] | None  # (C, H, W) where the file says
    num_classes: int | None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "arch": self.arch}


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file {p} not found")
    size = p.stat().st_size
    if size == 0:
        raise ModelFileError(f"{p}: the file is empty")
    if size > MAX_BYTES:
        raise ModelFileError(f"{p}: {size} bytes is above the {MAX_BYTES}-byte limit for a model file")
    return p


def _read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or a weights-only torch file; nothing else is accepted."""
    if p.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types on malformed input
            raise ModelFileError(f"{p}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    elif p.suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(io.BytesIO(p.read_bytes()), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, zipfile errors ...
            raise ModelFileError(
                f"{p}: refused by torch.load(weights_only=True) — not a plain state dict of tensors "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    else:
        raise ModelFileError(f"{p}: unknown model format {p.suffix!r}; use .safetensors, .onnx or .pt/.pth")
    if not isinstance(state, dict) or not state:
        raise ModelFileError(f"{p}: expected a non-empty mapping of names to tensors")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ModelFileError(f"{p}: entry {k!r} is not a named tensor")
    return state


def _final_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ModelFileError("architecture has no final linear layer to read the class count from")
    return names[-1] + ".weight"


def infer_dims(state: dict[str, torch.Tensor], arch: str) -> tuple[int, int]:
    """(in_channels, num_classes) of conferprint weights for ``arch``, read from the tensors' shapes."""
    mean = state.get("0.mean")
    if mean is None:
        raise ModelFileError(f"no normalisation constants ('0.mean'): not conferprint weights for arch {arch!r}")
    in_channels = int(mean.numel())
    key = _final_linear(build_model(arch, in_channels=in_channels, num_classes=10))
    w = state.get(key)
    if w is None or w.ndim != 2:
        raise ModelFileError(f"weights do not fit arch {arch!r}: no 2-D {key!r} tensor")
    return in_channels, int(w.shape[0])


def load_torch_model(path: str | os.PathLike, arch: str, *, in_channels: int | None = None,
                     num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` and load a safetensors or weights-only ``.pt`` state dict into it (strict)."""
    p = _check_file(path)
    try:
        arch_info(arch)
    except ValueError as e:
        raise ModelFileError(str(e)) from None
    state = _read_state_dict(p)
    try:
        c, k = infer_dims(state, arch)
    except ModelFileError as e:
        raise ModelFileError(f"{p}: {e}") from None
    if in_channels is not None and c != in_channels:
        raise ModelFileError(f"{p}: the model takes {c} input channels, the fingerprint has {in_channels}")
    if num_classes is not None and k != num_classes:
        raise ModelFileError(f"{p}: the model has {k} classes, the fingerprint {num_classes}")
    model = build_model(arch, in_channels=c, num_classes=k)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as e:
        raise ModelFileError(f"{p}: weights do not fit architecture {arch!r}: {str(e).splitlines()[0]}") from e
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"{p}: tensor {name!r} holds NaN or infinite values")
    return model.eval()


def model_input_shape(model: nn.Module, arch: str) -> tuple[int, int, int]:
    """(C, H, W) that a conferprint model of ``arch`` takes (channels from its normalisation)."""
    size = arch_info(arch).input_size
    return int(model[0].mean.numel()), size, size


class OnnxModel:
    """An ONNX classifier run by onnxruntime: inputs ``(N, C, H, W)`` float32 in [0, 1].

    Its first output must be logits ``(N, K)`` (top-1 = argmax) or integer labels ``(N,)``.
    """

    def __init__(self, path: str | os.PathLike, *, input_shape: tuple[int, int, int] | None = None,
                 num_classes: int | None = None, threads: int = 1):
        p = _check_file(path)
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ModelFileError("ONNX suspects need onnxruntime: pip install 'conferprint[onnx]'") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(p.read_bytes(), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own hierarchy (InvalidProtobuf, Fail, ...)
            raise ModelFileError(f"{p}: not a loadable ONNX model ({type(e).__name__}: {str(e)[:300]})") from e
        self.path = str(p)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{p}: the graph takes {len(inputs)} inputs; a classifier takes one image batch")
        self.input_name = inputs[0].name
        dims = inputs[0].shape
        if len(dims) != 4:
            raise ModelFileError(f"{p}: input {self.input_name!r} has rank {len(dims)}; expected (N, C, H, W)")
        if "float" not in str(inputs[0].type) or "16" in str(inputs[0].type):
            raise ModelFileError(f"{p}: input type {inputs[0].type}; expected tensor(float)")
        self.static_shape = tuple(d if isinstance(d, int) else None for d in dims[1:])
        if input_shape is not None:
            for want, got in zip(input_shape, self.static_shape):
                if got is not None and got != want:
                    raise ModelFileError(f"{p}: the model takes inputs {dims}, the fingerprint's are (N, {input_shape})")
        self.batch_dim = dims[0] if isinstance(dims[0], int) else None
        self.num_classes = num_classes

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().to(torch.float32).contiguous().numpy()
        chunks = [arr[i: i + 1] for i in range(len(arr))] if self.batch_dim == 1 else [arr]
        out = []
        for chunk in chunks:
            try:
                y = self.session.run(None, {self.input_name: chunk})[0]
            except Exception as e:  # noqa: BLE001 - onnxruntime's runtime errors
                raise ModelFileError(f"{self.path}: inference failed ({type(e).__name__}: {str(e)[:300]})") from e
            y = np.asarray(y)
            if y.ndim == 2 and len(y) == len(chunk):
                if self.num_classes is not None and y.shape[1] != self.num_classes:
                    raise ModelFileError(f"{self.path}: {y.shape[1]} outputs per input, the fingerprint has {self.num_classes} classes")
                lab = y.argmax(1)
            elif y.ndim == 1 and len(y) == len(chunk) and np.issubdtype(y.dtype, np.integer):
                lab = y
            else:
                raise ModelFileError(f"{self.path}: output of shape {y.shape} ({y.dtype}) for {len(chunk)} inputs; "
                                     "expected logits (N, K) or labels (N,)")
            out.append(torch.from_numpy(np.asarray(lab, dtype=np.int64)))
        return torch.cat(out)


def load_suspect(path: str | os.PathLike, arch: str | None = None, *, input_shape: tuple[int, int, int],
                 num_classes: int) -> Suspect:
    """A labels-only oracle for a model file; ``arch`` is needed for weight files, not for ONNX."""
    p = Path(path)
    if p.suffix in ONNX_SUFFIXES:
        model = OnnxModel(p, input_shape=input_shape, num_classes=num_classes)
        return Suspect(model.labels, "onnx", str(p), arch, input_shape, num_classes)
    if p.suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        if not arch:
            raise ModelFileError(f"{p}: a weights file needs its architecture name (--arch; see `conferprint archs`)")
        net = load_torch_model(p, arch, in_channels=input_shape[0], num_classes=num_classes)
        size = arch_info(arch).input_size
        if tuple(input_shape[1:]) != (size, size):
            raise ModelFileError(f"{p}: arch {arch!r} takes {size}×{size} inputs, the fingerprint's are "
                                 f"{input_shape[1]}×{input_shape[2]}")

        def oracle(x: torch.Tensor) -> torch.Tensor:
            return predict_labels(net, x)

        kind = "safetensors" if p.suffix in SAFETENSORS_SUFFIXES else "torch"
        return Suspect(oracle, kind, str(p), arch, input_shape, num_classes)
    raise ModelFileError(f"{p}: unknown model format {p.suffix!r}; use .safetensors (+ --arch), .onnx or .pt/.pth (+ --arch)")


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, int, int]) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension (input ``input``, output ``logits``)."""
    model = model.eval()
    example = torch.zeros(1, *input_shape)
    path = Path(path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (example,), tmp, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)

    atomic_write(path, write)
    return path
