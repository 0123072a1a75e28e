"""Small file helpers: atomic writes (temp name + rename), JSON that names the file, sha256.

A write that runs out of disk space raises ``DiskFullError`` naming the final path and the free
space there, and leaves neither the temporary file nor a half-written final file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError, DiskFullError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_full(exc, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # mkstemp makes 0600; give the file the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _disk_full(exc, path) from None
        raise


def _disk_full(exc: OSError, path: Path) -> OSError:
    """ENOSPC/EDQUOT as a DiskFullError naming ``path``; any other OSError unchanged."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, DiskFullError):
        return DiskFullError(path)
    return exc


def write_text(path: str | Path, text: str) -> str:
    """Write ``text`` (UTF-8) whole; returns the sha256 of the bytes written, so that a stage can
    check that the file its manifest hashes is still the one it wrote (``manifest.write_manifest``
    ``written=``)."""
    data = text.encode()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_json(path: str | Path, obj: Any) -> str:
    """Like ``write_text``; returns the sha256 of the bytes written."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file; a corrupt one is a CorruptFileError naming the file, line and column."""
    path = Path(path)
    return parse_json(path.read_bytes(), path)


def parse_json(data: bytes | str, where: str | Path) -> Any:
    """JSON from bytes already read (e.g. the bytes a stage hashed); anything unparseable is a
    CorruptFileError naming ``where``: bad syntax, bad UTF-8, nesting too deep, or an integer of
    over 4,300 digits (Python's int string conversion limit raises a plain ValueError)."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise CorruptFileError(f"{where}: not valid JSON ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return "an integer of more than 4,300 digits"
    return type(exc).__name__


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(folder: str | Path) -> dict[str, str]:
    """{relative path: sha256} for every file under ``folder`` (sorted, hidden files skipped)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
