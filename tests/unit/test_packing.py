"""Packed micro batches: the layout, the token-budget cuts, and that packing changes nothing but
cost -- rewards and the update gradient equal the padded computation, attention never crosses a
sequence boundary, pairs over the budget still train -- on a small random Llama (fp32, GQA), and
under bf16 autocast, where short sequences take another attention kernel."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from paper_repro.config import RMTrainConfig
from paper_repro.training.backends import TorchBackend
from paper_repro.training.batching import (
    BatchPlan,
    balanced_micro_batches,
    collate_pairs,
    pack_pairs,
    pair_tokens,
)
from paper_repro.training.engine import Trainer, evaluate_accuracy, read_last
from paper_repro.training.modeling import packed_attention_mode, packed_token_scores
from paper_repro.training.schedule import LRSchedule

PAD = 63


@dataclass
class Pairs:  # the PairData shape
    chosen: list[np.ndarray]
    rejected: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.chosen)


def random_pairs(n: int, seed: int, low: int = 3, high: int = 40) -> Pairs:
    rng = np.random.default_rng(seed)

    def seq():
        return rng.integers(1, PAD, rng.integers(low, high)).astype(np.int32)

    return Pairs([seq() for _ in range(n)], [seq() for _ in range(n)])


def small_llama(max_positions: int = 256):
    """2 layers, 4 query heads sharing 2 key/value heads (GQA as Llama 3), an O(1) reward head so
    that 1e-5 is a real tolerance."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=PAD,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
    )
    m = LlamaForSequenceClassification(cfg).float().eval()
    with torch.no_grad():
        m.score.weight.normal_(0.0, 1.0)
    return m


@pytest.fixture(scope="module")
def model():
    return small_llama()


def backend(model, packed: bool, **rm) -> TorchBackend:
    rm = RMTrainConfig(activation_checkpointing=False, lr=1e-3, end_lr=1e-4, **rm)
    return TorchBackend(copy.deepcopy(model), rm, packed=packed, device="cpu")


# --------------------------------------------------------------------------- layout and cuts


def test_pack_pairs_concatenates_chosen_then_rejected_without_padding():
    batch = pack_pairs([[1, 2, 3], [4, 5]], [[6], [7, 8, 9, 10]])
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert batch.lengths == (3, 2, 1, 4) and batch.n_pairs == 2
    assert batch.tokens == batch.padded_tokens == 10
    assert [t.tolist() for t in batch.last] == [[0, 0, 0, 0], [2, 4, 5, 9]]
    assert [t.tolist() for t in batch.first] == [[0, 0, 0, 0], [0, 3, 5, 6]]
    with pytest.raises(ValueError, match="empty"):
        pack_pairs([[1]], [[]])


def test_micro_batches_are_balanced_within_the_budget_and_isolate_oversize_pairs():
    costs = np.array([4, 4, 3, 12, 1, 1, 5, 2])
    one = balanced_micro_batches(costs, world=1, budget=8)
    flat = np.sort(np.concatenate(one[0]))
    assert flat.tolist() == list(range(8))  # every pair exactly once
    loads = [int(costs[m].sum()) for m in one[0]]
    assert all(load <= 8 or len(m) == 1 for load, m in zip(loads, one[0], strict=True))
    assert [m.tolist() for m in one[0] if costs[m].sum() > 8] == [[3]]  # 12 tokens: alone
    assert all(np.all(np.diff(m) > 0) for m in one[0])  # update order inside a micro batch
    two = balanced_micro_batches(costs, world=2, budget=100)
    assert [len(r) for r in two] == [1, 1]  # 32 tokens fit one forward per rank
    assert [int(costs[r[0]].sum()) for r in two] == [16, 16]  # and split evenly
    with pytest.raises(ValueError, match="evenly"):
        balanced_micro_batches(costs[:7], world=2, budget=100)
    huge = balanced_micro_batches(np.array([50, 60, 70, 80]), world=2, budget=10)
    assert [[m.tolist() for m in r] for r in huge] == [[[3], [1]], [[2], [0]]]  # all alone


