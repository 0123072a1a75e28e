"""Errors of the data layer (each message names the file and the problem)."""

from __future__ import annotations

from ..errors import ReproError


class DataError(ReproError, ValueError):
    """Unusable prepared data or tokenizer (names the file and the problem)."""


class FingerprintMismatch(DataError):
    """The tokenizer a stage uses is not the one the data was tokenized with."""
