"""Pooling and the Bradley-Terry loss on hand-made tensors."""

import math

import pytest
import torch

from paper_repro.training.modeling import (
    bradley_terry_loss,
    last_token_index,
    pad_batch,
    position_ids_from_mask,
)


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


def test_position_ids_follow_easylm():  # clip(cumsum(mask) - 1, 0)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_pad_batch_sides():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=9, side="left")
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_bradley_terry_loss_hand_computed():
    c, r = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 3.0])
    loss, stats = bradley_terry_loss(c, r)
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats.accuracy == pytest.approx(1 / 3)  # the tie counts as wrong (strict >)
    assert stats.margin == pytest.approx(0.0)
    assert stats.reward_chosen_mean == pytest.approx(1.0)
    assert stats.reward_rejected_std == pytest.approx(math.sqrt(2.0))


def test_loss_gradient_pushes_chosen_up():
    c = torch.tensor([0.0], requires_grad=True)
    r = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(c, r)[0].backward()
    assert c.grad.item() == pytest.approx(-0.5) and r.grad.item() == pytest.approx(0.5)


def test_packed_position_ids_restart_at_each_start():
    from paper_repro.training.modeling import packed_position_ids

    assert packed_position_ids([3, 2]).tolist() == [[0, 1, 2, 0, 1]]
    assert packed_position_ids([3, 2], starts=[1, 0]).tolist() == [[1, 2, 3, 0, 1]]


def test_rewards_from_start_1_equal_a_masked_token_in_front():
    """reward-bench's double-BOS handling on absolute positions (GPT-2): a first token with
    attention mask 0 left in place equals dropping it and counting positions from 1."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from paper_repro.training.modeling import rewards

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2, num_labels=1)
    model = GPT2ForSequenceClassification(cfg).eval()
    model.config.pad_token_id = 0
    ids = torch.tensor([[7, 7, 11, 12, 13, 14]])
    masked = torch.tensor([[0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=masked).logits[0, 0]
        got = rewards(model, ids[:, 1:], masked[:, 1:], torch.tensor([1]))[0]
        from_0 = rewards(model, ids[:, 1:], masked[:, 1:])[0]
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert abs(from_0.item() - want.item()) > 1e-3  # the position is what differs
