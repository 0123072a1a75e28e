"""Credentials never reach MLflow, logs or files: secret-looking keys are dropped, the values
of secret-looking environment variables, the user:password part of URIs and the values of
secret-looking query parameters (``?token=...``, ``&sig=...``) are redacted.

``paper-repro`` wraps its stdout and stderr in ``RedactingStream`` (cli.main), so whatever a stage,
MLflow or a library prints or logs (a tracking URI ``http://user:pw@host`` inside an exception
message, say) reaches the console and the stage log without the credentials."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TextIO

SECRET_MARKERS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential")
REDACTED = "***"
# scheme://userinfo@ : the userinfo runs to the last "@" before the path (a raw "@" inside a
# password is still covered).
URI_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*(?:@[^/\s@]*)*@")
# ?token=..., &access_token=..., &X-Amz-Signature=..., ;password=... (a query parameter whose name
# looks like a credential; signed URLs and some servers take the token there).
QUERY_SECRET = re.compile(
    r"(?P<name>[?&;][^=&;\s#]*(?:token|secret|passw|pwd|key|sig|auth|credential)[^=&;\s#]*=)"
    r"[^&;\s#]*",
    re.IGNORECASE,
)


def public_uri(uri: str) -> str:
    """The URI without a ``user:password@`` part (it goes into files and warnings)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is not None or parts.username is not None:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        uri = urlunsplit(parts._replace(netloc=netloc))
    return redact_query(uri)


def redact_query(text: str) -> str:
    """The value of every secret-looking query parameter in ``text`` becomes ``***``."""
    return QUERY_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", text)


def redact_uris(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` becomes ``scheme://***@``, every secret
    query parameter value ``***``."""
    return redact_query(URI_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text))


def is_secret_key(key: str) -> bool:
    return any(m in key.lower() for m in SECRET_MARKERS)


def environ_snapshot() -> dict[str, str]:
    """``os.environ`` now, safe while another thread (MLflow's, a library's) changes it.
    ``os.environ.items()`` and ``.copy()`` take a list of the keys, then look each one up, so a
    key deleted in between raises KeyError; here a vanished key is skipped instead."""
    out = {}
    for key in list(os.environ):  # one atomic copy of the key list
        value = os.environ.get(key)
        if value is not None:
            out[key] = value
    return out


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (HF_TOKEN, WANDB_API_KEY, ...)."""
    return sorted(
        {v for k, v in environ_snapshot().items() if is_secret_key(k) and len(v) >= 6},
        key=len,
        reverse=True,
    )


def redact(text: str, secrets: list[str] | None = None) -> str:
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, REDACTED)
    return redact_uris(text)


def scrub(params: dict[str, Any], secrets: list[str] | None = None) -> dict[str, Any]:
    """Drop anything that looks like a credential before it reaches MLflow: secret-looking keys
    are removed, URI credentials and secret env-var values are redacted from the other values."""
    secrets = secret_values() if secrets is None else secrets
    return {k: redact(str(v), secrets) for k, v in params.items() if not is_secret_key(k)}


def file_has_secret(path: Path, secrets: list[str]) -> bool:
    """Whether a file (or any file under a folder) holds one of ``secrets``: such an artifact is
    not uploaded. Files over 50 MiB are not read (model weights, not text)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        if secrets and f.stat().st_size <= 50 << 20:
            data = f.read_bytes()
            if any(s.encode() in data for s in secrets):
                return True
    return False


class RedactingStream:
    """A text stream that redacts every write (``redact`` with the secrets known at creation);
    everything else is the wrapped stream's (fileno, isatty, encoding, buffer, ...)."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._secrets = secret_values()

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
