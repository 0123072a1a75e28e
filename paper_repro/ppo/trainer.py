"""One PPO step as EasyLM ``llama_train_ppo.py`` runs it (docs/fidelity.md §9).

Per step: sample one response per prompt with the current policy (the whole step's prompts,
``prompts_per_step``), then for each PPO epoch walk the rollouts in order in mini-batches of
``mini_batch`` and make one optimizer update of policy and value per mini-batch.

Where the "old" quantities come from is a switch, ``ppo.score_per_minibatch``:

- ``True`` (EasyLM): rewards, old log-probs, reference log-probs, values, KL-penalised rewards,
  GAE and advantage whitening are computed *per mini-batch, right before its update*, with the
  current parameters (``ppo_forward_backward`` scores and differentiates in one call). The ratio
  therefore starts at exactly 1 and, with one PPO epoch, neither clip ever binds.
- ``False`` (textbook PPO / TRL): the whole rollout batch is scored once after generation and
  advantages are whitened over the whole batch.

Policy and value have their own AdamW (EasyLM keeps two train states): global-norm clipping per
model (optax ``clip_by_global_norm``, as in RM training), then AdamW with the warmup-then-constant
learning rate; both step from one backward of ``pg + vf_coef * vf``. Each update's pre-clip
gradient norms are logged (``StepStats.grad_norm_policy`` / ``grad_norm_value``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..config import PPOConfig
from ..training.backends import clip_by_global_norm
from ..training.modeling import rewards as pooled_rewards
from . import core
from .models import PPOModels
from .rollout import Rollout, generate, response_logits, response_values, token_logprobs


@dataclass
class Experience:
    """A scored slice of a rollout (everything detached)."""

    ro: Rollout
    old_logps: torch.Tensor
    ref_logps: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor  # per token, masked
    reward: torch.Tensor  # [B] after the no-EOS rule (EasyLM env/reward_mean)
    raw_reward: torch.Tensor  # [B] the RM output at the last token, before the rule
    score: torch.Tensor  # [B] reward * gain + bias
    entropy: torch.Tensor  # per token


@dataclass
class StepStats:
    """One PPO step; field names are the ``ppo/metrics.jsonl`` keys the report reads."""

    step: int
    reward_mean: float  # mean reward after the no-EOS rule (EasyLM env/reward_mean)
    reward_std: float
    raw_reward_mean: float  # RM output before the no-EOS rule
    score_mean: float
    kl: float  # mean over responses of the summed per-token KL (EasyLM objective/kl)
    kl_per_token: float
    entropy: float
    policy_loss: float
    value_loss: float
    total_loss: float
    clip_frac: float
    value_clip_frac: float
    approx_kl: float
    ratio_mean: float
    response_len: float
    no_eos_frac: float
    lr: float
    updates: int
    # pre-clip global gradient norm of each optimizer update of this step, in order
    grad_norm_policy: list[float]
    grad_norm_value: list[float]

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return asdict(self)


def adamw(model: torch.nn.Module, cfg: PPOConfig) -> torch.optim.AdamW:
    """AdamW with EasyLM's weight-decay mask: no decay on embeddings and norm scales (docs/fidelity.md §3)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def warmup_updates(cfg: PPOConfig, steps_per_epoch: int) -> int:
    """EasyLM: ceil(warmup_epochs x grad updates per epoch); updates per step =
    prompts_per_step / mini_batch x ppo_epochs."""
    per_step = cfg.prompts_per_step // cfg.mini_batch * cfg.ppo_epochs
    return math.ceil(cfg.warmup_ratio * steps_per_epoch * per_step)


