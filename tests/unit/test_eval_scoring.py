"""Length-sorted scoring under a token budget, packed and padded: the plans, dataset order, and
invariance of rewards to batch size, packing and padding side."""

import json

import numpy as np
import pytest

from paper_repro.rewardbench.scorer import plan_batches, plan_packed, score_pairs, score_sequences


@pytest.fixture(scope="module")
def tiny_rm():
    """A random tiny Llama RM (fp32) with an O(1) reward head, so 1e-5 is a real tolerance."""
    import torch
    from transformers import LlamaForSequenceClassification

    from paper_repro.config import TinyArch
    from paper_repro.fixtures.tiny import llama_config, load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(llama_config(TinyArch(), tok, num_labels=1)).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return model, tok


@pytest.fixture(scope="module")
def fixture_pairs(tiny_rm):
    """The shipped RewardBench fixture in the training format (one BOS, ends in EOS)."""
    from paper_repro.data.formatting import render_training, rewardbench_messages
    from paper_repro.fixtures.tiny import FIXTURE_DIR

    _, tok = tiny_rm
    rows = [json.loads(x) for x in (FIXTURE_DIR / "rewardbench_filtered.jsonl").open()]
    enc = {
        side: tok(
            [render_training(rewardbench_messages(r["prompt"], r[side])) for r in rows],
            add_special_tokens=False,
        )["input_ids"]
        for side in ("chosen", "rejected")
    }
    return enc["chosen"], enc["rejected"]


def _fixed_batches(model, seqs, pad_id, batch_size, side):
    """Dataset-order batches of a fixed size through modeling.rewards (no sorting)."""
    import torch

    from paper_repro.training.modeling import pad_batch, rewards

    out = []
    with torch.inference_mode():
        for i in range(0, len(seqs), batch_size):
            ids, mask = pad_batch(seqs[i : i + batch_size], pad_id, side=side)
            out.append(rewards(model, ids, mask).numpy())
    return np.concatenate(out).astype(np.float64)


def test_plan_respects_budget_and_covers_every_sequence():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.5, 0.8, size=5970).astype(int), 8, 4096)
    plan = plan_batches(lengths, 16384)
    flat = np.concatenate(plan.batches)
    assert sorted(flat.tolist()) == list(range(lengths.size))
    for b in plan.batches:
        assert len(b) * lengths[b].max() <= 16384
    assert plan.real_tokens == lengths.sum()
    assert plan.padding_fraction < 0.05  # RewardBench-like spread: almost no padding
    print(f"lognormal lengths: {len(plan.batches)} batches, padding {plan.padding_fraction:.4f}")


def test_padding_cap_holds_per_batch_on_a_wide_spread():
    lengths = np.random.default_rng(1).integers(1, 1000, size=500)
    plan = plan_batches(lengths, 100_000, max_padding=0.05)
    for b in plan.batches:
        width = lengths[b].max()
        assert (width * len(b) - lengths[b].sum()) <= 0.05 * width * len(b)
    assert plan.padding_fraction <= 0.05
    loose = plan_batches(lengths, 100_000, max_padding=1.0)  # budget only
    assert len(loose.batches) < len(plan.batches) and loose.padding_fraction > 0.05


def test_plan_is_deterministic_and_isolates_overlong_sequences():
    plan = plan_batches([5, 3, 5, 100, 3], token_budget=12)
    assert [b.tolist() for b in plan.batches] == [[3], [0, 2], [1, 4]]  # ties by index
    assert plan.padded_tokens == 100 + 10 + 6 and plan.padding_fraction == 0.0
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        plan_batches([3, 0], 10)


def test_packed_plan_fills_rows_longest_first_without_padding():
    rng = np.random.default_rng(2)
    lengths = np.clip(rng.lognormal(5.5, 0.8, size=3000).astype(int), 8, 4096)
    plan = plan_packed(lengths, 16384)
    flat = np.concatenate(plan.batches)
    assert sorted(flat.tolist()) == list(range(lengths.size))
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first: an out-of-memory shows at once
    assert all(lengths[b].sum() <= 16384 for b in plan.batches)
    assert plan.padded_tokens == plan.real_tokens == lengths.sum()
    assert plan.padding_fraction == 0.0
    assert len(plan.batches) <= lengths.sum() / 16384 + 2  # rows are nearly full
    over = plan_packed([5, 30, 5], token_budget=12)
    assert [b.tolist() for b in over.batches] == [[1], [0, 2]]  # over the budget: a row alone


