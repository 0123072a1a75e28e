"""The faithful choices at their call sites, not only in the functions that implement them:
global-norm clipping inside the RM backend's and the PPO trainer's updates, the pre-clip gradient
norms PPO logs, and the KL coefficient and GAE parameters inside the PPO trainer's scoring.

Every expectation is computed independently: EasyLM's clipped AdamW update by hand
(tests/faithful_reference.py); the PPO rewards ``score - kl_coef * (log pi - log pi_ref)`` per
response token (EasyLM ``llama_train_ppo.py``) below. Real 1-layer Llama models on CPU, fp32.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from faithful_reference import (
    CHOSEN,
    CLIP,
    EOS,
    PAD,
    REJECTED,
    RM_LRS,
    ReferenceAdamW,
    fixed_rollout,
    max_diff,
    per_token_scores,
    ppo_reference_update,
    response_logps,
    rm_loss,
    tiny_policy,
)

from paper_repro.config import PPOConfig, RMTrainConfig
from paper_repro.ppo.models import build_models
from paper_repro.ppo.trainer import PPOTrainer
from paper_repro.training.backends import TorchBackend
from paper_repro.training.batching import collate_pairs
from paper_repro.training.engine import read_last
from paper_repro.training.modeling import pair_losses


def test_torch_rm_backend_clips_the_global_norm_like_easylm(tiny_model_factory):
    """Two updates on batches whose gradient norm is far above 1: the weights follow the clipped
    reference, not the unclipped one, and ``step`` returns the pre-clip norm."""
    rm = RMTrainConfig(
        activation_checkpointing=False, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.1
    )
    model = tiny_model_factory()
    with torch.no_grad():
        model.score.weight.mul_(200.0)  # large rewards -> a gradient norm far above the clip
    clipped, unclipped = copy.deepcopy(model), copy.deepcopy(model)
    ref = ReferenceAdamW(clipped, rm.betas, rm.eps, rm.weight_decay)
    ref_unclipped = ReferenceAdamW(unclipped, rm.betas, rm.eps, rm.weight_decay)
    backend = TorchBackend(model, rm, device="cpu")
    backend.train()
    for lr, chosen, rejected in zip(RM_LRS, CHOSEN, REJECTED, strict=True):
        batch = collate_pairs(chosen, rejected, PAD)
        r = read_last(backend.scores(batch), batch)
        backend.backward(pair_losses(r[: batch.n_pairs], r[batch.n_pairs :]).mean(), last=True)
        norm = backend.step(lr)
        rm_loss(clipped, batch).backward()
        expected_norm = ref.step(lr, CLIP)
        rm_loss(unclipped, batch).backward()
        ref_unclipped.step(lr, None)
        assert expected_norm > 5 * CLIP  # the clip binds by a wide margin
        assert norm == pytest.approx(expected_norm, rel=1e-5)  # logged before clipping
    assert max_diff(model, clipped) < 2e-6
    assert max_diff(model, unclipped) > 1e-4  # the clip is visible in the weights


# --------------------------------------------------------------------------- PPO, torch trainer


def ppo_trainer(tiny_model_factory, **cfg) -> PPOTrainer:
    """Policy moved away from its frozen reference (so the KL term is not zero) and an RM with a
    large head (rewards and returns far from the initial values: large value gradients)."""
    reward_model = tiny_model_factory()
    with torch.no_grad():
        reward_model.score.weight.mul_(50.0)
    models = build_models(tiny_policy(), reward_model)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in models.policy.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    base = {"prompts_per_step": 4, "mini_batch": 4, "lr": 1e-2, "warmup_ratio": 0.0}
    return PPOTrainer(PPOConfig(**{**base, **cfg}), models, eos_id=EOS, pad_id=PAD, warmup=0)


@pytest.mark.parametrize("kl_coef", [0.05, 0.5])
@torch.no_grad()
def test_ppo_scoring_penalises_every_response_token_with_the_configured_kl_coef(
    tiny_model_factory, kl_coef
):
    """The trainer's own scoring (the call of the KL penalty and of GAE): per-token rewards
    -kl_coef * (log pi - log pi_ref) on every response token plus the score at the last real
    token (-10 without EOS), then GAE with the configured gamma / lambda; compared through the
    returns (advantages + values before whitening) and the logged KL."""
    trainer = ppo_trainer(tiny_model_factory, kl_coef=kl_coef, gamma=0.97, lam=0.9)
    m, ro, cfg = trainer.m, fixed_rollout(), trainer.cfg
    exp = trainer.score(ro)

    mask = ro.response_mask.double()
    kl = (response_logps(m.policy, ro) - response_logps(m.reference, ro)) * mask
    last = torch.tensor([2, 1, 4, 4])
    rm_out = per_token_scores(m.reward, ro)[torch.arange(4), ro.prompt_width + last]
    score = torch.where(ro.has_eos, rm_out, torch.full_like(rm_out, cfg.no_eos_reward))
    rewards = -kl_coef * kl
    rewards[torch.arange(4), last] += score
    values = per_token_scores(m.value, ro)[:, ro.prompt_width - 1 : -1] * mask
    adv, running = torch.zeros_like(values), torch.zeros(4, dtype=torch.float64)
    for t in reversed(range(values.shape[1])):
        next_v = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros(4, dtype=values.dtype)
        running = rewards[:, t] + cfg.gamma * next_v - values[:, t] + cfg.gamma * cfg.lam * running
        adv[:, t] = running
    returns = (adv + values) * mask

    assert float(kl.abs().min(-1).values.max()) > 1e-3  # a visible KL term on the responses
    assert torch.allclose(exp.kl.double() * mask, kl, atol=1e-5)
    assert torch.allclose(exp.score.double(), score, atol=1e-4)
    assert torch.allclose(exp.returns.double() * mask, returns, atol=1e-4), (
        exp.returns * ro.response_mask,
        returns,
    )
    # advantages whitened over the mini-batch: masked mean, unbiased masked variance, eps 1e-6
    n = mask.sum()
    mean = (adv * mask).sum() / n
    var = (((adv - mean) * mask) ** 2).sum() / (n - 1)
    whitened = (adv - mean) / torch.sqrt(var + 1e-6) * mask
    assert torch.allclose(exp.advantages.double() * mask, whitened, atol=1e-4)


def test_ppo_update_clips_each_model_like_easylm_and_logs_the_pre_clip_norms(
    tiny_model_factory,
):
    """One PPO step = one update of policy and value: each model's gradient is clipped to global
    norm 1 separately (EasyLM keeps two train states), then AdamW; metrics.jsonl's
    ``grad_norm_policy`` / ``grad_norm_value`` are the norms before clipping."""
    trainer = ppo_trainer(tiny_model_factory, betas=[0.9, 0.95], weight_decay=0.1)
    ro, cfg = fixed_rollout(), trainer.cfg
    exp = trainer.score(ro)  # deterministic: the step scores the same mini-batch identically
    ref = {"policy": copy.deepcopy(trainer.m.policy), "value": copy.deepcopy(trainer.m.value)}
    free = {k: copy.deepcopy(v) for k, v in ref.items()}
    norms = ppo_reference_update(ref, exp, cfg, CLIP)
    ppo_reference_update(free, exp, cfg, None)
    trainer.rollout = lambda prompts, seed: ro  # generation bypassed
    stats = trainer.step(0, [None] * len(ro), seed=0)

    assert min(norms) > 3 * CLIP  # the clip binds for both models
    assert stats.grad_norm_policy == pytest.approx([norms[0]], rel=1e-4)
    assert stats.grad_norm_value == pytest.approx([norms[1]], rel=1e-4)
    for k, model in (("policy", trainer.m.policy), ("value", trainer.m.value)):
        assert max_diff(model, ref[k]) < 2e-6, k
        assert max_diff(model, free[k]) > 1e-4, k  # the clip is visible in the weights


def test_value_model_starts_as_the_reward_model_and_the_reference_as_the_policy(
    tiny_model_factory,
):
    """EasyLM loads the value model (trunk and head) from the RM checkpoint and the reference
    from the SFT policy; both copies are independent of the originals afterwards."""
    reward_model, policy = tiny_model_factory(), tiny_policy()
    rm_state = {k: v.clone() for k, v in reward_model.state_dict().items()}
    policy_state = {k: v.clone() for k, v in policy.state_dict().items()}
    models = build_models(policy, reward_model)
    for got, want in ((models.value, rm_state), (models.reference, policy_state)):
        state = got.state_dict()
        assert state.keys() == want.keys()
        assert all(torch.equal(state[k], want[k]) for k in want)
    assert all(p.requires_grad for p in models.value.parameters())
    assert not any(p.requires_grad for p in models.reference.parameters())


def test_ppo_defaults_are_easylms():
    """The EasyLM PPO recipe (docs/fidelity.md section 9) as the config's defaults."""
    c = PPOConfig()
    assert (c.kl_coef, c.gamma, c.lam, c.cliprange, c.cliprange_value) == (
        0.05,
        1.0,
        0.95,
        0.2,
        0.2,
    )
    assert (c.vf_coef, c.value_loss_scale, c.no_eos_reward, c.temperature) == (0.1, 0.5, -10.0, 0.7)
    assert (c.whiten_advantages, c.whiten_rewards, c.grad_clip) == (True, False, 1.0)
    assert (c.betas, c.eps, c.prompts_per_step, c.mini_batch) == ([0.9, 0.95], 1e-8, 512, 64)
    assert (c.top_k, c.score_per_minibatch) == (50, True)