class PPOTrainer:
    """One process (CPU or one GPU). ``ppo.distributed.DeepSpeedPPOTrainer`` is the multi-rank
    version; the stage drives both through the same methods."""

    name = "torch"
    rank = 0
    world_size = 1

    def __init__(
        self,
        cfg: PPOConfig,
        models: PPOModels,
        *,
        eos_id: int,
        pad_id: int,
        warmup: int,
        score_per_minibatch: bool = True,
    ):
        self.cfg, self.m = cfg, models
        self.eos_id, self.pad_id = eos_id, pad_id
        self.warmup = warmup
        self.score_per_minibatch = score_per_minibatch
        self.opt_policy = adamw(models.policy, cfg)
        self.opt_value = adamw(models.value, cfg)
        self.updates = 0  # optimizer updates so far (the schedule's clock)
        self.mini_batch = cfg.mini_batch  # rows per update in this process (DeepSpeed: per rank)

    # ---------------------------------------------------------------- model access
    # One process here; ``ppo.distributed.DeepSpeedPPOTrainer`` overrides these to run the same
    # step on DeepSpeed engines with each rank holding a slice of every mini-batch.
    def policy_logits(self, ro: Rollout) -> torch.Tensor:
        return response_logits(self.m.policy, ro)

    def reference_logits(self, ro: Rollout) -> torch.Tensor:
        return response_logits(self.m.reference, ro)

    def values(self, ro: Rollout) -> torch.Tensor:
        return response_values(self.m.value, ro)

    def rm_rewards(self, ro: Rollout) -> torch.Tensor:
        return pooled_rewards(self.m.reward, ro.input_ids, ro.attention_mask).float()

    all_sum: core.AllSum = None  # cross-rank sum; None in one process

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of all ranks (identity in one process)."""
        return t

    def global_mean(self, value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A per-rank masked mean over ``weight`` entries -> the mean over all ranks' entries."""
        return value

    # ---------------------------------------------------------------- rollout and scoring
    def rollout(self, prompts: Sequence[np.ndarray], seed: int) -> Rollout:
        c = self.cfg
        return generate(
            self.m.policy,
            prompts,
            pad_id=self.pad_id,
            eos_id=self.eos_id,
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_k=c.top_k,
            seed=seed,
        )

    @torch.no_grad()
    def score(self, ro: Rollout) -> Experience:
        """Reward, KL-penalised per-token rewards, values and (whitened) advantages of ``ro``."""
        c = self.cfg
        mask = ro.response_mask
        # RM on [prompt ; response], read at the last real token (EasyLM; no BOS, docs/fidelity.md §9).
        raw = self.rm_rewards(ro)
        rows = torch.arange(len(ro), device=raw.device)
        last_tok = ro.response_ids[rows, core.last_index(mask)]
        reward = core.apply_no_eos_rule(raw, last_tok == self.eos_id, c.no_eos_reward)
        score = core.score_from_reward(reward, c.reward_gain, c.reward_bias)

        logits = self.policy_logits(ro)
        old_logps = token_logprobs(logits, ro.response_ids)
        entropy = core.entropy_from_logits(logits)
        del logits
        ref_logps = token_logprobs(self.reference_logits(ro), ro.response_ids)
        old_values = self.values(ro)

        rewards, kl = core.kl_penalized_rewards(old_logps, ref_logps, score, mask, c.kl_coef)
        adv, ret = core.compute_advantages(
            old_values,
            rewards,
            mask,
            gamma=c.gamma,
            lam=c.lam,
            whiten_rewards=c.whiten_rewards,
            whiten_advantages=c.whiten_advantages,
            all_sum=self.all_sum,
        )
        return Experience(
            ro, old_logps, ref_logps, old_values, adv, ret, kl, reward, raw, score, entropy
        )

    def score_batch(self, ro: Rollout) -> list[Experience]:
        """Textbook mode: score the whole rollout once, whiten over the whole batch, then slice."""
        exp = self.score(ro)
        out = []
        for start in range(0, len(ro), self.mini_batch):
            idx = slice(start, start + self.mini_batch)
            sub = ro.select(idx)
            width = sub.response_mask.shape[1]

            def cut(x: torch.Tensor) -> torch.Tensor:
                return x[idx, :width] if x.ndim == 2 else x[idx]  # noqa: B023

            out.append(
                Experience(
                    sub,
                    *(cut(getattr(exp, f.name)) for f in fields(Experience)[1:]),  # all but ro
                )
            )
        return out

    # ---------------------------------------------------------------- update
    def lr(self) -> float:
        return core.warmup_constant_lr(self.updates, self.cfg.lr, self.warmup)

    def update(self, exp: Experience) -> tuple[core.LossParts, tuple[float, float]]:
        """One optimizer update of policy and value; returns the loss parts and the (policy,
        value) gradient norms before clipping."""
        c, ro = self.cfg, exp.ro
        lr = self.lr()
        self.train_mode(True)
        logps = token_logprobs(self.policy_logits(ro), ro.response_ids)
        values = self.values(ro)
        parts = core.ppo_loss(
            logps,
            exp.old_logps,
            values,
            exp.old_values,
            exp.advantages,
            exp.returns,
            ro.response_mask,
            cliprange=c.cliprange,
            cliprange_value=c.cliprange_value,
            vf_coef=c.vf_coef,
            value_loss_scale=c.value_loss_scale,
        )
        if not torch.isfinite(parts.total):
            raise FloatingPointError(f"PPO loss is {parts.total.item()} at update {self.updates}")
        norms = self.optimize(parts, ro.response_mask, lr)
        self.train_mode(False)
        self.updates += 1
        return parts, norms

    def train_mode(self, on: bool) -> None:
        self.m.policy.train(on)
        self.m.value.train(on)

    def optimize(self, parts: core.LossParts, mask: torch.Tensor, lr: float) -> tuple[float, float]:
        """One backward of ``pg + vf_coef * vf``, per-model global-norm clipping, both AdamW;
        returns the (policy, value) gradient norms before clipping."""
        for opt in (self.opt_policy, self.opt_value):
            for g in opt.param_groups:
                g["lr"] = lr
        self.opt_policy.zero_grad(set_to_none=True)
        self.opt_value.zero_grad(set_to_none=True)
        parts.total.backward()
        norm_policy = clip_by_global_norm(list(self.m.policy.parameters()), self.cfg.grad_clip)
        norm_value = clip_by_global_norm(list(self.m.value.parameters()), self.cfg.grad_clip)
        self.opt_policy.step()
        self.opt_value.step()
        return norm_policy, norm_value

    def step(self, step: int, prompts: Sequence[np.ndarray], seed: int) -> StepStats:
        """Rollout ``prompts`` (seeded by ``seed``), then ``ppo_epochs`` passes of mini-batch updates."""
        c = self.cfg
        if len(prompts) % self.mini_batch:
            raise ValueError(
                f"{len(prompts)} prompts are not divisible by mini_batch {self.mini_batch}"
            )
        lr_first = self.lr()
        ro = self.rollout(prompts, seed)
        logs: list[tuple[Experience, core.LossParts]] = []
        norms: list[tuple[float, float]] = []
        for _ in range(c.ppo_epochs):
            if self.score_per_minibatch:  # lazily: each scored right after the previous update
                batches = (
                    self.score(ro.select(slice(start, start + self.mini_batch)))
                    for start in range(0, len(ro), self.mini_batch)
                )
            else:
                batches = iter(self.score_batch(ro))
            for exp in batches:
                parts, norm = self.update(exp)
                logs.append((exp, parts))
                norms.append(norm)
        return self._stats(step, logs, lr_first, norms)

    def _stats(
        self,
        step: int,
        logs: list[tuple[Experience, core.LossParts]],
        lr: float,
        norms: list[tuple[float, float]],
    ) -> StepStats:
        """Step metrics over all ranks' rows: per-response values are gathered, per-token means
        are token-weighted across ranks, so the numbers do not depend on the world size."""

        def mean(values: list[torch.Tensor]) -> float:
            return float(torch.stack([v.detach().float() for v in values]).mean())

        def cat(name: str) -> torch.Tensor:
            return self.gather(torch.cat([getattr(e, name) for e, _ in logs]))

        masks = [e.ro.response_mask for e, _ in logs]
        tokens = [mk.sum().float() for mk in masks]

        def token_mean(values: list[torch.Tensor]) -> float:
            return mean(
                [
                    self.global_mean(v.detach().float(), n)
                    for v, n in zip(values, tokens, strict=True)
                ]
            )

        reward = cat("reward")
        return StepStats(
            step=step,
            reward_mean=float(reward.mean()),
            reward_std=float(reward.std(unbiased=False)),
            raw_reward_mean=float(cat("raw_reward").mean()),
            score_mean=float(cat("score").mean()),
            kl=mean([self.gather(e.kl.sum(-1)).mean() for e, _ in logs]),
            kl_per_token=token_mean(
                [core.masked_mean(e.kl, mk) for (e, _), mk in zip(logs, masks, strict=True)]
            ),
            entropy=token_mean(
                [core.masked_mean(e.entropy, mk) for (e, _), mk in zip(logs, masks, strict=True)]
            ),
            policy_loss=token_mean([p.policy for _, p in logs]),
            value_loss=token_mean([p.value for _, p in logs]),
            total_loss=token_mean([p.total for _, p in logs]),
            clip_frac=token_mean([p.clip_frac for _, p in logs]),
            value_clip_frac=token_mean([p.value_clip_frac for _, p in logs]),
            approx_kl=token_mean([p.approx_kl for _, p in logs]),
            ratio_mean=token_mean([p.ratio_mean for _, p in logs]),
            response_len=float(self.gather(torch.cat([mk.sum(-1) for mk in masks])).float().mean()),
            no_eos_frac=float(
                self.gather(torch.cat([(~e.ro.has_eos).float() for e, _ in logs])).mean()
            ),
            lr=lr,
            updates=self.updates,
            grad_norm_policy=[n[0] for n in norms],
            grad_norm_value=[n[1] for n in norms],
        )

    # ---------------------------------------------------------------- state (resume)
    def state_dict(self) -> dict:
        return {
            "policy": self.m.policy.state_dict(),
            "value": self.m.value.state_dict(),
            "opt_policy": self.opt_policy.state_dict(),
            "opt_value": self.opt_value.state_dict(),
            "updates": self.updates,
        }

    # The stage's backend-neutral surface (the DeepSpeed trainer writes ZeRO shards instead).
    def checkpoint_state(self) -> dict:
        return {**self.state_dict(), "backend": self.name, "world_size": self.world_size}

    write_shards = None  # Callable[[Path], None] | None: per-rank checkpoint files

    def restore(self, state: dict, folder) -> None:
        self.load_state_dict(state)

    def full_state_dict(self, which: str = "policy") -> dict[str, torch.Tensor] | None:
        model = self.m.policy if which == "policy" else self.m.value
        return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}

    def eval_models(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.m.policy, self.m.reward

    @contextmanager
    def generation_policy(self) -> Iterator[tuple[torch.nn.Module, bool]]:
        """(policy, synced_gpus) to sample with; the DeepSpeed trainer gathers under ZeRO-3."""
        yield self.m.policy, False

    def any_true(self, flag: bool) -> bool:
        return bool(flag)

    def all_true(self, flag: bool) -> bool:
        return bool(flag)

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        self.m.policy.load_state_dict(state["policy"])
        self.m.value.load_state_dict(state["value"])
        self.opt_policy.load_state_dict(state["opt_policy"])
        self.opt_value.load_state_dict(state["opt_value"])
        self.updates = int(state["updates"])
