"""RewardBench scoring on hand-computed cases (docs/fidelity.md §6)."""

import numpy as np
import pytest

from paper_repro.rewardbench import sections as rb


def _acc(default: float, **over: float) -> dict[str, float]:
    """Accuracy per subset: ``default`` everywhere, keyword overrides (underscores for dashes)."""
    acc = dict.fromkeys(rb.EXAMPLE_COUNTS, default)
    acc.update({k.replace("_", "-"): v for k, v in over.items()})
    return acc


def _pairs(acc_counts: dict[str, tuple[int, int]]):
    """Synthetic rewards: for each subset (n, k) the first k pairs right, the rest wrong."""
    subsets, chosen, rejected = [], [], []
    for s, (n, k) in acc_counts.items():
        subsets += [s] * n
        chosen += [1.0] * k + [0.0] * (n - k)
        rejected += [0.0] * n
    return subsets, np.array(chosen), np.array(rejected)


def test_ties_count_as_wrong():
    assert rb.pair_correct([1.0, 0.5, 0.2], [0.0, 0.5, 0.3]).tolist() == [True, False, False]


def test_non_finite_reward_is_an_error():
    with pytest.raises(rb.RewardBenchError, match="non-finite reward in 1 pairs"):
        rb.pair_correct([1.0, float("nan")], [0.0, 0.0])


def test_reasoning_weights_math_prm_as_much_as_all_code():
    # math-prm weight 984 = 6 x 164: all math right and all code wrong is exactly one half,
    # although math-prm is only 447 of the 1,431 Reasoning rows.
    acc = _acc(0.0, math_prm=1.0)
    assert rb.section_scores(acc)["Reasoning"] == pytest.approx(0.5)
    acc = _acc(0.0, hep_python=1.0)
    assert rb.section_scores(acc)["Reasoning"] == pytest.approx(1 / 12)


def test_chat_is_example_weighted_and_score_is_plain_mean():
    acc = _acc(1.0, alpacaeval_easy=0.5, mt_bench_easy=0.0)
    sec = rb.section_scores(acc)
    assert sec["Chat"] == pytest.approx((50 + 95 + 95 + 0 + 40) / 358)
    assert sec["Chat Hard"] == sec["Safety"] == sec["Reasoning"] == 1.0
    assert rb.overall_score(sec) == pytest.approx((sec["Chat"] + 3) / 4)
    assert rb.old_score(sec) == pytest.approx((sec["Chat"] + 3) / 4.5)


def test_card_scores_follow_from_card_sections():  # spec 8.2 / 10.2 arithmetic
    for card, score_fn in (
        (rb.CARD_CURRENT, rb.overall_score),
        (rb.CARD_FIRST_REVISION, rb.old_score),
    ):
        for values in card.values():
            assert score_fn(values) == pytest.approx(values["Score"], abs=0.06)


def test_xstest_swap_variant():
    acc = _acc(0.0, xstest_should_refuse=1.0)
    assert rb.section_scores(acc)["Safety"] == pytest.approx(154 / 740)
    assert rb.section_scores(acc, rb.EXAMPLE_COUNTS_PRE_2024_09)["Safety"] == pytest.approx(
        250 / 740
    )
    others = {k: v for k, v in rb.section_scores(acc).items() if k != "Safety"}
    old = rb.section_scores(acc, rb.EXAMPLE_COUNTS_PRE_2024_09)
    assert all(old[k] == v for k, v in others.items())


def test_unknown_and_missing_subsets_are_named():
    with pytest.raises(rb.RewardBenchError, match="unknown RewardBench subset.*hep-cobol"):
        rb.section_scores({**_acc(1.0), "hep-cobol": 1.0})
    acc = _acc(1.0)
    del acc["donotanswer"]
    with pytest.raises(rb.RewardBenchError, match="missing RewardBench subset.*donotanswer"):
        rb.section_scores(acc)
    subsets, c, r = _pairs({s: (2, 1) for s in rb.EXAMPLE_COUNTS if s != "hep-go"})
    with pytest.raises(rb.RewardBenchError, match="missing.*hep-go"):
        rb.evaluate(subsets, c, r, bootstrap_samples=10)


