"""Reading raw jsonl rows: one ``RawRow`` per line, with a drop reason instead of a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError


@dataclass
class RawRow:
    index: int  # 0-based line number in the source file
    value: Any = None  # parsed JSON (None when ``reason`` is set)
    reason: str | None = None


def iter_jsonl(path: str | Path) -> Iterator[RawRow]:
    """Lines of a jsonl file; undecodable or non-JSON lines come back with a drop reason."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield RawRow(i, reason="undecodable_text")
                continue
            if not text.strip():
                continue
            try:
                yield RawRow(i, json.loads(text))
            except json.JSONDecodeError:
                yield RawRow(i, reason="bad_json")


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a clean jsonl file (raises DataError naming file and line on a bad line)."""
    out = []
    for r in iter_jsonl(path):
        if r.reason:
            raise DataError(f"{path}: line {r.index + 1}: {r.reason}")
        out.append(r.value)
    return out