@pytest.mark.parametrize("world", [1, 2, 4])
def test_packed_plan_uses_the_same_pairs_per_update_as_padded(world):
    pairs = random_pairs(96, seed=world, high=80)
    tokens = pair_tokens(pairs)
    padded = BatchPlan(96, total_batch=32, micro_batch=4, world_size=world, seed=1)
    packed = BatchPlan(
        96, total_batch=32, micro_batch=4, world_size=world, seed=1, token_budget=200, tokens=tokens
    )
    for k in range(packed.num_updates):
        steps = [packed.micro_batches(k, rank) for rank in range(world)]
        assert len({len(s) for s in steps}) == 1  # ZeRO-3: the same number of forwards per rank
        used = np.concatenate([m for s in steps for m in s])
        assert sorted(used.tolist()) == sorted(padded.update_group(k).tolist())
        for step in zip(*steps, strict=True):
            assert all(len(m) == 1 or tokens[m].sum() <= 200 for m in step)
            loads = [int(tokens[m].sum()) for m in step]
            assert max(loads) - min(loads) <= tokens.max()  # ranks in lockstep stay balanced


# --------------------------------------------------------------------------- same numbers


def test_packed_rewards_equal_padded_rewards(model):
    pairs = random_pairs(12, seed=0)
    padded, packed = backend(model, False), backend(model, True)
    b_pad = collate_pairs(pairs.chosen, pairs.rejected, PAD)
    b_pack = pack_pairs(pairs.chosen, pairs.rejected)
    with torch.no_grad():
        r_pad = read_last(padded.scores(b_pad), b_pad)
        r_pack = read_last(packed.scores(b_pack), b_pack)
    assert r_pad.shape == r_pack.shape == (24,)
    assert float(r_pad.std()) > 0.5  # rewards really differ between sequences
    assert float((r_pad - r_pack).abs().max()) < 1e-5


def test_a_sequence_never_attends_across_a_boundary(model):
    """Change the tokens of one packed sequence (and then its length): every other reward stays
    put, the changed one moves."""
    pairs = random_pairs(6, seed=1)
    seqs = [*pairs.chosen, *pairs.rejected]

    def rewards_of(seqs):
        batch = pack_pairs(seqs[:6], seqs[6:])
        with packed_attention_mode(model), torch.no_grad():
            return read_last(packed_token_scores(model, batch.input_ids, batch.lengths), batch)

    ref = rewards_of(seqs)
    for victim in (0, 5, 7):
        changed = list(seqs)
        changed[victim] = (seqs[victim][:-1] + 7) % PAD  # same length, other tokens, same EOS
        changed[victim] = np.append(changed[victim], seqs[victim][-1])
        longer = list(seqs)
        longer[victim] = np.concatenate([seqs[victim][:1], [5, 6, 7], seqs[victim][1:]])
        for variant in (changed, longer):
            got = rewards_of(variant)
            others = [i for i in range(12) if i != victim]
            assert float((got[others] - ref[others]).abs().max()) < 1e-5, victim
            assert float((got[victim] - ref[victim]).abs()) > 1e-3, victim


def test_packed_attention_mode_restores_the_model_and_refuses_padded_input(model):
    before = model.config._attn_implementation
    with packed_attention_mode(model):
        batch = collate_pairs([[1, 2, 3]], [[4, 5]], PAD)
        with pytest.raises(RuntimeError, match="packed attention needs"):
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    assert model.config._attn_implementation == before
    with pytest.raises(RuntimeError, match="not in packed attention"):
        packed_token_scores(model, torch.tensor([[1, 2, 3]]), (3,))


class RecordingBackend(TorchBackend):
    """The torch backend, keeping the accumulated gradient of each update before it is applied."""

    def step(self, lr: float) -> float:
        self.grads = {n: p.grad.clone() for n, p in self.hf_model.named_parameters()}
        return super().step(lr)


