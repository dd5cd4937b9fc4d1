"""The library's error types share one base, so a caller (or a fuzz test) can catch them all.

Each concrete error also keeps its historic built-in base (``ValueError``, ``RuntimeError`` ...),
so existing ``except`` clauses keep working.
"""
from __future__ import annotations


class ConferprintError(Exception):
    """Base of every error conferprint raises on bad input, bad files or a misbehaving suspect."""


class ModelFileError(ConferprintError, ValueError):
    """A suspect's model file is missing, malformed, hostile, or does not fit the fingerprint."""


class JournalError(ConferprintError, ValueError):
    """A verification journal belongs to another verification or is corrupt."""
