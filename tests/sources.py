"""Which prepared pairs of a run come from arithmetic fixture rows (by their raw row's source)."""

from __future__ import annotations

import json

import numpy as np


def arithmetic_mask(paths, pairs, raw: str = "preference_heldout") -> np.ndarray:
    """Bool per pair of ``pairs`` (prepared from ``paths.raw_data(raw)``): an arithmetic row."""
    lines = paths.raw_data(raw).read_text().splitlines()
    sources = [json.loads(lines[int(r)])["source"] for r in pairs.row]
    return np.array([s == "fixture-arithmetic" for s in sources], dtype=bool)


def chat_pairs(paths, pairs, raw: str = "preference_heldout"):
    """The pairs of ``pairs`` that are not arithmetic (the word-signal chat pairs)."""
    from paper_repro.data import PairData

    keep = np.flatnonzero(~arithmetic_mask(paths, pairs, raw))
    return PairData(
        [pairs.chosen[i] for i in keep], [pairs.rejected[i] for i in keep], pairs.row[keep]
    )