def test_rewards_invariant_to_batch_size_and_padding_side(tiny_rm, fixture_pairs):
    model, tok = tiny_rm
    # Every third pair (64 pairs from all 23 subsets), both sides: 128 sequences of mixed lengths.
    seqs = fixture_pairs[0][::3] + fixture_pairs[1][::3]
    pad = tok.pad_token_id
    reference = _fixed_batches(model, seqs, pad, 1, "right")  # batch size 1: no padding at all
    assert np.ptp(reference) > 0.5  # rewards really differ between rows
    assert len({len(s) for s in seqs}) > 10  # and batches really get padded
    worst = {}
    for batch_size in (7, 64):
        for side in ("right", "left"):
            got = _fixed_batches(model, seqs, pad, batch_size, side)
            worst[batch_size, side] = float(np.abs(got - reference).max())
    for budget in (64, 1000, 8192):
        for packed in (True, False):
            got, _ = score_sequences(
                model, seqs, pad_id=pad, token_budget=budget, packed=packed, progress=False
            )
            worst["budget", budget, packed] = float(np.abs(got - reference).max())
    print("max |reward - unpadded reward|:", worst)
    assert max(worst.values()) < 1e-5, worst


def test_score_pairs_returns_dataset_order(tiny_rm, fixture_pairs):
    model, tok = tiny_rm
    chosen, rejected = fixture_pairs[0][::3], fixture_pairs[1][::3]
    c, r, stats = score_pairs(
        model, chosen, rejected, pad_id=tok.pad_token_id, token_budget=512, progress=False
    )
    ref_c = _fixed_batches(model, chosen, tok.pad_token_id, 1, "right")
    ref_r = _fixed_batches(model, rejected, tok.pad_token_id, 1, "right")
    assert np.abs(c - ref_c).max() < 1e-5 and np.abs(r - ref_r).max() < 1e-5
    assert stats.sequences == 2 * len(chosen)
    assert stats.batches > 1 and stats.padded_tokens <= stats.batches * 512
    assert stats.real_tokens == sum(map(len, chosen + rejected))


def test_packed_scoring_keeps_every_pair_ranking_and_the_accuracy(tiny_rm, fixture_pairs):
    """All fixture pairs, packed (the default) vs today's padded scorer: the same rewards to
    1e-5, the same winner for every pair, hence the same accuracy."""
    model, tok = tiny_rm
    chosen, rejected = fixture_pairs
    packed = score_pairs(
        model, chosen, rejected, pad_id=tok.pad_token_id, token_budget=4096, progress=False
    )
    padded = score_pairs(
        model,
        chosen,
        rejected,
        pad_id=tok.pad_token_id,
        token_budget=4096,
        packed=False,
        progress=False,
    )
    assert packed[2].packed and packed[2].padding_fraction == 0.0
    assert not padded[2].packed and padded[2].padding_fraction > 0.0
    assert max(np.abs(packed[i] - padded[i]).max() for i in (0, 1)) < 1e-5
    wins_packed, wins_padded = packed[0] > packed[1], padded[0] > padded[1]
    assert 0.2 < wins_packed.mean() < 0.8  # a random head: both outcomes occur
    assert np.array_equal(wins_packed, wins_padded)
    margins = np.abs(padded[0] - padded[1])
    print(f"{len(chosen)} pairs, smallest |margin| {margins.min():.2e}")


def test_double_bos_is_masked_like_reward_bench_after_truncation():
    """rewardbench/models/pipeline.py (0.1.4): a side that starts with two BOS after truncation
    has the first masked in place; here it is dropped and the side's positions start at 1. A
    side truncated from the left no longer starts with two BOS: nothing masked, position 0."""
    from paper_repro.rewardbench.inputs import EvalInputs, mask_double_bos

    BOS = 1
    inputs = EvalInputs([0, 1], ["a", "a"], [[BOS, BOS, 5, 6], [BOS, 7]], [[BOS, BOS, 8], [6, 7]])
    mask_double_bos(inputs, BOS)
    assert inputs.chosen == [[BOS, 5, 6], [BOS, 7]] and inputs.rejected == [[BOS, 8], [6, 7]]
    assert inputs.starts == ([1, 0], [1, 0])
    single = EvalInputs([0], ["a"], [[BOS, 5]], [[BOS, 6]])
    mask_double_bos(single, BOS)
    assert single.starts is None and single.chosen == [[BOS, 5]]
    no_bos = EvalInputs([0], ["a"], [[5, 5]], [[6]])
    mask_double_bos(no_bos, None)
    assert no_bos.starts is None and no_bos.chosen == [[5, 5]]
