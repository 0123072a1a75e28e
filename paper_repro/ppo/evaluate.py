"""Held-out evaluation: mean RM reward of the policy's responses to prompts never trained on.

Responses are *sampled* exactly as in training (temperature, top_k, max_new_tokens of the config)
with a fixed seed per batch, so "before" and "after" see the same random numbers; the mean uses
the training reward (RM score at EOS, ``no_eos_reward`` for a response without EOS), and the RM's
raw mean and the share without EOS are reported next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..config import PPOConfig
from ..training.modeling import rewards as pooled_rewards
from .core import apply_no_eos_rule
from .rollout import generate


@dataclass(frozen=True)
class EvalResult:
    reward_mean: float  # after the no-EOS rule (the training reward)
    raw_reward_mean: float  # the RM's output at the last token, every response
    no_eos_frac: float
    response_len: float
    prompts: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_policy(
    policy,
    reward_model,
    prompts: Sequence[np.ndarray],
    cfg: PPOConfig,
    *,
    pad_id: int,
    eos_id: int,
    seed: int,
    batch_size: int,
    synced_gpus: bool = False,
) -> EvalResult:
    rewards, raws, no_eos, lengths = [], [], [], []
    for i, start in enumerate(range(0, len(prompts), batch_size)):
        ro = generate(
            policy,
            prompts[start : start + batch_size],
            pad_id=pad_id,
            eos_id=eos_id,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            seed=seed + i,
            synced_gpus=synced_gpus,
        )
        raw = pooled_rewards(reward_model, ro.input_ids, ro.attention_mask).float()
        rewards.append(apply_no_eos_rule(raw, ro.has_eos, cfg.no_eos_reward))
        raws.append(raw)
        no_eos.append(~ro.has_eos)
        lengths.append(ro.response_mask.sum(-1))
    return EvalResult(
        reward_mean=float(torch.cat(rewards).mean()),
        raw_reward_mean=float(torch.cat(raws).mean()),
        no_eos_frac=float(torch.cat(no_eos).float().mean()),
        response_len=float(torch.cat(lengths).float().mean()),
        prompts=len(prompts),
    )
