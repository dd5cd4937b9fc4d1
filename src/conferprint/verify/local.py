"""Verify a suspect given as a file (safetensors + arch, ONNX, weights-only .pt) or as an HTTP URL."""
from __future__ import annotations

import os
from typing import Any

from conferprint.fingerprint import FingerprintError, load_fingerprint
from conferprint.verify.session import CONTROL_RULE, VerifyOptions, verify_suspect, verify_with_control
from conferprint.zoo import sha256_file


def verify_target(fingerprint: str | os.PathLike, *, model: str | os.PathLike | None = None, arch: str | None = None,
                  url: str | None = None, options: VerifyOptions = VerifyOptions(),
                  journal: str | os.PathLike | None = None, expect_digest: str | None = None,
                  http: dict[str, Any] | None = None, control: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load the fingerprint (refusing a tampered one), open the suspect, run :func:`verify_suspect`, or with
    ``control`` (the study's control set, whose digest the fingerprint's decision stores)
    :func:`~conferprint.verify.session.verify_with_control`.

    Exactly one of ``model`` (a file) and ``url`` names the suspect. ``expect_digest`` is the
    published commitment: a fingerprint whose digest differs is refused. ``http`` passes options
    (timeout, retries, backoff, rate_limit, headers) to :class:`~conferprint.verify.remote.HttpOracle`.
    """
    if (model is None) == (url is None):
        raise ValueError("name exactly one suspect: a model file or a URL")
    fp = load_fingerprint(fingerprint)
    digest = fp.digest()
    if expect_digest is not None and expect_digest.removeprefix("sha256:") != digest.removeprefix("sha256:"):
        raise FingerprintError(f"fingerprint digest {digest} differs from the committed {expect_digest}")
    num_classes, shape = fp.num_classes, fp.input_shape
    if url is not None:
        from conferprint.verify.remote import HttpOracle

        oracle = HttpOracle(url, num_classes=num_classes, **(http or {}))
        suspect, info = url, {"kind": "url", "url": url}
    else:
        from conferprint.suspects import load_suspect

        s = load_suspect(model, arch, input_shape=shape, num_classes=num_classes)  # type: ignore[arg-type]
        oracle, sha = s.oracle, sha256_file(model)  # type: ignore[arg-type]
        suspect, info = f"sha256:{sha}", {**s.describe(), "sha256": sha}
    if control is not None:
        res = verify_with_control(fp, load_fingerprint(control), oracle, suspect=suspect, options=options,
                                  journal=journal)
    else:
        res = verify_suspect(fp, oracle, suspect=suspect, options=options, journal=journal)
        if (fp.manifest.get("decision") or {}).get("rule") == CONTROL_RULE:
            res["note"] = ("this fingerprint's study decides with its control set as well (its threshold was fitted "
                           "on calibration references): pass --control")
    res["suspect_info"] = info
    if url is not None:
        res["http"] = {"requests": oracle.calls, "retried": oracle.retried}
    return res
