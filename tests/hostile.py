"""Hostile upstream rows, one per kind, and the files the reader tests build from them.

``outcome`` is a drop reason of the data report (``DROP_REASONS``), ``flag:<key>`` for a row that
is kept and counted under ``kept_but_flagged``, or ``kept``. tests/unit/test_hostile_rows.py and
tests/integration/test_hostile_readers.py run every case; docs/hardening.md lists them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from paper_repro.data.rows import BOM, MAX_ROW_BYTES
from paper_repro.fixtures.tiny import FIXTURE_DIR

FILES = {  # download_data name -> shipped fixture file with good rows of that schema
    "preference": "preference_train.jsonl",
    "rewardbench": "rewardbench_filtered.jsonl",
    "ppo_prompts": "ppo_prompts.jsonl",
}


def good_rows(name: str, n: int = 4) -> list[dict]:
    """Valid rows; PPO prompts short enough for the tiny preset's 64-token limit."""
    if name == "ppo_prompts":
        return [{"messages": [{"role": "user", "content": f"Question {i}?"}]} for i in range(n)]
    lines = (FIXTURE_DIR / FILES[name]).read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


def _line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _pref(**change) -> bytes:
    return _line({**good_rows("preference")[2], **change})


def _bench(**change) -> bytes:
    row = {**good_rows("rewardbench")[2], **change}
    return _line({k: v for k, v in row.items() if v is not ...})


U = {"role": "user", "content": "Hi?"}


def _with_number(name: str, number: bytes) -> bytes:
    """A good row of ``name`` with one more key holding ``number`` (raw JSON text): where the
    number sits does not matter, the line is refused before any schema check."""
    row = good_rows(name)[3]
    return _line(row)[:-2] + b', "score": ' + number + b"}\n"


@dataclass(frozen=True)
class Hostile:
    kind: str
    file: str
    line: bytes
    outcome: str


def _cases() -> list[Hostile]:
    p0, p1 = good_rows("preference")[:2]
    big = b"9" * 5000
    deep = b"[" * 100_000 + b"]" * 100_000
    dup_key = _line(p1)[:-2] + b', "chosen": ' + json.dumps(p1["chosen"]).encode() + b"}\n"
    mismatch = {
        **p1,
        "rejected": [{"role": "user", "content": "Another question?"}, *p1["rejected"][-1:]],
    }
    return [
        Hostile("UTF-8 BOM before the first row", "preference", BOM.encode() + _line(p0), "kept"),
        Hostile(
            "100,000-deep nested JSON", "preference", b'{"chosen": ' + deep + b"}\n", "too_deep"
        ),
        Hostile(
            "row over 16 MiB",
            "preference",
            b'{"x": "' + b"a" * MAX_ROW_BYTES + b'"}\n',
            "too_large",
        ),
        Hostile("duplicate JSON key", "preference", dup_key, "duplicate_keys"),
        Hostile("not JSON", "preference", b'{"chosen": [\n', "bad_json"),
        Hostile("not UTF-8", "preference", b'{"chosen": "\xff\xfe"}\n', "undecodable_text"),
        Hostile("row is a JSON array", "preference", b"[1, 2]\n", "wrong_type"),
        Hostile("chosen null", "preference", _pref(chosen=None), "null_field"),
        Hostile("chosen a string", "preference", _pref(chosen="Hi"), "wrong_type"),
        Hostile("rejected missing", "preference", _line({"chosen": p1["chosen"]}), "missing_keys"),
        Hostile(
            "message content null",
            "preference",
            _pref(chosen=[U, {"role": "assistant", "content": None}]),
            "null_field",
        ),
        Hostile("message a string", "preference", _pref(chosen=["Hi?", "Hello."]), "wrong_type"),
        Hostile("exact duplicate pair", "preference", _line(p1), "flag:duplicate_pair"),
        Hostile(
            "chosen and rejected prompts differ",
            "preference",
            _line(mismatch),
            "flag:prompt_mismatch",
        ),
        Hostile('RewardBench id "abc"', "rewardbench", _bench(id="abc"), "wrong_type"),
        Hostile("RewardBench id beyond int64", "rewardbench", _bench(id=2**70), "wrong_type"),
        Hostile("RewardBench prompt null", "rewardbench", _bench(prompt=None), "null_field"),
        Hostile(
            "RewardBench row without subset", "rewardbench", _bench(subset=...), "missing_keys"
        ),
        Hostile("RewardBench chosen a number", "rewardbench", _bench(chosen=3), "wrong_type"),
        Hostile(
            "RewardBench tie (chosen == rejected)",
            "rewardbench",
            _bench(rejected=good_rows("rewardbench")[2]["chosen"]),
            "kept",
        ),
        Hostile("RewardBench empty response", "rewardbench", _bench(rejected=""), "kept"),
        Hostile("PPO messages null", "ppo_prompts", _line({"messages": None}), "null_field"),
        Hostile("PPO messages an object", "ppo_prompts", _line({"messages": U}), "wrong_type"),
        Hostile(
            "PPO row without a prompt key", "ppo_prompts", _line({"source": "x"}), "missing_keys"
        ),
        Hostile("PPO instruction a number", "ppo_prompts", _line({"instruction": 7}), "wrong_type"),
        # Numbers of absurd size, in every schema: CPython's json raises ValueError on an integer
        # over 4,300 digits, and accepts 1e999 (inf) and NaN, which JSON does not have.
        *(
            Hostile(f"5,000-digit integer ({name})", name, _with_number(name, big), "bad_number")
            for name in FILES
        ),
        Hostile(
            "float beyond float64 (1e999)",
            "rewardbench",
            _with_number("rewardbench", b"1e999"),
            "bad_number",
        ),
        Hostile("NaN literal", "preference", _with_number("preference", b"NaN"), "bad_number"),
        Hostile(
            "-Infinity literal",
            "ppo_prompts",
            _with_number("ppo_prompts", b"-Infinity"),
            "bad_number",
        ),
    ]


