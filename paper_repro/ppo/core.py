"""PPO math as pure functions over [B, T] response tensors (T = response tokens, mask 1 = real).

Everything follows EasyLM ``llama_train_ppo.py`` (docs/fidelity.md §9):

- ``score = reward * gain + bias`` where ``reward`` is the RM output at the last real token, or
  ``no_eos_reward`` (-10) when that token is not EOS (the "EOS trick").
- per-token reward ``-beta * (log pi - log pi_ref)`` on every response token, the score added at
  the last real response token; fixed beta, no adaptive controller, no KL clamp.
- GAE over the response tokens with values and rewards zeroed at pads; returns = advantages +
  values; advantages whitened with the masked mean and the *unbiased* masked variance
  (``(x - mean) / sqrt(var + 1e-6)``), rewards not whitened by default.
- clipped policy loss and clipped value loss (factor 0.5), both masked means over all response
  tokens of the mini-batch; total = pg + vf_coef * vf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

WHITEN_EPS = 1e-6  # EasyLM whiten(): sqrt(var + 1e-6)


# A cross-rank sum of a tensor (``torch.distributed.all_reduce`` SUM). ``None`` = one process.
AllSum = Callable[[torch.Tensor], torch.Tensor] | None


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | None = None, all_sum: AllSum = None
) -> torch.Tensor:
    """With ``all_sum`` (full reduction only) the mean runs over the masked entries of all ranks,
    so data-parallel whitening uses the statistics one process would see for the whole batch."""
    mask = mask.to(x.dtype)
    if dim is None:
        if all_sum is not None:
            both = all_sum(torch.stack([(x * mask).sum(), mask.sum()]))
            return both[0] / both[1]
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_var(
    x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, all_sum: AllSum = None
) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected by default, as EasyLM)."""
    mean = masked_mean(x, mask, all_sum=all_sum)
    var = masked_mean((x - mean) ** 2, mask, all_sum=all_sum)
    if unbiased:
        n = mask.to(x.dtype).sum()
        if all_sum is not None:
            n = all_sum(n.reshape(1))[0]
        if n < 2:
            raise ValueError("unbiased masked variance needs at least two masked entries")
        var = var * n / (n - 1)
    return var


def whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, all_sum: AllSum = None
) -> torch.Tensor:
    """EasyLM whiten(): normalise by masked mean/var; ``shift_mean=False`` adds the mean back.
    Pads come out as arbitrary values; every consumer masks them."""
    mean = masked_mean(x, mask, all_sum=all_sum)
    var = masked_var(x, mask, all_sum=all_sum)
    out = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    return out if shift_mean else out + mean


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a [B, T] mask (rows must have at least one 1)."""
    if (mask.sum(-1) == 0).any():
        raise ValueError("every response needs at least one token")
    t = mask.shape[-1]
    return t - 1 - mask.long().flip(-1).argmax(-1)


def apply_no_eos_rule(
    reward: torch.Tensor, ends_with_eos: torch.Tensor, no_eos_reward: float
) -> torch.Tensor:
    """EasyLM: ``where(last_token == eos, reward, -10.0)`` -- a length-truncated response gets a
    fixed penalty instead of the RM's opinion of an unfinished answer."""
    return torch.where(ends_with_eos, reward, torch.full_like(reward, no_eos_reward))


def score_from_reward(reward: torch.Tensor, gain: float, bias: float) -> torch.Tensor:
    return reward * gain + bias


def kl_penalized_rewards(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    score: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards [B, T] and the per-token KL estimate ``log pi - log pi_ref`` [B, T].

    ``-kl_coef * kl`` on every response token; ``score`` added at the last real token (the EOS,
    or the last token of a truncated response). Pads are zero."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index(mask)] += score
    return rewards * mask, kl


def gae(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response; returns (advantages, returns).

    EasyLM compute_advantages(): values and rewards are zeroed at pads, the value after the last
    position is 0, and returns = advantages + values (before any whitening)."""
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    t_len = values.shape[1]
    last = torch.zeros_like(values[:, 0])
    out = []
    for t in reversed(range(t_len)):
        next_values = values[:, t + 1] if t < t_len - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last = delta + gamma * lam * last
        out.append(last)
    advantages = torch.stack(out[::-1], dim=1)
    return advantages, advantages + values


def compute_advantages(
    values: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    lam: float,
    whiten_rewards: bool = False,
    whiten_advantages: bool = True,
    all_sum: AllSum = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE with EasyLM's optional reward whitening (shift_mean=False) and advantage whitening.
    ``all_sum``: the batch is split over ranks; whitening statistics cover all of it."""
    if whiten_rewards:
        rewards = whiten(rewards * mask, mask, shift_mean=False, all_sum=all_sum)
    advantages, returns = gae(values, rewards, mask, gamma, lam)
    if whiten_advantages:
        advantages = whiten(advantages, mask, shift_mean=True, all_sum=all_sum)
    return advantages.detach(), returns.detach()


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    clip_frac: torch.Tensor  # share of tokens where the clipped policy term is the active one
    value_clip_frac: torch.Tensor
    ratio_mean: torch.Tensor
    approx_kl: torch.Tensor  # mean of (log pi_old - log pi_new): drift within the step


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate: masked mean of max(-A r, -A clip(r, 1-eps, 1+eps)).
    Returns (loss, clip fraction, ratio mean)."""
    ratio = torch.exp(logps - old_logps)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(loss1, loss2), mask)
    clip_frac = masked_mean((loss2 > loss1).to(logps.dtype), mask)
    return loss, clip_frac.detach(), masked_mean(ratio, mask).detach()


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    scale: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: scale * masked mean of max((v - R)^2, (v_clipped - R)^2), with
    v_clipped = v_old + clip(v - v_old, -eps_v, eps_v). Returns (loss, clip fraction)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss1 = (values - returns) ** 2
    loss2 = (clipped - returns) ** 2
    loss = scale * masked_mean(torch.maximum(loss1, loss2), mask)
    clip_frac = masked_mean((loss2 > loss1).to(values.dtype), mask)
    return loss, clip_frac.detach()


def ppo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
    value_loss_scale: float = 0.5,
) -> LossParts:
    """total = policy loss + vf_coef * value loss (EasyLM ppo_loss)."""
    pg, clip_frac, ratio_mean = policy_loss(logps, old_logps, advantages, mask, cliprange)
    vf, vclip = value_loss(values, old_values, returns, mask, cliprange_value, value_loss_scale)
    approx_kl = masked_mean(old_logps - logps, mask).detach()
    return LossParts(pg + vf_coef * vf, pg, vf, clip_frac, vclip, ratio_mean, approx_kl)


def warmup_constant_lr(update: int, lr: float, warmup_updates: int) -> float:
    """Learning rate of optimizer update number ``update`` (0-based): optax linear schedule from 0
    to ``lr`` over ``warmup_updates`` (so the first update has lr 0 when warming up), then constant
    (EasyLM PPO sets ``end_lr = lr``; docs/fidelity.md §9)."""
    if warmup_updates <= 0:
        return lr
    return lr * min(update, warmup_updates) / warmup_updates


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy [.., T] of the categorical distribution given by ``logits``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
