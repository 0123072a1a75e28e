"""Agreement of two reward models on the same pairs, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from paper_repro.rewardbench import agreement as ag
from paper_repro.rewardbench import sections as rb

CHAT_WEIGHT = sum(rb.EXAMPLE_COUNTS[s] for s in rb.SECTIONS["Chat"])  # 100+95+95+28+40 = 358


def two_per_subset() -> list[str]:
    return [s for s in rb.EXAMPLE_COUNTS for _ in range(2)]


def test_same_ranking_counts_ties_as_not_preferring_chosen():
    a = rb.pair_correct([1.0, 2.0, 0.0, 5.0], [0.0, 3.0, 0.0, 1.0])  # T F F(tie) T
    b = rb.pair_correct([1.0, 0.0, 1.0, 0.0], [0.0, 3.0, 0.0, 1.0])  # T F T F
    assert ag.same_ranking(a, b) == 0.5


def test_spearman_hand_computed_with_and_without_ties():
    assert ag.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    # ranks x = (1.5, 1.5, 3), y = (1, 2, 3): cov 1.5, var 1.5 and 2 -> 1.5 / sqrt(3)
    assert ag.spearman([1, 1, 2], [10, 20, 30]) == pytest.approx(1.5 / np.sqrt(3))
    assert ag.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert np.isnan(ag.spearman([1, 1, 1], [1, 2, 3]))
    assert list(ag.average_ranks([5.0, 1.0, 5.0, 2.0])) == [3.5, 1.0, 3.5, 2.0]


def test_difference_one_subset_hand_computed():
    """A is right everywhere; B misses one of the two alpacaeval-easy pairs. Chat differs by
    0.5 x 100/358; every other section by exactly 0, in every replicate. B's resampled accuracy
    on that subset is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the Chat difference
    replicates are 100/358, 50/358 or 0: the 95% CI is [0, 100/358] and contains 0."""
    subsets = two_per_subset()
    a = np.ones(len(subsets), bool)
    b = a.copy()
    b[subsets.index("alpacaeval-easy")] = False
    d = ag.score_difference(subsets, a, b, samples=4000, seed=0)
    chat = d.sections["Chat"]
    assert chat.score == pytest.approx(0.5 * 100 / CHAT_WEIGHT)
    assert chat.ci_low == pytest.approx(0.0) and chat.ci_high == pytest.approx(100 / CHAT_WEIGHT)
    assert d.score.score == pytest.approx(0.5 * 100 / CHAT_WEIGHT / 4)
    for name in ("Chat Hard", "Safety", "Reasoning"):
        assert d.sections[name] == rb.Estimate(0.0, 0.0, 0.0)
        assert d.within_noise(name)
    assert d.within_noise("Chat") and d.within_noise("Score")


def test_difference_that_is_not_noise():
    """B is wrong on every math-prm pair, A right: every replicate has the same Reasoning
    difference 984 / (984 + 6*164) = 0.5, so the CI is that single value and excludes 0."""
    subsets = two_per_subset()
    a = np.ones(len(subsets), bool)
    b = np.array([s != "math-prm" for s in subsets])
    d = ag.score_difference(subsets, a, b, samples=500, seed=1)
    assert d.sections["Reasoning"] == rb.Estimate(0.5, 0.5, 0.5)
    assert d.score == rb.Estimate(0.125, 0.125, 0.125)
    assert not d.within_noise("Reasoning") and not d.within_noise("Score")
    # A model against itself: zero difference, zero width.
    same = ag.score_difference(subsets, a, a, samples=100, seed=0)
    assert same.score == rb.Estimate(0.0, 0.0, 0.0)


def test_paired_bootstrap_columns_equal_the_single_model_bootstrap():
    rng = np.random.default_rng(3)
    subsets = [s for s in rb.EXAMPLE_COUNTS for _ in range(7)]
    ok = rng.random((len(subsets), 2)) > 0.4
    both = rb.bootstrap_subset_accuracies(subsets, ok, 50, 9)
    for k in range(2):
        assert np.array_equal(
            both[:, :, k], rb.bootstrap_subset_accuracies(subsets, ok[:, k], 50, 9)
        )


def test_compare_and_match_pairs():
    subsets = two_per_subset()
    n = len(subsets)
    chosen = np.linspace(1, 2, n)
    rejected = np.zeros(n)
    # B: the same margins scaled (Spearman 1), then the largest margin flipped to the smallest:
    # every other pair moves up one rank, so rho = 1 - 6 * ((n-1) * 1 + (n-1)^2) / (n (n^2-1)).
    cb, rbj = 3 * chosen, rejected.copy()
    cb[-1], rbj[-1] = 0.0, 1.0
    res = ag.compare(subsets, chosen, rejected, cb, rbj, samples=200, seed=0)
    assert res.n_pairs == n and res.same_ranking == pytest.approx((n - 1) / n)
    assert res.spearman_margin == pytest.approx(
        1 - 6 * ((n - 1) + (n - 1) ** 2) / (n * (n * n - 1))
    )
    ids = list(range(n))
    ia, ib = ag.match_pairs(ids, subsets, ids[::-1], subsets[::-1])
    assert [ids[::-1][i] for i in ib] == ids and list(ia) == ids
    with pytest.raises(ag.AgreementError, match="different pairs"):
        ag.match_pairs(ids, subsets, ids[:-1] + [999], subsets)
    with pytest.raises(ag.AgreementError, match="twice"):
        ag.match_pairs(ids, subsets, [*ids[:-1], 0], [*subsets[:-1], subsets[0]])
