"""Hostile rows are counted by reason, never a crash: each kind through the line reader, the
per-schema validation and the encoder (tests/hostile.py holds the cases)."""

from __future__ import annotations

import json

import pytest
from hostile import HOSTILE, expected_report, file_bytes, good_rows

from paper_repro.data import DROP_REASONS, FLAGS, Encoder, iter_jsonl, split_report
from paper_repro.data.rows import RawRow

PAD, MAX_LEN = 511, 256


@pytest.fixture(scope="module")
def encoder():
    from paper_repro.fixtures.tiny import load_tokenizer

    return Encoder(load_tokenizer(), pad_token_id=PAD, max_length=MAX_LEN)


def encode(encoder, name: str, raw: list[RawRow]):
    if name == "ppo_prompts":
        return encoder.prompts(raw, max_length=64, bos=False)
    return encoder.pairs(raw, kind="rewardbench" if name == "rewardbench" else "preference")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=c.kind, marks=pytest.mark.hardening("4", f"{c.kind} ({c.file}): {c.outcome}")
        )
        for c in HOSTILE
    ],
)
def test_each_hostile_row_is_counted(case, encoder, tmp_path):
    """A hostile row next to a good one: the good row is kept, the hostile one gets its outcome
    (a BOM only ever precedes the first row; a duplicate needs its twin)."""
    good = json.dumps(good_rows(case.file, 1)[0]).encode() + b"\n"
    lines = [case.line, good] if case.kind.startswith("UTF-8 BOM") else [good, case.line]
    if case.outcome == "flag:duplicate_pair":
        lines = [case.line, case.line]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(lines))
    enc = encode(encoder, case.file, list(iter_jsonl(path)))
    assert enc.total == 2
    if case.outcome.startswith("flag:"):
        assert enc.flagged == {case.outcome[5:]: 1} and len(enc.rows) == 2
    elif case.outcome == "kept":
        assert not enc.dropped and len(enc.rows) == 2
    else:
        assert enc.dropped == {case.outcome: 1} and len(enc.rows) == 1
        assert enc.examples[case.outcome] == lines.index(case.line)


@pytest.mark.parametrize("name", ["preference", "rewardbench", "ppo_prompts"])
def test_whole_hostile_file_report(name, encoder, tmp_path):
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(file_bytes(name))
    sides = ("prompt",) if name == "ppo_prompts" else ("chosen", "rejected")
    got = split_report(encode(encoder, name, list(iter_jsonl(path))), sides)
    want = expected_report(name)
    assert {k: v for k, v in got["dropped_by_reason"].items() if v} == want["dropped_by_reason"]
    assert {k: v for k, v in got["kept_but_flagged"].items() if v} == want["kept_but_flagged"]
    for key in ("total", "kept", "first_dropped_line", "first_flagged_line"):
        assert got[key] == want[key], key
    assert set(got["dropped_by_reason"]) == set(DROP_REASONS)
    assert set(got["kept_but_flagged"]) == set(FLAGS)


def test_oversized_line_is_skipped_without_losing_the_next(tmp_path, monkeypatch):
    from paper_repro.data import rows

    monkeypatch.setattr(rows, "MAX_ROW_BYTES", 64)  # the same code path as 16 MiB, in bytes
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": "' + b"x" * 500 + b'"}\n{"b": 1}\n' + b'{"c": "' + b"y" * 100)
    got = [(r.index, r.value, r.reason) for r in iter_jsonl(path)]
    assert got == [(0, None, "too_large"), (1, {"b": 1}, None), (2, None, "too_large")]
    assert rows.count_rows(path) == 3
