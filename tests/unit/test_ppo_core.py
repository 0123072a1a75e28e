"""PPO math against values computed by hand (EasyLM llama_train_ppo.py semantics, docs/fidelity.md §9)."""

from __future__ import annotations

import math

import pytest
import torch

from paper_repro.ppo import core
from paper_repro.ppo.rollout import response_mask_from_eos

PAD = 99.0  # garbage in padded positions: every result below must ignore it


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-6, rtol=1e-6
    )


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_masked_mean_and_unbiased_var_ignore_pads():
    x, m = t([1.0, 2.0, 3.0, PAD]), t([1, 1, 1, 0])
    assert core.masked_mean(x, m).item() == pytest.approx(2.0)
    # ((1 + 0 + 1) / 3) * 3 / 2 = 1 (Bessel-corrected, as EasyLM masked_var)
    assert core.masked_var(x, m).item() == pytest.approx(1.0)
    assert core.masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least two"):
        core.masked_var(t([1.0, PAD]), t([1, 0]))


def test_whiten_matches_hand_values():
    x, m = t([1.0, 2.0, 3.0, PAD]), t([1, 1, 1, 0])
    s = 1 / math.sqrt(1.0 + 1e-6)  # EasyLM: (x - mean) / sqrt(var + 1e-6)
    w = core.whiten(x, m)
    assert w[0, :3].tolist() == pytest.approx([-s, 0.0, s], abs=1e-6)
    kept = core.whiten(x, m, shift_mean=False)  # EasyLM's shift_mean=False adds the mean back
    assert kept[0, :3].tolist() == pytest.approx([2 - s, 2.0, 2 + s], abs=1e-6)


def test_whitening_is_over_the_whole_batch_not_per_row():
    x, m = t([0.0, 2.0], [4.0, 6.0]), t([1, 1], [1, 1])
    w = core.whiten(x, m)  # mean 3, unbiased var (9+1+1+9)/3 = 20/3
    assert w.flatten().tolist() == pytest.approx(
        [(v - 3) / math.sqrt(20 / 3 + 1e-6) for v in (0, 2, 4, 6)]
    )


def test_no_eos_rule_and_score():
    reward = torch.tensor([1.5, 2.0])
    out = core.apply_no_eos_rule(reward, torch.tensor([True, False]), -10.0)
    assert out.tolist() == [1.5, -10.0]
    assert core.score_from_reward(out, 2.0, 0.5).tolist() == [3.5, -19.5]


def test_kl_penalty_on_every_token_and_score_at_the_last_real_one():
    logps = t([-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0])
    ref = t([-1.5, -2.0, -2.0], [-1.0, -2.0, -7.0])
    mask = t([1, 1, 1], [1, 1, 0])
    rewards, kl = core.kl_penalized_rewards(
        logps, ref, torch.tensor([2.0, -1.0]), mask, kl_coef=0.1
    )
    close(kl, [[0.5, 0.0, -1.0], [0.0, 1.0, 0.0]])
    # -0.1 * kl everywhere; +2 at row 0's last token (index 2), -1 at row 1's (index 1); pad = 0
    close(rewards, [[-0.05, 0.0, 2.1], [0.0, -1.1, 0.0]])


def test_gae_by_hand():
    values, rewards, mask = t([1.0, 2.0, PAD]), t([0.5, 1.0, PAD]), t([1, 1, 0])
    # gamma 1, lambda 0.5: A1 = 1 + 0 - 2 = -1; A0 = (0.5 + 2 - 1) + 0.5 * A1 = 1.0; pad: 0
    adv, ret = core.gae(values, rewards, mask, gamma=1.0, lam=0.5)
    close(adv, [[1.0, -1.0, 0.0]])
    close(ret, [[2.0, 1.0, 0.0]])  # advantages + values
    # gamma 0.5, lambda 0.5: A1 = -1; A0 = (0.5 + 0.5 * 2 - 1) + 0.25 * A1 = 0.25
    adv, _ = core.gae(values, rewards, mask, gamma=0.5, lam=0.5)
    close(adv, [[0.25, -1.0, 0.0]])


def test_gae_gamma1_lambda1_is_reward_to_go_minus_value():
    values, rewards, mask = t([0.3, -0.2, 0.7]), t([0.1, 0.2, 1.0]), t([1, 1, 1])
    adv, _ = core.gae(values, rewards, mask, gamma=1.0, lam=1.0)
    close(adv, [[1.3 - 0.3, 1.2 + 0.2, 1.0 - 0.7]])


