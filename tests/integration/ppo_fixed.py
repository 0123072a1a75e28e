"""A fixed PPO rollout batch shared by the torch reference and the DeepSpeed ranks
(tests/integration/test_ppo_deepspeed.py); not a test module."""

from __future__ import annotations

from dataclasses import replace

import torch

from paper_repro.config import PPOConfig
from paper_repro.ppo.rollout import Rollout

# 16 rollouts, 2 mini-batches of 8 -> 2 optimizer updates of policy and value. No warmup and a
# large lr so the weights move visibly (lr 0 would make any two backends agree).
BASE = PPOConfig(
    prompts_per_step=16, mini_batch=8, lr=1e-3, warmup_ratio=0.0, max_new_tokens=16, seed=3
)


def PPO_CFG(**kw) -> PPOConfig:  # noqa: N802 - reads like the constant it extends
    return replace(BASE, **kw)


def save_rollout(path, ro: Rollout, eos_id: int, pad_id: int) -> None:
    torch.save(
        {
            "input_ids": ro.input_ids,
            "attention_mask": ro.attention_mask,
            "prompt_width": ro.prompt_width,
            "response_mask": ro.response_mask,
            "has_eos": ro.has_eos,
            "eos_id": eos_id,
            "pad_id": pad_id,
        },
        path,
    )


def load_rollout(path) -> tuple[Rollout, int, int]:
    d = torch.load(path, weights_only=True)
    ro = Rollout(
        d["input_ids"], d["attention_mask"], d["prompt_width"], d["response_mask"], d["has_eos"]
    )
    return ro, d["eos_id"], d["pad_id"]


def rows(ro: Rollout, idx: list[int]) -> Rollout:
    i = torch.tensor(idx)
    return Rollout(
        ro.input_ids[i], ro.attention_mask[i], ro.prompt_width, ro.response_mask[i], ro.has_eos[i]
    )