def test_rm_update_averages_over_all_pairs_of_the_update(tiny_model_factory):
    """engine.Trainer with two micro batches per update: the gradient (its pre-clip norm, logged
    as grad_norm) is that of the mean Bradley-Terry loss over the update's four pairs, i.e. one
    batch of total_batch pairs as in EasyLM, whatever the accumulation."""
    from types import SimpleNamespace

    import numpy as np

    from paper_repro.training.batching import BatchPlan
    from paper_repro.training.engine import Trainer
    from paper_repro.training.schedule import LRSchedule

    model = tiny_model_factory().train()
    reference = copy.deepcopy(model)
    chosen = [[1, 5, 6, 2], [1, 7, 2], [1, 3, 4, 5, 2], [1, 12, 2]]
    rejected = [[1, 8, 2], [1, 9, 10, 11, 2], [1, 13, 2], [1, 14, 15, 2]]
    pairs = SimpleNamespace(
        chosen=[np.array(c) for c in chosen], rejected=[np.array(r) for r in rejected]
    )
    rm = RMTrainConfig(activation_checkpointing=False)
    plan = BatchPlan(4, total_batch=4, micro_batch=2, order="seeded-randperm")
    schedule = LRSchedule(peak=1e-3, end_lr=1e-4, warmup=0, total=plan.num_updates)
    trainer = Trainer(TorchBackend(model, rm, device="cpu"), pairs, plan, schedule, PAD)
    result = trainer.fit()

    rm_loss(reference, collate_pairs(chosen, rejected, PAD)).backward()
    norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in reference.parameters()))
    assert result.final.micro_batches == 2
    assert result.final.grad_norm == pytest.approx(norm, rel=1e-4)