def test_compute_advantages_whitens_advantages_only_by_default():
    values, rewards, mask = t([1.0, 2.0, PAD]), t([0.5, 1.0, PAD]), t([1, 1, 0])
    adv, ret = core.compute_advantages(values, rewards, mask, gamma=1.0, lam=0.5)
    s = 1 / math.sqrt(2.0 + 1e-6)  # advantages [1, -1]: mean 0, unbiased var 2
    assert adv[0, :2].tolist() == pytest.approx([s, -s], abs=1e-6)
    assert ret[0, :2].tolist() == pytest.approx([2.0, 1.0])  # returns from unwhitened advantages
    raw, _ = core.compute_advantages(
        values, rewards, mask, gamma=1.0, lam=0.5, whiten_advantages=False
    )
    assert raw[0, :2].tolist() == pytest.approx([1.0, -1.0])


def test_clipped_policy_loss_by_hand():
    logps = torch.log(t([1.5, 0.5, 1.0, 3.0]))  # old log-probs 0 -> ratios 1.5, 0.5, 1.0, (pad)
    adv, mask = t([1.0, -1.0, 2.0, PAD]), t([1, 1, 1, 0])
    loss, clip_frac, ratio_mean = core.policy_loss(logps, torch.zeros_like(logps), adv, mask, 0.2)
    # max(-A r, -A clip(r)): token0 max(-1.5, -1.2) = -1.2 (clipped), token1 max(0.5, 0.8) = 0.8
    # (clipped), token2 max(-2, -2) = -2 (not clipped) -> mean -0.8, clip fraction 2/3
    assert loss.item() == pytest.approx(-0.8)
    assert clip_frac.item() == pytest.approx(2 / 3)
    assert ratio_mean.item() == pytest.approx(1.0)


def test_clipped_value_loss_by_hand():
    v, old, ret = t([1.5, 0.0, 2.0, PAD]), t([1.0, 0.5, 2.0, PAD]), t([2.0, 0.0, 1.0, PAD])
    mask = t([1, 1, 1, 0])
    loss, clip_frac = core.value_loss(v, old, ret, mask, 0.2, scale=0.5)
    # clipped values 1.2, 0.3, 2.0; max sq errors 0.64, 0.09, 1.0 -> 0.5 * 1.73 / 3
    assert loss.item() == pytest.approx(0.5 * 1.73 / 3)
    assert clip_frac.item() == pytest.approx(2 / 3)


def test_total_loss_is_pg_plus_vf_coef_times_vf():
    logps = torch.log(t([1.5, 0.5, 1.0]))
    parts = core.ppo_loss(
        logps,
        torch.zeros_like(logps),
        t([1.5, 0.0, 2.0]),
        t([1.0, 0.5, 2.0]),
        t([1.0, -1.0, 2.0]),
        t([2.0, 0.0, 1.0]),
        t([1, 1, 1]),
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
    )
    assert parts.policy.item() == pytest.approx(-0.8)
    assert parts.value.item() == pytest.approx(0.5 * 1.73 / 3)
    assert parts.total.item() == pytest.approx(-0.8 + 0.1 * 0.5 * 1.73 / 3)


def test_gradient_flows_only_through_real_tokens():
    logps = torch.zeros(1, 3, requires_grad=True)
    parts = core.ppo_loss(
        logps,
        torch.zeros(1, 3),
        torch.zeros(1, 3),
        torch.zeros(1, 3),
        t([1.0, 1.0, PAD]),
        torch.zeros(1, 3),
        t([1, 1, 0]),
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
    )
    parts.total.backward()
    close(logps.grad, [[-0.5, -0.5, 0.0]])  # d(-mean(A r))/dlogp = -A/2


def test_warmup_then_constant_lr():
    lrs = [core.warmup_constant_lr(k, 1e-6, 4) for k in range(7)]
    assert lrs == pytest.approx([0.0, 2.5e-7, 5e-7, 7.5e-7, 1e-6, 1e-6, 1e-6])
    assert core.warmup_constant_lr(0, 1e-6, 0) == 1e-6


def test_response_mask_stops_at_first_eos_and_truncated_rows_have_none():
    eos, pad = 1, 99
    resp = torch.tensor([[5, eos, pad, pad], [5, 6, 7, 8], [eos, pad, pad, pad], [5, eos, 7, eos]])
    mask, has_eos = response_mask_from_eos(resp, eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert has_eos.tolist() == [True, False, True, True]
    # The reward is read at the last real token: the EOS, or the last token of a truncated row.
    assert core.last_index(mask).tolist() == [1, 3, 0, 1]


def test_entropy_of_uniform_and_peaked_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    ent = core.entropy_from_logits(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(4))
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-6)