def first_update_gradient(model, pairs, *, token_budget, checkpointing=False, dtype="float32"):
    rm = RMTrainConfig(
        activation_checkpointing=checkpointing, total_batch_pairs=16, micro_batch_pairs=4
    )
    packed = token_budget is not None
    b = RecordingBackend(copy.deepcopy(model), rm, packed=packed, compute_dtype=dtype, device="cpu")
    plan = BatchPlan(
        len(pairs),
        total_batch=16,
        micro_batch=4,
        seed=3,
        token_budget=token_budget,
        tokens=pair_tokens(pairs),
    )
    trainer = Trainer(b, pairs, plan, LRSchedule(1e-3, 1e-4, 0, plan.num_updates), PAD)
    trainer.progress = False
    metrics = trainer._update(0)
    return b.grads, metrics, plan


@pytest.mark.parametrize("checkpointing", [False, True])
def test_update_gradient_packed_equals_padded(model, checkpointing):
    """Packed micro batches of 1 to 7 pairs (one pair over the budget on its own) vs 4 padded
    micro batches of 4 pairs: the update's gradient is the same to 1e-5 relative."""
    pairs = random_pairs(16, seed=2, high=60)
    pairs.chosen[5] = np.arange(1, 61, dtype=np.int32)  # with its rejected side > the budget
    pairs.rejected[5] = np.arange(2, 62, dtype=np.int32)
    padded, m_pad, _ = first_update_gradient(model, pairs, token_budget=None)
    packed, m_pack, plan = first_update_gradient(
        model, pairs, token_budget=100, checkpointing=checkpointing
    )
    sizes = [len(m) for m in plan.micro_batches(0)]
    assert len(set(sizes)) > 1 and 1 in sizes  # uneven micro batches, the oversize pair alone
    assert m_pack.micro_batches == len(sizes) and m_pad.micro_batches == 4
    assert m_pack.padding_fraction == 0.0 and m_pad.padding_fraction > 0.2
    assert m_pack.tokens == m_pad.tokens
    assert m_pack.loss == pytest.approx(m_pad.loss, rel=1e-6)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in padded.values()))
    diff = torch.sqrt(sum(((padded[n] - packed[n]).double() ** 2).sum() for n in padded))
    assert float(norm) > 1e-3 and float(diff / norm) < 1e-5, float(diff / norm)
    for name, g in padded.items():
        assert torch.allclose(packed[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max())), name
    assert m_pack.grad_norm == pytest.approx(m_pad.grad_norm, rel=1e-5)


# Sequences on both sides of the CPU bf16 kernel switch: under bf16 autocast with gradients, SDPA's
# math kernel below 256 tokens, its flash kernel from 256 on (modeling._sdpa_kernel).
BF16_LENGTHS = (40, 300, 17, 260, 120, 30)


@pytest.fixture(scope="module")
def long_model():
    return small_llama(max_positions=512)


def test_bf16_training_attention_stays_within_each_sequence(long_model):
    rng = np.random.default_rng(5)
    seqs = [rng.integers(1, PAD, n).astype(np.int32) for n in BF16_LENGTHS]

    def rewards_of(seqs):
        batch = pack_pairs(seqs[:3], seqs[3:])
        with packed_attention_mode(long_model), torch.autocast("cpu", dtype=torch.bfloat16):
            scores = packed_token_scores(long_model, batch.input_ids, batch.lengths)
        assert scores.requires_grad  # the training path
        return read_last(scores, batch).detach().float()

    ref = rewards_of(seqs)
    for victim in (0, 1):  # a math-kernel sequence, a flash-kernel one
        changed = list(seqs)
        changed[victim] = np.append((seqs[victim][:-1] + 7) % PAD, seqs[victim][-1])
        got = rewards_of(changed)
        others = [i for i in range(len(seqs)) if i != victim]
        assert torch.equal(got[others], ref[others]), victim
        assert float((got[victim] - ref[victim]).abs()) > 1e-2, victim