def test_evaluate_end_to_end_with_ties():
    counts = {s: (4, 2) for s in rb.EXAMPLE_COUNTS}
    counts["math-prm"] = (4, 4)
    subsets, c, r = _pairs(counts)
    r[subsets.index("alpacaeval-easy")] = 1.0  # a tie on a right pair: now wrong
    ev = rb.evaluate(subsets, c, r, bootstrap_samples=50, bootstrap_seed=1)
    assert ev.n_pairs == 4 * 23 and ev.ties == 1 + sum(n - k for n, k in counts.values())
    assert ev.subsets["alpacaeval-easy"] == rb.SubsetResult(4, 1)
    assert ev.current.sections["Reasoning"].score == pytest.approx(0.5 + 0.5 * 0.5)
    chat = (100 * 0.25 + (95 + 95 + 28 + 40) * 0.5) / 358
    assert ev.current.sections["Chat"].score == pytest.approx(chat)
    out = rb.scores_json(ev)
    assert out["subsets"]["math-prm"] == {
        "n": 4,
        "correct": 4,
        "accuracy": 1.0,
        "section": "Reasoning",
    }
    assert set(out["sections"]) == set(rb.SECTIONS)
    assert set(out["variants"]) >= {"pre_2024_09_xstest", "old_score_4_5"}
    assert out["variants"]["old_score_4_5"]["score"] == pytest.approx(
        sum(e.score for e in ev.current.sections.values()) / 4.5
    )
    for est in (*out["sections"].values(), out["score"]):
        assert 0.0 <= est["ci_low"] <= est["score"] <= est["ci_high"] <= 1.0


def test_bootstrap_is_seeded_and_resamples_within_subsets():
    rng = np.random.default_rng(0)
    subsets = [s for s in rb.EXAMPLE_COUNTS for _ in range(10)]
    c, r = rng.normal(size=len(subsets)), rng.normal(size=len(subsets))
    a = rb.scores_json(rb.evaluate(subsets, c, r, bootstrap_samples=200, bootstrap_seed=7))
    b = rb.scores_json(rb.evaluate(subsets, c, r, bootstrap_samples=200, bootstrap_seed=7))
    d = rb.scores_json(rb.evaluate(subsets, c, r, bootstrap_samples=200, bootstrap_seed=8))
    assert a == b and a["score"] != d["score"]
    ok = rb.pair_correct(c, r)
    reps = rb.bootstrap_subset_accuracies(subsets, ok, 100, 0)
    # A subset whose pairs are all right (or all wrong) cannot vary under resampling.
    for j, s in enumerate(rb.EXAMPLE_COUNTS):
        member = ok[np.asarray(subsets) == s]
        if member.all() or not member.any():
            assert np.all(reps[:, j] == member.mean())
        # Every replicate accuracy is k / n for the subset's own size n = 10.
        assert np.allclose(reps[:, j] * 10, np.round(reps[:, j] * 10))


def test_reachability_of_card_values():  # spec 10.1
    assert rb.reachable(86.3, "Chat") == rb.Reachability(True, 309)
    assert rb.reachable(56.1, "Chat Hard") == rb.Reachability(True, 256)
    assert rb.reachable(58.9, "Safety") == rb.Reachability(True, 436)
    # 8B Safety 57.9: 428/740 = 57.84 and 429/740 = 57.97 -> not reachable with current weights ...
    assert rb.reachable(57.9, "Safety") == rb.Reachability(False, 428)
    # ... but reachable with the swapped pre-2024-09 xstest weights.
    assert rb.reachable(57.9, "Safety", weights=rb.EXAMPLE_COUNTS_PRE_2024_09).reachable


def test_comparison_rows_and_markdown():
    sizes = {**rb.EXAMPLE_COUNTS, "math-prm": 447}  # the real row counts (2,985 pairs)
    subsets, c, r = _pairs({s: (n, n // 2) for s, n in sizes.items()})
    ev = rb.evaluate(subsets, c, r, bootstrap_samples=20)
    rows = rb.comparison_rows(ev)
    assert len(rows) == 10
    keys = {
        "model",
        "metric",
        "card_pct",
        "reproduced_pct",
        "delta_pct",
        "reachable",
        "reachable_count",
    }
    assert all(keys <= set(row) for row in rows)
    by = {(row["model"], row["metric"]): row for row in rows}
    chat = by["llama-3-tulu-2-70b-uf-mean-rm", "Chat"]
    assert chat["reproduced_pct"] == pytest.approx(100 * (50 + 47 + 47 + 14 + 20) / 358, abs=0.005)
    assert chat["delta_pct"] == pytest.approx(chat["reproduced_pct"] - 86.3, abs=0.011)
    assert (chat["reachable"], chat["reachable_count"]) == (True, 309)
    safety8 = by["llama-3-tulu-2-8b-uf-mean-rm", "Safety"]
    assert safety8["reachable"] is False and safety8["reachable_count"] is None
    assert safety8["reachable_pre_2024_09"] is True
    for metric in ("Score", "Reasoning"):
        assert by["llama-3-tulu-2-8b-uf-mean-rm", metric]["reachable"] is None
    first = rb.comparison_rows(ev, rb.CARD_FIRST_REVISION, first_revision=True)
    score = next(x for x in first if x["metric"] == "Score")
    assert score["reproduced_pct"] == pytest.approx(100 * ev.pre_2024_09.old_score.score, abs=0.005)
    md = rb.comparison_markdown(rows, "Current cards")
    assert md.count("\n| llama-3-tulu-2-") == 10 and "309 / 358" in md
