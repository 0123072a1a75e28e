"""Credentials never reach MLflow, logs or files: secret-looking keys are dropped, the values
of secret-looking environment variables and the user:password part of URIs are redacted."""

from __future__ import annotations

import os
from typing import Any

SECRET_MARKERS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential")
REDACTED = "***"


def public_uri(uri: str) -> str:
    """The URI without a ``user:password@`` part (it goes into files and warnings)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def is_secret_key(key: str) -> bool:
    return any(m in key.lower() for m in SECRET_MARKERS)


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (HF_TOKEN, WANDB_API_KEY, ...)."""
    return sorted(
        {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= 6},
        key=len,
        reverse=True,
    )


def redact(text: str, secrets: list[str] | None = None) -> str:
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, REDACTED)
    return text


def scrub(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a credential before it reaches MLflow: secret-looking keys
    are removed and secret env-var values are redacted from the remaining values."""
    secrets = secret_values()
    return {k: redact(str(v), secrets) for k, v in params.items() if not is_secret_key(k)}