HOSTILE = _cases()


def file_bytes(name: str) -> bytes:
    """The good rows of ``name`` (after a BOM row, if any), then its hostile rows."""
    cases = [c for c in HOSTILE if c.file == name]
    first = [c.line for c in cases if c.kind.startswith("UTF-8 BOM")]
    rest = [c.line for c in cases if not c.kind.startswith("UTF-8 BOM")]
    return b"".join(first + [_line(r) for r in good_rows(name)[1 if first else 0 :]] + rest)


def expected_report(name: str) -> dict:
    """What prepare_data's data report must say about ``file_bytes(name)``."""
    cases = [c for c in HOSTILE if c.file == name]
    bom = any(c.kind.startswith("UTF-8 BOM") for c in cases)
    n_good = len(good_rows(name)) - bom
    first_line: dict[str, int] = {}
    line = bom + n_good  # 1-based line of the last row so far
    for c in cases:
        if not c.kind.startswith("UTF-8 BOM"):
            line += 1
            first_line.setdefault(c.outcome, line)
    outcomes = Counter(c.outcome for c in cases)
    dropped = {k: n for k, n in outcomes.items() if k != "kept" and not k.startswith("flag:")}
    return {
        "total": len(good_rows(name)) + len(cases) - bom,
        "kept": len(good_rows(name))
        - bom
        + sum(n for k, n in outcomes.items() if k not in dropped),
        "dropped_by_reason": dropped,
        "first_dropped_line": {k: v for k, v in first_line.items() if k in dropped},
        "kept_but_flagged": {k[5:]: n for k, n in outcomes.items() if k.startswith("flag:")},
        "first_flagged_line": {k[5:]: v for k, v in first_line.items() if k.startswith("flag:")},
    }


def write_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in FILES:
        out[name] = folder / f"{name}.jsonl"
        out[name].write_bytes(file_bytes(name))
    return out
