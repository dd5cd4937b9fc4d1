"""The fingerprint file: ``NAME.safetensors`` (tensors) + ``NAME.json`` (manifest).

The manifest records the method, its parameters, the source model's sha256 and ``content_sha256``,
a digest of the tensors in a canonical encoding (name, dtype, shape, little-endian bytes). Loading
recomputes that digest and refuses a file whose content does not match its manifest. Nothing is
unpickled: safetensors and JSON only.

Optional parts used by verification: ``decoys`` (benign inputs from the owner's data, mixed among
the fingerprint's queries so that a suspect cannot tell which answers count), ``groups`` (which example each
query belongs to, where an example is asked as several queries: its CAEAcc is then the mean over the examples of
the share of their queries answered with the key, :func:`~conferprint.verify.metrics.cae_acc`) and the manifest's
``null`` (the CAEAcc null distribution of independent models, :class:`conferprint.verify.null.NullModel`).
:func:`fingerprint_digest` hashes the whole manifest (hence the tensors, through ``content_sha256``,
and the null): it is the commitment an owner publishes before any dispute.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from conferprint._io import atomic_write, atomic_write_text
from conferprint.errors import ConferprintError

FORMAT = "conferprint-fingerprint/1"
REQUIRED = {"inputs": torch.float32, "keys": torch.int64}
OPTIONAL = {"originals": torch.float32, "original_labels": torch.int64, "train_confer": torch.float32,
            "groups": torch.int64}
EXTRA = {"decoys": torch.float32}  # tensors with their own row count


class FingerprintError(ConferprintError, ValueError):
    """A fingerprint file is missing, malformed, or does not match its manifest."""


@dataclass
class Fingerprint:
    inputs: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    keys: torch.Tensor  # (N,) int64: the source's labels = the verification key
    originals: torch.Tensor | None = None  # clean inputs the examples were made from
    original_labels: torch.Tensor | None = None  # their true labels
    train_confer: torch.Tensor | None = None  # hard Confer on the training models
    decoys: torch.Tensor | None = None  # (D, C, H, W) benign inputs mixed among the queries
    manifest: dict[str, Any] = field(default_factory=dict)
    groups: torch.Tensor | None = None  # (N,) the example each query belongs to (0, 1, ...; a group's rows adjacent)

    def __len__(self) -> int:
        """The queries (rows); :attr:`n_examples` counts the examples."""
        return len(self.keys)

    @property
    def n_examples(self) -> int:
        """The examples: one per group of queries, or one per query without ``groups``."""
        return len(self.keys) if self.groups is None else int(self.groups[-1]) + 1

    def example_rows(self) -> torch.Tensor:
        """(n_examples,) the row of each example's first query: the example itself (all rows without groups)."""
        if self.groups is None:
            return torch.arange(len(self.keys))
        return torch.nonzero(torch.cat([torch.ones(1, dtype=torch.bool), self.groups[1:] != self.groups[:-1]]))[:, 0]

    def weights(self) -> torch.Tensor:
        """(N,) float64: each query's share of its example (1 / the queries of its group; all 1 without groups),
        so that CAEAcc is the weighted matches over :attr:`n_examples`."""
        if self.groups is None:
            return torch.ones(len(self.keys), dtype=torch.float64)
        return 1.0 / torch.bincount(self.groups).double()[self.groups]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"inputs": self.inputs, "keys": self.keys}
        for k in (*OPTIONAL, *EXTRA):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    def content_sha256(self) -> str:
        return content_digest(self.tensors())

    def perturbation_linf(self) -> torch.Tensor:
        if self.originals is None:
            raise FingerprintError("this fingerprint does not store its original inputs")
        return (self.inputs - self.originals).abs().flatten(1).amax(1)

    @property
    def num_classes(self) -> int:
        """The manifest's class count, else one more than the largest key."""
        return int(self.manifest.get("num_classes") or int(self.keys.max()) + 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.inputs.shape[1:])  # type: ignore[return-value]

    def digest(self) -> str:
        """The commitment: :func:`fingerprint_digest` of the manifest (saved or loaded fingerprints only)."""
        if "content_sha256" not in self.manifest:
            raise FingerprintError("an unsaved fingerprint has no digest yet; save it first")
        return fingerprint_digest(self.manifest)

    @property
    def null(self):
        """The stored null distribution (:class:`~conferprint.verify.null.NullModel`), or None."""
        from conferprint.verify.null import NullModel

        d = self.manifest.get("null")
        return None if d is None else NullModel.from_json(d)


