"""The one base class of failures a person can act on (bad input, config, files or environment).

``paper-repro`` (``cli.main``) prints such an error as one line,
``paper-repro <command>: <message>``, and exits 2; the message names the file, row or config
key. Every module's own error type
(``ConfigError``, ``DataError``, ``ManifestError``, ``HubError``, ...) derives from it, so a new
one needs no change in the CLI. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

EXIT_USER_ERROR = 2


class ReproError(Exception):
    """A failure caused by input, configuration or environment; ``str(err)`` is one line."""


class CorruptFileError(ReproError, ValueError):
    """A file that exists but cannot be parsed (names the file and where)."""


class DiskFullError(ReproError, OSError):
    """No space left while writing ``path``; says how much is free there."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        free = free_bytes(self.path)
        where = f"{human_bytes(free)} free there" if free is not None else "free space unknown"
        super().__init__(f"no space left on device writing {self.path} ({where})")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing ancestor)."""
    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
