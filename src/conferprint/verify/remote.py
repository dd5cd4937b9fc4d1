"""A suspect behind an HTTP API, as a labels-only oracle that a careful owner can trust.

Protocol (what ``conferprint serve`` speaks): ``POST URL`` with JSON ``{"inputs": [...]}`` — a batch
``(N, C, H, W)`` of floats in [0, 1] — answered with JSON ``{"labels": [N ints], ...}``; anything
else in the answer (probabilities) is ignored.

Transport problems are retried with exponential backoff and jitter: timeouts, refused or dropped
connections, truncated bodies, 5xx and 429 (whose ``Retry-After`` is honoured). A rate limit spaces
requests out. An answer that arrives but is wrong — broken JSON, no ``labels``, the wrong count,
labels that are not integers or outside the classes — is an :class:`OracleError` naming the
problem, never retried into silence and never read as zeros. Other 4xx answers are errors too.
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Callable

import torch

from conferprint.verify.oracle import OracleError

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}


class RemoteError(OracleError):
    """The suspect's API could not be reached or kept failing after every retry."""


class HttpOracle:
    """Labels-only oracle over HTTP. ``calls`` and ``retried`` count requests for the report."""

    def __init__(self, url: str, *, num_classes: int | None = None, timeout: float = 10.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 10.0, rate_limit: float | None = None,
                 headers: dict[str, str] | None = None, seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"suspect URL must start with http:// or https://, got {url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or (rate_limit is not None and rate_limit <= 0):
            raise ValueError("timeout and rate_limit must be > 0, retries and backoff ≥ 0")
        self.url, self.num_classes, self.timeout, self.retries = url, num_classes, timeout, retries
        self.backoff, self.max_backoff, self.rate_limit = backoff, max_backoff, rate_limit
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self._rng = random.Random(seed)  # jitter only; a private generator, the global one is untouched
        self._sleep, self._clock = sleep, clock
        self._next_slot = 0.0
        self._retry_after: float | None = None  # from the last 429's Retry-After header
        self.calls = 0
        self.retried = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"queries must be a batch (N, C, H, W), got shape {tuple(x.shape)}")
        body = json.dumps({"inputs": x.detach().cpu().to(torch.float32).tolist()}).encode()
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + self._rng.random())
                if self._retry_after is not None:
                    delay = max(delay, min(self._retry_after, self.max_backoff))
                log.info("retry %d/%d in %.2f s after: %s", attempt, self.retries, delay, last)
                self._sleep(delay)
            self._retry_after = None
            self._wait_for_slot()
            self.calls += 1
            try:
                status, raw = self._post(body)
            except _Transient as e:
                last = str(e)
                continue
            if status in RETRY_STATUS:
                last = f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"
                continue
            if status != 200:
                raise OracleError(f"{self.url} refused the query with HTTP {status}: {raw[:500].decode('utf-8', 'replace')}")
            return self._parse(raw, len(x))
        raise RemoteError(f"{self.url}: no valid answer after {self.retries + 1} attempts; last problem: {last}")

    def _wait_for_slot(self) -> None:
        if self.rate_limit is None:
            return
        now = self._clock()
        if now < self._next_slot:
            self._sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + 1.0 / self.rate_limit

    def _post(self, body: bytes) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the user's URL
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            try:
                raw = e.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            if e.code == 429:
                try:
                    self._retry_after = float(e.headers.get("Retry-After", ""))
                except (TypeError, ValueError):
                    self._retry_after = None
            return e.code, raw
        except urllib.error.URLError as e:
            raise _Transient(f"connection failed: {e.reason}") from e
        except (TimeoutError, socket.timeout) as e:
            raise _Transient(f"no answer within {self.timeout} s") from e
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Transient(f"connection broken: {type(e).__name__}: {e}") from e

    def _parse(self, raw: bytes, n: int) -> torch.Tensor:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise OracleError(f"{self.url} answered broken JSON ({e}); first bytes: {raw[:80]!r}") from None
        if not isinstance(doc, dict) or "labels" not in doc:
            raise OracleError(f"{self.url} answered JSON without a 'labels' list: {str(doc)[:200]}")
        labels = doc["labels"]
        if not isinstance(labels, list):
            raise OracleError(f"{self.url}: 'labels' is {type(labels).__name__}, expected a list")
        if len(labels) != n:
            raise OracleError(f"{self.url} answered {len(labels)} labels for {n} queries")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            bad = next(v for v in labels if not isinstance(v, int) or isinstance(v, bool))
            raise OracleError(f"{self.url} answered a label that is not an integer: {bad!r}")
        out = torch.tensor(labels, dtype=torch.int64) if labels else torch.zeros(0, dtype=torch.int64)
        if len(out) and (int(out.min()) < 0 or (self.num_classes is not None and int(out.max()) >= self.num_classes)):
            bad = next(v for v in labels if v < 0 or (self.num_classes is not None and v >= self.num_classes))
            raise OracleError(f"{self.url} answered unknown label {bad} (classes are 0..{(self.num_classes or 0) - 1})")
        return out


class _Transient(Exception):
    """A transport failure worth retrying."""
