"""Which prepared pairs of a run come from arithmetic fixture rows (by their raw row's source):
the hand-made sums and the on-policy pairs sampled from the tiny base."""

from __future__ import annotations

import json

import numpy as np

from paper_repro.fixtures.tiny import ONPOLICY_SOURCE

ARITHMETIC_SOURCES = ("fixture-arithmetic", ONPOLICY_SOURCE)


def _sources(paths, pairs, raw: str) -> list[str]:
    lines = paths.raw_data(raw).read_text().splitlines()
    return [json.loads(lines[int(r)])["source"] for r in pairs.row]


def arithmetic_mask(paths, pairs, raw: str = "preference_heldout") -> np.ndarray:
    """Bool per pair of ``pairs`` (prepared from ``paths.raw_data(raw)``): an arithmetic row."""
    return np.array([s in ARITHMETIC_SOURCES for s in _sources(paths, pairs, raw)], dtype=bool)


def onpolicy_mask(paths, pairs, raw: str = "preference") -> np.ndarray:
    """Bool per pair: a row made from the tiny base's own samples (fixtures/onpolicy.py)."""
    return np.array([s == ONPOLICY_SOURCE for s in _sources(paths, pairs, raw)], dtype=bool)


def chat_pairs(paths, pairs, raw: str = "preference_heldout"):
    """The pairs of ``pairs`` that are not arithmetic (the word-signal chat pairs)."""
    from paper_repro.data import PairData

    keep = np.flatnonzero(~arithmetic_mask(paths, pairs, raw))
    return PairData(
        [pairs.chosen[i] for i in keep], [pairs.rejected[i] for i in keep], pairs.row[keep]
    )
