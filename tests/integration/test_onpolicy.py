"""The on-policy arithmetic pairs: the shipped samples are what fixtures/onpolicy.py draws from
the tiny base, every pair built from them puts a right answer (by the task's own metric) over a
wrong one, and the tiny base and tokenizer still see the hand-made rows only."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from paper_repro.data import read_rows
from paper_repro.fixtures import arithmetic
from paper_repro.fixtures.onpolicy import (
    PAIRS_PER_PROBLEM,
    SAMPLES_PER_PROBLEM,
    Sample,
    draw,
    onpolicy_rows,
    read_samples,
    to_jsonl,
)
from paper_repro.fixtures.tiny import FIXTURE_DIR, ONPOLICY_SOURCE, sft_rows


def _problem(row: dict) -> tuple[int, int]:
    (q,) = (m["content"] for m in row["chosen"] if m["role"] == "user")
    a, b = q.removeprefix("What is ").removesuffix("?").split(" + ")
    return int(a), int(b)


def test_shipped_samples_cover_every_problem_in_order():
    samples = read_samples()
    assert len(samples) == len(arithmetic.problems()) * SAMPLES_PER_PROBLEM
    keys = [(s.a, s.b, s.index) for s in samples]
    assert keys == [(a, b, i) for a, b in arithmetic.problems() for i in range(SAMPLES_PER_PROBLEM)]
    right = sum(s.right for s in samples)
    assert 0 < right < len(samples)  # the base writes both right and wrong sums


def test_shipped_pairs_are_right_over_wrong_samples_of_their_problem():
    train = read_rows(FIXTURE_DIR / "preference_train.jsonl")
    rows = [r for r in train if r["source"] == ONPOLICY_SOURCE]
    texts: dict[tuple[int, int], set[str]] = {}
    for s in read_samples():
        texts.setdefault((s.a, s.b), set()).add(s.text)
    per_problem = Counter(_problem(r) for r in rows)
    assert rows and max(per_problem.values()) <= PAIRS_PER_PROBLEM
    pairs = set()
    for r in rows:
        (a, b), chosen, rejected = _problem(r), r["chosen"][-1], r["rejected"][-1]
        assert r["chosen"][:-1] == r["rejected"][:-1]  # the same question
        assert chosen["role"] == rejected["role"] == "assistant"
        assert arithmetic.extract(chosen["content"]) == a + b
        assert arithmetic.extract(rejected["content"]) != a + b
        assert {chosen["content"], rejected["content"]} <= texts[(a, b)]  # real samples
        pairs.add((a, b, chosen["content"], rejected["content"]))
    assert len(pairs) == len(rows)  # distinct pairs


def test_onpolicy_rows_from_samples():
    def s(a, b, i, text):
        return Sample(a, b, i, text)

    samples = [
        s(1, 2, 0, "1 + 2 = 3."),
        s(1, 2, 1, "1 + 2 = 4."),
        s(1, 2, 2, "1 + 2 = 3."),  # a repeat: one distinct right text
        s(1, 2, 3, "   "),  # empty: left out
        s(1, 2, 4, "1 + ."),  # no sum: wrong
        s(4, 4, 0, "4 + 4 = 9."),  # no right sample: no pair
    ]
    rows = onpolicy_rows(random.Random(0), samples)
    got = sorted((r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in rows)
    assert got == [("1 + 2 = 3.", "1 + ."), ("1 + 2 = 3.", "1 + 2 = 4.")]
    assert {r["source"] for r in rows} == {ONPOLICY_SOURCE}
    many = [s(0, 0, i, f"0 + 0 = {i}.") for i in range(40)] + [s(0, 0, 40, "0 + 0 = 0.")]
    assert len(onpolicy_rows(random.Random(0), many)) == PAIRS_PER_PROBLEM


def test_base_and_tokenizer_keep_the_hand_made_rows(monkeypatch, tiny_cfg, tmp_path):
    """download_base trains on the hand-made rows only, in the order generate.py makes them,
    so adding on-policy pairs leaves the tiny base (and the samples drawn from it) unchanged."""
    from paper_repro.fixtures import FIXTURE_ROWS, ONPOLICY_ROWS, tiny
    from paper_repro.fixtures.generate import preference_rows
    from paper_repro.stages import download_base

    n_hand = FIXTURE_ROWS["preference_train.jsonl"] - ONPOLICY_ROWS
    hand = preference_rows(random.Random(20240620), n_hand)
    train = read_rows(FIXTURE_DIR / "preference_train.jsonl")
    assert len(train) == len(hand) + ONPOLICY_ROWS and sft_rows(train) == hand
    seen = []
    monkeypatch.setattr(tiny, "build_tiny_base", lambda out, arch, rows, seed: seen.append(rows))
    download_base.build_tiny_model(tiny_cfg, tmp_path / "model")
    assert seen == [hand]


def test_draw_is_deterministic_and_in_problem_order(tiny_run, tiny_cfg):
    """Two samples of every problem from the tests' tiny base (seconds)."""
    first = draw(tiny_run.base_model, tiny_cfg, n=2)
    assert [(x.a, x.b, x.index) for x in first] == [
        (a, b, i) for a, b in arithmetic.problems() for i in range(2)
    ]
    assert to_jsonl(draw(tiny_run.base_model, tiny_cfg, n=2)) == to_jsonl(first)
    assert to_jsonl(draw(tiny_run.base_model, tiny_cfg, n=2, seed=1)) != to_jsonl(first)


@pytest.mark.slow
def test_generator_reproduces_shipped_samples(tmp_path):
    """The full sampler (the preset's base, 32 samples of 100 problems): the shipped bytes.
    1 to 7 minutes on a 2-core machine, depending on its load."""
    from paper_repro.fixtures.onpolicy import OUT, generate

    generate(tmp_path / "samples.jsonl")
    assert (tmp_path / "samples.jsonl").read_bytes() == OUT.read_bytes()
