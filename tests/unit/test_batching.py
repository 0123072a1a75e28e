"""Data order (seeded shuffle, drop_last, update-groups, ranks, length grouping) and the collator."""

import numpy as np
import pytest
import torch

from paper_repro.training.batching import BatchPlan, collate_pairs, make_batch, pair_lengths

PAD = 9


def test_collate_concatenates_chosen_then_rejected_right_padded():
    batch = collate_pairs([[1, 2, 3], [4, 5]], [[6], [7, 8, 1, 2]], PAD)
    assert batch.n_pairs == 2
    assert torch.equal(
        batch.input_ids,
        torch.tensor([[1, 2, 3, PAD], [4, 5, PAD, PAD], [6, PAD, PAD, PAD], [7, 8, 1, 2]]),
    )
    assert torch.equal(
        batch.attention_mask,
        torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
    )
    assert batch.tokens == 10 and batch.padded_tokens == 16
    assert batch.input_ids.dtype == torch.long


def test_collate_rejects_bad_input():
    with pytest.raises(ValueError):
        collate_pairs([[1]], [], PAD)
    with pytest.raises(ValueError):
        collate_pairs([[1]], [[]], PAD)


class Pairs:  # the PairData shape: numpy int32 rows
    def __init__(self, lengths_c, lengths_r):
        self.chosen = [np.arange(1, n + 1, dtype=np.int32) for n in lengths_c]
        self.rejected = [np.arange(1, n + 1, dtype=np.int32) for n in lengths_r]


def test_make_batch_takes_rows_in_index_order():
    pairs = Pairs([1, 2, 3], [3, 2, 1])
    batch = make_batch(pairs, np.array([2, 0]), PAD)
    assert batch.input_ids.tolist() == [[1, 2, 3], [1, PAD, PAD], [1, PAD, PAD], [1, 2, 3]]
    assert pair_lengths(pairs).tolist() == [3, 2, 3]


def test_drop_last_and_disjoint_update_groups():
    plan = BatchPlan(103, total_batch=10, micro_batch=5, epochs=2, seed=42)
    assert (plan.updates_per_epoch, plan.num_updates, plan.accumulation) == (10, 20, 2)
    epoch0 = np.concatenate([plan.update_group(k) for k in range(10)])
    assert len(set(epoch0.tolist())) == 100  # 3 pairs dropped, none repeated
    epoch1 = np.concatenate([plan.update_group(k) for k in range(10, 20)])
    assert len(set(epoch1.tolist())) == 100
    assert not np.array_equal(epoch0, epoch1)  # reshuffled per epoch
    with pytest.raises(IndexError):
        plan.update_group(20)


@pytest.mark.parametrize("order", ["easylm", "seeded-randperm"])
def test_order_is_seeded_and_a_pure_function_of_the_update(order):
    a = BatchPlan(64, total_batch=8, micro_batch=4, seed=42, order=order)
    b = BatchPlan(64, total_batch=8, micro_batch=4, seed=42, order=order)
    c = BatchPlan(64, total_batch=8, micro_batch=4, seed=43, order=order)
    assert np.array_equal(a.update_group(5), b.update_group(5))  # resume: k is the whole state
    assert not np.array_equal(a.update_group(0), c.update_group(0))


def test_seeded_randperm_order():
    plan = BatchPlan(64, total_batch=8, micro_batch=4, epochs=2, seed=42, order="seeded-randperm")
    for epoch in (0, 1):
        want = torch.randperm(64, generator=torch.Generator().manual_seed(42 + epoch)).numpy()
        assert np.array_equal(plan.epoch_order(epoch), want)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_easylm_order_is_what_a_seeded_torch_dataloader_gives(num_workers):
    """EasyLM: torch.manual_seed(42), then DataLoader(shuffle=True, drop_last=True) iterated once
    per epoch, micro batches accumulated into updates. Same update groups, every epoch."""
    from torch.utils.data import DataLoader

    n, micro, accumulation, epochs = 103, 4, 2, 3
    torch.manual_seed(42)
    loader = DataLoader(
        list(range(n)), batch_size=micro, shuffle=True, drop_last=True, num_workers=num_workers
    )
    seen = [torch.cat(list(loader)).numpy() for _ in range(epochs)]
    plan = BatchPlan(n, total_batch=micro * accumulation, micro_batch=micro, epochs=epochs)
    assert plan.order == "easylm" and plan.updates_per_epoch == 12
    for epoch in range(epochs):
        assert np.array_equal(plan.epoch_order(epoch)[: len(seen[epoch])], seen[epoch])
        groups = [plan.update_group(epoch * 12 + j) for j in range(12)]
        assert np.array_equal(np.concatenate(groups), seen[epoch][: 12 * micro * accumulation])
    assert not np.array_equal(seen[0], seen[1])  # a new permutation every epoch


def test_ranks_split_the_same_group_whatever_the_world_size():
    one = BatchPlan(96, total_batch=16, micro_batch=4, world_size=1, seed=1)
    two = BatchPlan(96, total_batch=16, micro_batch=4, world_size=2, seed=1)
    assert (one.accumulation, two.accumulation) == (4, 2)
    for k in range(one.num_updates):
        group = one.update_group(k)
        ranks = [two.micro_batches(k, r) for r in range(2)]
        # micro batch j goes to rank j % world at accumulation step j // world
        assert np.array_equal(ranks[0][0], group[0:4]) and np.array_equal(ranks[1][0], group[4:8])
        assert np.array_equal(ranks[0][1], group[8:12]) and np.array_equal(
            ranks[1][1], group[12:16]
        )
        assert np.array_equal(np.concatenate(one.micro_batches(k, 0)), group)


def test_length_grouping_keeps_the_pairs_of_each_update_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=256)
    faithful = BatchPlan(256, total_batch=32, micro_batch=4, seed=42)
    grouped = BatchPlan(
        256, total_batch=32, micro_batch=4, seed=42, length_grouped=True, lengths=lengths
    )

    def waste(plan):
        pad = 0
        for k in range(plan.num_updates):
            for mb in plan.micro_batches(k):
                pad += int((lengths[mb].max() - lengths[mb]).sum())
        return pad

    for k in range(faithful.num_updates):
        assert sorted(faithful.update_group(k).tolist()) == sorted(grouped.update_group(k).tolist())
        assert np.all(np.diff(lengths[grouped.update_group(k)]) >= 0)
    assert waste(grouped) < 0.5 * waste(faithful)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        BatchPlan(100, total_batch=10, micro_batch=4)
    with pytest.raises(ValueError, match="length"):
        BatchPlan(100, total_batch=10, micro_batch=5, length_grouped=True)
    with pytest.raises(IndexError):
        BatchPlan(100, total_batch=10, micro_batch=5, world_size=2).micro_batches(0, rank=2)
    with pytest.raises(ValueError, match="data order 'shuffled'"):
        BatchPlan(100, total_batch=10, micro_batch=5, order="shuffled")


@pytest.mark.parametrize(
    "preset",
    ["llama3-70b-uf", "llama3-70b-uf-card-literal", "llama3-70b-uf-easylm", "llama3-8b-uf"],
)
def test_card_presets_use_the_easylm_order(preset):
    from paper_repro.config import load_config

    assert load_config(preset).rm.data_order == "easylm"
    assert load_config(preset, ["rm.data_order=seeded-randperm"]).rm.data_order == "seeded-randperm"


def test_unknown_data_order_is_a_config_error():
    from paper_repro.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="rm.data_order"):
        load_config("tiny", ["rm.data_order=shuffled"])
