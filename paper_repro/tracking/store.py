"""Talking to an MLflow store safely: HTTP timeouts, sqlite lock retries, a file lock for store
creation, and the run-id files under ``results/<run>/tracking/``."""

from __future__ import annotations

import contextlib
import fcntl
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..paths import RunPaths

# A dead tracking server must not stall training: MLflow's HTTP defaults are 7 retries with
# exponential backoff and a 120 s timeout per request (minutes per call). Applied with setdefault,
# so a user's own settings win.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
LOCK_RETRIES = 12  # "database is locked" retries (backoff 0.05 s doubling to 2 s, ~15 s total)


def is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


def reason(exc: BaseException, width: int = 160) -> str:
    """One line; long HTTP errors keep their head (the call) and tail (the socket error)."""
    text = " ".join(str(exc).split())
    if len(text) > 2 * width:
        text = f"{text[:width]} ... {text[-width:]}"
    return f"{type(exc).__name__}: {text}"


def is_permanent(exc: BaseException) -> bool:
    """Errors that a retry cannot fix (bad input); everything else is treated as an outage."""
    code = getattr(exc, "error_code", "")
    return code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE") and not is_locked(
        exc
    )


def retry_locked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """sqlite writers that collide get SQLITE_BUSY even with MLflow's 20 s busy_timeout when a
    read transaction must upgrade to a write; back off and try again."""
    delay = 0.05
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_locked(exc) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(delay * (1.0 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def lock_file(uri: str, paths: RunPaths) -> Path:
    """Next to the sqlite file when the store is one (several runs may share it), else per run."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + ".lock")
    return paths.tracking_dir / ".lock"


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_id_file(paths: RunPaths, key: str) -> Path:
    """The run book of a stage (``runs.RunBook``) or of the parent (``_parent``)."""
    return paths.tracking_dir / f"{key}.json"


def pending_file(paths: RunPaths, stage: str) -> Path:
    return paths.tracking_dir / f"{stage}.pending.jsonl"
