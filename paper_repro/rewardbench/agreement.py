"""Two reward models on the same RewardBench pairs: how often they rank a pair the same way, how
well their reward margins agree (Spearman), and a paired bootstrap CI of the difference of their
section scores and Score. Pure functions on per-pair arrays (tests/unit/test_agreement.py checks
them against hand-computed values).

"Paired": each bootstrap replicate redraws the pairs of every subset once and scores both models
on that same draw, so pair difficulty cancels out of the difference (Efron & Tibshirani 1993,
ch. 16; the per-model CIs use the same stratified resampling, ``rewardbench.evaluate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import sections as rb


class AgreementError(ValueError):
    """The two evaluations do not cover the same pairs."""


def match_pairs(
    ids_a: Sequence[int], subsets_a: Sequence[str], ids_b: Sequence[int], subsets_b: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays putting both evaluations in the order of ``ids_a``. The (id, subset) pairs
    must be the same set on both sides, each once."""
    keys_a = list(zip((int(i) for i in ids_a), subsets_a, strict=True))
    keys_b = list(zip((int(i) for i in ids_b), subsets_b, strict=True))
    pos_b = {k: i for i, k in enumerate(keys_b)}
    if len(pos_b) != len(keys_b) or len(set(keys_a)) != len(keys_a):
        raise AgreementError("a pair id occurs twice in one evaluation")
    if set(keys_a) != set(pos_b):
        only_a, only_b = set(keys_a) - set(pos_b), set(pos_b) - set(keys_a)
        raise AgreementError(
            f"the evaluations cover different pairs ({len(only_a)} only in the first, "
            f"{len(only_b)} only in the second; e.g. {sorted(only_a or only_b)[0]})"
        )
    return np.arange(len(keys_a)), np.array([pos_b[k] for k in keys_a])


def same_ranking(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float:
    """Fraction of pairs both models rank the same way (both prefer chosen, or both do not;
    a tie counts as not preferring chosen, as in RewardBench's strict >)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return float(np.mean(a == b))


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    uniq, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN when either side is
    constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.size != ry.size:
        raise AgreementError(f"{rx.size} values against {ry.size}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class Difference:
    """Section scores and Score of model A minus model B (fractions), percentile CIs."""

    sections: dict[str, rb.Estimate]
    score: rb.Estimate

    def within_noise(self, metric: str) -> bool:
        """The CI of the difference contains 0: no difference at this level."""
        est = self.score if metric == "Score" else self.sections[metric]
        return est.ci_low <= 0.0 <= est.ci_high


def score_difference(
    subsets: Sequence[str],
    correct_a: Sequence[bool],
    correct_b: Sequence[bool],
    *,
    samples: int,
    seed: int,
    level: float = 0.95,
) -> Difference:
    """Paired bootstrap of section scores and Score, A - B, under the current weights."""
    ok = np.stack([np.asarray(correct_a, bool), np.asarray(correct_b, bool)], axis=1)
    acc = {
        name: [r.accuracy for r in rb.subset_results(subsets, ok[:, k]).values()]
        for k, name in enumerate("ab")
    }
    point = {
        k: rb.section_scores(dict(zip(rb.EXAMPLE_COUNTS, v, strict=True))) for k, v in acc.items()
    }
    reps = rb.bootstrap_subset_accuracies(subsets, ok, samples, seed)  # [samples, subsets, 2]
    diff = (reps[:, :, 0] - reps[:, :, 1]) @ rb._weight_matrix(rb.EXAMPLE_COUNTS)
    lo, hi = 50 * (1 - level), 50 * (1 + level)

    def est(p: float, r: np.ndarray) -> rb.Estimate:
        low, high = np.percentile(r, [lo, hi])
        return rb.Estimate(float(p), float(low), float(high))

    sections = {
        name: est(point["a"][name] - point["b"][name], diff[:, j])
        for j, name in enumerate(rb.SECTIONS)
    }
    score = est(rb.overall_score(point["a"]) - rb.overall_score(point["b"]), diff.mean(1))
    return Difference(sections, score)


@dataclass(frozen=True)
class Agreement:
    n_pairs: int
    same_ranking: float
    spearman_margin: float
    difference: Difference  # A - B


def compare(
    subsets: Sequence[str],
    chosen_a: Sequence[float],
    rejected_a: Sequence[float],
    chosen_b: Sequence[float],
    rejected_b: Sequence[float],
    *,
    samples: int,
    seed: int,
) -> Agreement:
    """Everything the report says about model A against model B on the same (aligned) pairs."""
    ca, ra = np.asarray(chosen_a, np.float64), np.asarray(rejected_a, np.float64)
    cb, rbj = np.asarray(chosen_b, np.float64), np.asarray(rejected_b, np.float64)
    correct_a, correct_b = rb.pair_correct(ca, ra), rb.pair_correct(cb, rbj)
    return Agreement(
        n_pairs=len(correct_a),
        same_ranking=same_ranking(correct_a, correct_b),
        spearman_margin=spearman(ca - ra, cb - rbj),
        difference=score_difference(subsets, correct_a, correct_b, samples=samples, seed=seed),
    )