@pytest.mark.parametrize("grad", [True, False])
def test_bf16_kernel_choice_follows_length_and_grad(long_model, grad):
    """Training in bf16 on CPU: the math kernel below 256 tokens, flash from 256 on (the flash
    backward is slower on short sequences, bench/attention_kernels.py); scoring: flash always."""
    from torch.profiler import profile

    rng = np.random.default_rng(7)
    seqs = [rng.integers(1, PAD, n).astype(np.int32) for n in BF16_LENGTHS]
    batch = pack_pairs(seqs[:3], seqs[3:])
    with packed_attention_mode(long_model), torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.set_grad_enabled(grad), profile() as prof:
            packed_token_scores(long_model, batch.input_ids, batch.lengths)
    calls = [e.name for e in prof.events()]
    flash = sum(n == "aten::_scaled_dot_product_flash_attention_for_cpu" for n in calls)
    math = sum(n == "aten::_scaled_dot_product_attention_math" for n in calls)
    layers, short = long_model.config.num_hidden_layers, sum(n < 256 for n in BF16_LENGTHS)
    assert (math, flash) == (
        (layers * short, layers * (len(BF16_LENGTHS) - short))
        if grad
        else (0, layers * len(BF16_LENGTHS))
    )


def test_bf16_update_gradient_packed_as_close_to_fp32_as_padded(long_model):
    """bf16 autocast, one update of sequences of 3 to 400 tokens: the packed gradient (math and
    flash kernels per sequence) is about as far from the fp32 gradient as the padded one (they
    round differently: 6.4e-3 vs 5.7e-3 here)."""
    pairs = random_pairs(16, seed=6, high=400)
    exact, _, _ = first_update_gradient(long_model, pairs, token_budget=None)

    def error(dtype, budget) -> float:
        grads, _, _ = first_update_gradient(long_model, pairs, token_budget=budget, dtype=dtype)
        diff = sum(((grads[n] - exact[n]).double() ** 2).sum() for n in exact)
        return float(torch.sqrt(diff / sum((g.double() ** 2).sum() for g in exact.values())))

    padded, packed = error("bfloat16", None), error("bfloat16", 1000)
    print(f"relative gradient error vs fp32: padded {padded:.2e}, packed {packed:.2e}")
    assert 0.0 < padded < 0.05
    assert packed < 1.25 * padded


def test_heldout_accuracy_packed_equals_padded(model):
    pairs = random_pairs(21, seed=4)
    padded = evaluate_accuracy(backend(model, False), pairs, PAD, micro_batch=4)
    packed = evaluate_accuracy(backend(model, True), pairs, PAD, 4, token_budget=90)
    assert 0.0 < padded < 1.0 and packed == padded


class RankView:
    """One rank of a simulated world, over a real single-process backend: evaluate_accuracy's
    sharding runs unchanged, the cross-rank sum is done by the test."""

    def __init__(self, backend, rank: int, world: int):
        self.b, self.rank, self.world_size, self.device = backend, rank, world, backend.device

    def eval(self):
        self.b.eval()

    def scores(self, batch):
        return self.b.scores(batch)

    def sum(self, value: float) -> float:
        return value  # the test adds the ranks' shares


@pytest.mark.parametrize("n", [1, 2, 21])
def test_heldout_accuracy_sharded_over_ranks_counts_every_pair_once(model, n):
    """Fewer pairs than ranks too: pair 0 fills in and must not be counted twice (it is made a
    win, so counting it twice would show)."""
    pairs = random_pairs(n, seed=5)
    first = backend(model, packed=False)
    if evaluate_accuracy(first, Pairs(pairs.chosen[:1], pairs.rejected[:1]), PAD, 1) == 0.0:
        pairs.chosen[0], pairs.rejected[0] = pairs.rejected[0], pairs.chosen[0]
    for budget in (None, 90):
        b = backend(model, packed=budget is not None)
        whole = evaluate_accuracy(b, pairs, PAD, 4, token_budget=budget)
        for world in (2, 3):
            shares = [
                evaluate_accuracy(RankView(b, r, world), pairs, PAD, 4, token_budget=budget)
                for r in range(world)
            ]
            assert sum(shares) == pytest.approx(whole), (budget, world)