def concatenate(parts: list[Fingerprint], manifest: dict[str, Any]) -> Fingerprint:
    """One fingerprint of the examples of ``parts``, in order, under ``manifest``; the parts' statistics are
    summed where they count (candidates, examples found, seconds), averaged over the kept examples where
    they are means, and kept one by one under ``stats["parts"]``. Parts must all store the same optional
    tensors and carry no decoys (add them to the whole)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    if any(p.decoys is not None for p in parts):
        raise ValueError("concatenate fingerprints before adding decoys")
    if any(p.groups is not None for p in parts):
        raise ValueError("concatenate fingerprints before grouping their queries")
    cat: dict[str, Any] = {"inputs": torch.cat([p.inputs for p in parts]), "keys": torch.cat([p.keys for p in parts])}
    for name in OPTIONAL:
        present = [getattr(p, name) is not None for p in parts]
        if any(present) and not all(present):
            raise ValueError(f"some parts store {name!r} and some do not")
        cat[name] = torch.cat([getattr(p, name) for p in parts]) if all(present) else None
    stats = [p.manifest.get("stats") or {} for p in parts]
    sizes = [len(p) for p in parts]
    merged: dict[str, Any] = {}
    for k in ("candidates_used", "conferrable_found", "seconds"):
        if all(k in s for s in stats):
            merged[k] = sum(s[k] for s in stats)
    if all("mean_train_confer" in s for s in stats) and sum(sizes):
        merged["mean_train_confer"] = sum(s["mean_train_confer"] * n for s, n in zip(stats, sizes)) / sum(sizes)
    if all("adversarial_rate" in s and "candidates_used" in s for s in stats) and merged.get("candidates_used"):
        merged["adversarial_rate"] = sum(s["adversarial_rate"] * s["candidates_used"] for s in stats) / merged["candidates_used"]
    for k, v in stats[0].items():  # what every part shares (e.g. the ensemble's size)
        if k not in merged and all(s.get(k) == v for s in stats):
            merged[k] = v
    merged["parts"] = stats
    return Fingerprint(manifest={**manifest, "stats": merged}, **cat)


def fingerprint_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest in canonical JSON (sorted keys, no whitespace), without the file name.

    The manifest holds ``content_sha256`` (the tensors), the parameters and the null, so this one
    hex string commits to everything a verification uses.
    """
    body = {k: v for k, v in manifest.items() if k != "tensors"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def add_decoys(fp: Fingerprint, pool: torch.Tensor, count: int, seed: int) -> Fingerprint:
    """A copy of ``fp`` with ``count`` benign decoys drawn (seeded) from ``pool``, none equal to an original.

    Decoys must be natural inputs of the owner's data: an attacker who sees them among the queries
    should find nothing that tells them apart from ordinary traffic.
    """
    if pool.ndim != 4 or tuple(pool.shape[1:]) != tuple(fp.inputs.shape[1:]):
        raise ValueError(f"decoy pool of shape {tuple(pool.shape)} does not match inputs {tuple(fp.inputs.shape)}")
    candidates = torch.arange(len(pool))
    if fp.originals is not None and len(pool):
        flat_pool, flat_orig = pool.flatten(1), fp.originals.flatten(1)
        clash = torch.zeros(len(pool), dtype=torch.bool)
        for i in range(0, len(pool), 4096):
            clash[i: i + 4096] = (torch.cdist(flat_pool[i: i + 4096], flat_orig) == 0).any(1)
        candidates = candidates[~clash]
    if count > len(candidates):
        raise ValueError(f"asked for {count} decoys but the pool has only {len(candidates)} usable inputs")
    gen = torch.Generator().manual_seed(seed)
    pick = candidates[torch.randperm(len(candidates), generator=gen)[:count]]
    return replace(fp, decoys=pool[pick].to(torch.float32).contiguous(), manifest=dict(fp.manifest))


def content_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_fingerprint(fp: Fingerprint, path: str | os.PathLike) -> Path:
    """Write ``path`` (``.safetensors``, with or without suffix) and its ``.json`` manifest; returns the manifest path."""
    tpath, mpath = _paths(path)
    tpath.parent.mkdir(parents=True, exist_ok=True)
    tensors = fp.tensors()
    _validate_tensors(tensors, str(tpath))
    manifest = {**fp.manifest, "format": FORMAT, "size": fp.n_examples, "tensors": tpath.name,
                "content_sha256": content_digest(tensors)}
    if fp.groups is not None:
        manifest["queries"] = len(fp)
    atomic_write(tpath, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(mpath, json.dumps(manifest, indent=2, sort_keys=True))
    fp.manifest = manifest
    return mpath


def _validate_tensors(tensors: dict[str, torch.Tensor], where: str) -> None:
    for name, dtype in REQUIRED.items():
        if name not in tensors:
            raise FingerprintError(f"{where}: tensor {name!r} is missing")
    for name, t in tensors.items():
        want = REQUIRED.get(name) or OPTIONAL.get(name) or EXTRA.get(name)
        if want is None:
            raise FingerprintError(f"{where}: unexpected tensor {name!r}")
        if t.dtype != want:
            raise FingerprintError(f"{where}: tensor {name!r} has dtype {t.dtype}, expected {want}")
    x, k = tensors["inputs"], tensors["keys"]
    if x.ndim != 4 or k.ndim != 1 or len(x) != len(k):
        raise FingerprintError(f"{where}: inputs {tuple(x.shape)} and keys {tuple(k.shape)} do not match (N, C, H, W) and (N,)")
    if len(k) == 0:
        raise FingerprintError(f"{where}: the fingerprint is empty")
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise FingerprintError(f"{where}: inputs must be finite and inside [0, 1]")
    if int(k.min()) < 0:
        raise FingerprintError(f"{where}: negative keys")
    for name in OPTIONAL:
        if name in tensors and len(tensors[name]) != len(k):
            raise FingerprintError(f"{where}: tensor {name!r} has {len(tensors[name])} rows, expected {len(k)}")
    g = tensors.get("groups")
    if g is not None:
        # ids 0, 1, ... in order (each group's rows adjacent), one key per group
        step = g[1:] - g[:-1]
        if int(g[0]) != 0 or bool(((step != 0) & (step != 1)).any()):
            raise FingerprintError(f"{where}: groups must number the examples 0, 1, ... with each example's queries adjacent")
        if bool(((step == 0) & (k[1:] != k[:-1])).any()):
            raise FingerprintError(f"{where}: the queries of one example must share its key")
    d = tensors.get("decoys")
    if d is not None:
        if d.ndim != 4 or tuple(d.shape[1:]) != tuple(x.shape[1:]):
            raise FingerprintError(f"{where}: decoys {tuple(d.shape)} do not match inputs {tuple(x.shape)}")
        if not torch.isfinite(d).all() or (len(d) and (float(d.min()) < 0 or float(d.max()) > 1)):
            raise FingerprintError(f"{where}: decoys must be finite and inside [0, 1]")


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid in a manifest")


def load_fingerprint(path: str | os.PathLike) -> Fingerprint:
    """Load and verify a fingerprint; raises :class:`FingerprintError` on any mismatch."""
    tpath, mpath = _paths(path)
    for p in (tpath, mpath):
        if not p.is_file():
            raise FingerprintError(f"fingerprint file {p} not found")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"), parse_constant=_no_constants)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise FingerprintError(f"{mpath}: manifest is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FingerprintError(f"{mpath}: not a {FORMAT} manifest")
    digest = manifest.get("content_sha256")
    if not isinstance(digest, str):
        raise FingerprintError(f"{mpath}: manifest has no content_sha256")
    try:
        tensors = load_file(str(tpath))
    except Exception as e:  # noqa: BLE001 - safetensors raises several exception types on malformed input
        raise FingerprintError(f"{tpath}: not a readable safetensors file ({e})") from e
    _validate_tensors(tensors, str(tpath))
    actual = content_digest(tensors)
    if actual != digest:
        raise FingerprintError(
            f"{tpath}: content does not match its manifest (sha256 {actual[:16]}… ≠ {digest[:16]}…); "
            "the fingerprint was modified after it was made"
        )
    num_classes = manifest.get("num_classes")
    if isinstance(num_classes, int) and int(tensors["keys"].max()) >= num_classes:
        raise FingerprintError(f"{tpath}: keys outside 0..{num_classes - 1}")
    if "null" in manifest:
        from conferprint.verify.null import NullModel

        try:
            NullModel.from_json(manifest["null"])
        except ValueError as e:
            raise FingerprintError(f"{mpath}: {e}") from None
    return Fingerprint(
        inputs=tensors["inputs"], keys=tensors["keys"], originals=tensors.get("originals"),
        original_labels=tensors.get("original_labels"), train_confer=tensors.get("train_confer"),
        decoys=tensors.get("decoys"), manifest=manifest, groups=tensors.get("groups"),
    )
