"""Bradley-Terry loss, EOS pooling, clipping, weight-decay mask and gradient accumulation, on
hand-made tensors and a 1-layer Llama."""

import math

import pytest
import torch

from paper_repro.config import RMTrainConfig
from paper_repro.training.backends import TorchBackend, clip_by_global_norm, weight_decay_groups
from paper_repro.training.batching import collate_pairs
from paper_repro.training.engine import read_last
from paper_repro.training.modeling import bradley_terry_loss, pair_losses, pool_last

PAD = 31


def test_loss_and_stats_hand_computed():
    r_c = torch.tensor([2.0, 0.0, 1.0])
    r_r = torch.tensor([0.0, 0.0, 3.0])
    loss, st = bradley_terry_loss(r_c, r_r)
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(2.0))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert st.accuracy == pytest.approx(1 / 3)  # the tie counts as wrong (strict >)
    assert st.margin == pytest.approx(0.0)
    assert st.reward_chosen_mean == pytest.approx(1.0)
    assert st.reward_rejected_std == pytest.approx(math.sqrt(2.0))  # population std of [0, 0, 3]


def test_loss_gradient_is_minus_sigmoid_of_minus_margin():
    r_c = torch.tensor([1.0, -1.0], requires_grad=True)
    r_r = torch.tensor([0.0, 0.0], requires_grad=True)
    bradley_terry_loss(r_c, r_r)[0].backward()
    expected = -torch.sigmoid(-torch.tensor([1.0, -1.0])) / 2
    assert torch.allclose(r_c.grad, expected) and torch.allclose(r_r.grad, -expected)


def test_pool_last_reads_the_last_real_token():
    scores = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 9.0, 9.0], [6.0, 7.0, 8.0, 0.5]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool_last(scores, mask).tolist() == [3.0, 5.0, 0.5]


def test_clip_by_global_norm_like_optax():
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    assert clip_by_global_norm([a, b], 1.0) == pytest.approx(5.0)
    assert a.grad.item() == pytest.approx(0.6) and b.grad.item() == pytest.approx(0.8)
    a.grad, b.grad = torch.tensor([0.3]), torch.tensor([0.4])
    assert clip_by_global_norm([a, b], 1.0) == pytest.approx(0.5)
    assert a.grad.item() == pytest.approx(0.3)  # below the threshold: untouched
    a.grad = torch.tensor([float("nan")])
    assert math.isnan(clip_by_global_norm([a, b], 1.0))


def test_weight_decay_mask_excludes_embeddings_and_norms(tiny_model_factory):
    model = tiny_model_factory()
    decay, no_decay = weight_decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = sorted(names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert no_decay_names == [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
    ]
    assert "score.weight" in {names[id(p)] for p in decay["params"]}


def test_reward_matches_hf_pooling_at_eos(tiny_model_factory):
    """Our mask pooling agrees with transformers' own rightmost-non-pad rule on right padding."""
    model = tiny_model_factory()
    backend = TorchBackend(model, RMTrainConfig(activation_checkpointing=False), device="cpu")
    batch = collate_pairs([[1, 5, 6, 2], [1, 7, 2]], [[1, 8, 2], [1, 9, 10, 11, 2]], PAD)
    ours = read_last(backend.scores(batch), batch)
    with torch.no_grad():
        hf = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(
            -1
        )
    assert torch.allclose(ours.detach(), hf, atol=1e-5)


def test_accumulation_gives_the_gradient_of_the_full_batch_mean(tiny_model_factory):
    """Each micro batch backpropagates its pairs' loss sum over the update's pair count (as
    engine.Trainer does): the gradients add up to those of the mean over all pairs."""
    chosen = [[1, 5, 6, 2], [1, 7, 2], [1, 3, 4, 5, 2], [1, 12, 2]]
    rejected = [[1, 8, 2], [1, 9, 10, 11, 2], [1, 13, 2], [1, 14, 15, 2]]

    def grads(accumulation, checkpointing=False):
        rm = RMTrainConfig(activation_checkpointing=checkpointing)
        model = tiny_model_factory()
        backend = TorchBackend(model, rm, device="cpu")
        backend.train()  # HF checkpoints layers only in training mode (Llama has no dropout)
        step = len(chosen) // accumulation
        for i in range(0, len(chosen), step):
            batch = collate_pairs(chosen[i : i + step], rejected[i : i + step], PAD)
            r = read_last(backend.scores(batch), batch)
            loss = pair_losses(r[: batch.n_pairs], r[batch.n_pairs :]).sum() / len(chosen)
            backend.backward(loss, last=i + step >= len(chosen))
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full, accumulated = grads(1), grads(2)
    assert full.keys() == accumulated.keys()
    for name in full:
        assert torch.allclose(full[name], accumulated[name], atol=1e-6, rtol=1e-5), name
    checkpointed = grads(1, checkpointing=True)  # recomputed in backward: same gradients
    for name in full:
        assert torch.allclose(full[name], checkpointed[name], atol=1e-7), name
