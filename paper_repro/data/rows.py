"""Reading raw jsonl rows: one ``RawRow`` per line, with a drop reason instead of a crash.

Every reader of upstream rows (fixture, local file, hub download) ends up here, because
download_data writes each of them as ``download_data/<name>.jsonl`` line for line. A hostile line
is counted by reason, never a crash:

- ``undecodable_text``: not UTF-8; ``bad_json``: not JSON (a UTF-8 byte-order mark at the start
  of a line is removed first, so a BOM file keeps its first row);
- ``too_large``: longer than ``MAX_ROW_BYTES`` (read in bounded pieces, never held whole);
- ``too_deep``: nested deeper than ``MAX_DEPTH`` (a 100,000-deep row stops the JSON decoder's
  recursion check; it is counted, not a RecursionError);
- ``duplicate_keys``: an object with the same key twice (JSON leaves the meaning open; Python
  would silently keep the last one);
- ``bad_number``: a number no upstream row holds and Python cannot carry faithfully: an integer of
  more than ``MAX_INT_DIGITS`` digits (CPython refuses to convert over 4,300 digits with a
  ValueError, and conversion time grows with the square of the length), a float beyond float64
  (``1e999`` would become inf) and the non-JSON literals ``NaN``/``Infinity`` (RFC 8259 §6).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

# Far above any real row (the longest UltraFeedback pair is ~6k tokens, ~50 KB) and far below
# what would hurt a data node's memory.
MAX_ROW_BYTES = 16 << 20
# Upstream rows nest 3 levels ({"chosen": [{"role": ..}]}); parquet rows with metadata a few more.
MAX_DEPTH = 32
BOM = "\ufeff"
# reward-bench ids are int64 (19 digits); 100 leaves room for any real integer field and still
# keeps each conversion cheap. Longer integers are counted as ``bad_number``, never converted.
MAX_INT_DIGITS = 100


@dataclass
class RawRow:
    index: int  # 0-based line number in the source file
    value: Any = None  # parsed JSON (None when ``reason`` is set)
    reason: str | None = None


class DuplicateKey(ValueError):
    pass


class BadNumber(ValueError):
    pass


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadNumber
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: beyond float64
        raise BadNumber
    return value


def _constant(text: str) -> float:
    raise BadNumber  # NaN, Infinity, -Infinity: Python's json accepts them, JSON does not


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DuplicateKey
    return out


def depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is not None:
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in children)
    return deepest


def parse_line(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) for a good line, (None, reason) for a bad one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "undecodable_text"
    try:
        value = json.loads(
            text.removeprefix(BOM),
            object_pairs_hook=_no_duplicates,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except DuplicateKey:
        return None, "duplicate_keys"
    except BadNumber:
        return None, "bad_number"
    except RecursionError:
        return None, "too_deep"
    except json.JSONDecodeError:
        return None, "bad_json"
    return (None, "too_deep") if depth(value) > MAX_DEPTH else (value, None)


def _lines(f) -> Iterator[tuple[bytes, bool]]:
    """(line, too_large) for each line of a binary file, never holding more than MAX_ROW_BYTES."""
    while raw := f.readline(MAX_ROW_BYTES + 1):
        if len(raw) <= MAX_ROW_BYTES or raw.endswith(b"\n"):
            yield raw, len(raw) > MAX_ROW_BYTES
            continue
        while (rest := f.readline(MAX_ROW_BYTES)) and not rest.endswith(b"\n"):
            pass  # skip the rest of the oversized line
        yield b"", True


class _Hashing:
    """A binary file whose every byte read is hashed (one pass: the rows parsed are the bytes
    hashed)."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def readline(self, n: int) -> bytes:
        block = self.f.readline(n)
        self.h.update(block)
        return block


def iter_jsonl(path: str | Path) -> Iterator[RawRow]:
    """Rows of a jsonl file; blank lines are skipped, bad ones come back with a drop reason. A file
    a manifest lists (``download_data/*.jsonl``) is hashed while read and checked when the last
    row has been read (ChecksumError then), so rows taken whole are the bytes the manifest lists."""
    from ..provenance.verified import check_read

    with open(path, "rb") as raw_file:
        f = _Hashing(raw_file)
        for i, (raw, too_large) in enumerate(_lines(f)):
            if too_large:
                yield RawRow(i, reason="too_large")
            elif raw.strip() and raw.strip() != BOM.encode():
                value, reason = parse_line(raw)
                yield RawRow(i, value, reason)
    check_read(Path(path), f.h.hexdigest())


def count_rows(path: str | Path) -> int:
    """Non-blank lines of a jsonl file (what a row count refers to)."""
    with open(path, "rb") as f:
        return sum(1 for raw, too_large in _lines(f) if too_large or raw.strip())


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a clean jsonl file (raises DataError naming file and line on a bad line)."""
    out = []
    for r in iter_jsonl(path):
        if r.reason:
            raise DataError(f"{path}: line {r.index + 1}: {r.reason}")
        out.append(r.value)
    return out
