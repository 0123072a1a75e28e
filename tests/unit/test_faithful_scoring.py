"""Faithful choices of the RewardBench bootstrap and the packed layout that the hand-computed
tests elsewhere leave open (each is undone by an entry of bench/mutations.toml)."""

from __future__ import annotations

import numpy as np

from paper_repro.config import load_config
from paper_repro.rewardbench import agreement as ag
from paper_repro.rewardbench import sections as rb
from paper_repro.training.modeling import packed_position_ids


def uneven_subsets() -> list[str]:
    """Every subset with its own size (3 to 7 pairs), in blocks."""
    return [s for j, s in enumerate(rb.EXAMPLE_COUNTS) for _ in range(3 + j % 5)]


def test_bootstrap_redraws_each_subset_from_its_own_pairs():
    """Stratified bootstrap (docs/fidelity.md section 8): a replicate redraws every subset's pairs
    with replacement from that subset only. A subset whose pairs are all right stays at 1 in every
    replicate, one all wrong at 0, and every replicate accuracy is k / n for its own size n."""
    subsets = uneven_subsets()
    labels = np.asarray(subsets)
    rng = np.random.default_rng(5)
    ok = rng.random(len(subsets)) > 0.5
    names = list(rb.EXAMPLE_COUNTS)
    ok[labels == names[0]] = True
    ok[labels == names[1]] = False
    reps = rb.bootstrap_subset_accuracies(subsets, ok, 300, 11)
    assert np.all(reps[:, 0] == 1.0) and np.all(reps[:, 1] == 0.0)
    for j, s in enumerate(names):
        n = int((labels == s).sum())
        assert np.allclose(reps[:, j] * n, np.round(reps[:, j] * n)), s
    assert reps[:, 2:].std(0).max() > 0  # the mixed subsets do vary


def test_difference_of_identical_models_is_exactly_zero_in_every_replicate():
    """Paired bootstrap (Efron & Tibshirani 1993, ch. 16): both models are scored on the same
    redrawn pairs, so two models with the same per-pair results differ by exactly 0 in every
    replicate, whatever their accuracy; an unpaired bootstrap would give a CI around 0."""
    subsets = uneven_subsets()
    ok = np.random.default_rng(6).random(len(subsets)) > 0.4
    d = ag.score_difference(subsets, ok, ok.copy(), samples=300, seed=2)
    assert d.score == rb.Estimate(0.0, 0.0, 0.0)
    assert all(e == rb.Estimate(0.0, 0.0, 0.0) for e in d.sections.values())


def test_packed_position_ids_restart_at_zero_per_sequence():
    """EasyLM feeds each sequence at positions 0..n-1; in a packed row they restart per sequence.
    (With RoPE and no attention across boundaries a running offset would change rewards only by
    rounding, so this is checked on the position ids themselves.)"""
    assert packed_position_ids([3, 1, 2]).tolist() == [[0, 1, 2, 0, 0, 1]]


def test_ppo_prompts_carry_no_bos_in_the_card_presets():
    """EasyLM's TuluPromptDataset renders PPO prompts without BOS, unlike RM training
    (docs/fidelity.md section 9)."""
    for preset in ("llama3-70b-uf", "llama3-70b-uf-ppo-8b", "tiny"):
        assert load_config(preset).data.ppo_prompt_bos is False, preset
