"""PPO on DeepSpeed (ZeRO-2/3), the same engine layer as RM training (``backends.py``).

Engines (DeepSpeed-Chat's layout):

- policy and value: DeepSpeed *training* engines, each with its own torch AdamW
  (``backends.make_adamw``: EasyLM betas/eps and weight-decay mask), DeepSpeed global-norm clipping
  at ``ppo.grad_clip``; the lr (warmup, then constant; ``core.warmup_constant_lr``) is set on the
  optimizer before every update, as ``backends.DeepSpeedBackend.step`` does.
- reference policy and reward model (frozen): with ZeRO-3, DeepSpeed *inference-only* engines (no
  optimizer; parameters partitioned like the trainable ones, so a 70B RM never sits whole on a
  rank); with ZeRO-2, plain replicated modules on the rank's device (ZeRO-2 shards optimizer state
  only, and frozen models have none).

All four are loaded from disk (policy and reference from the SFT folder, RM and value from the RM
folder) after a ``HfDeepSpeedConfig`` is alive, so ZeRO-3 partitions them while loading; a
``deepcopy`` of a partitioned model would not work.

Data parallelism: every global mini-batch of ``mini_batch`` rollouts is split over the ranks,
``mini_batch / world`` rows each (``rank_slice``); the ranks' prompts of a step are the union of
their mini-batch slices, so one PPO update sees exactly the rows the one-process trainer sees.
Advantage whitening statistics and token means are reduced over ranks (``core.masked_mean`` with
``all_sum``), and every rank's loss is rescaled so that DeepSpeed's gradient *average* over ranks is
the gradient of the masked mean over all tokens of the mini-batch. The result therefore does not
depend on the world size (tests/integration/test_ppo_deepspeed.py checks it against the torch
trainer).

Generation (``ppo.generation``; each rank samples with its own seed,
``seed + RANK_SEED_STRIDE * rank``, and both modes draw the same random numbers for the same
logits, so they give the same tokens):

- ``gathered``: ``whole_policy`` all-gathers the policy's full weights once per rollout phase
  (``deepspeed.zero.GatheredParameters``), takes ZeRO-3's per-module fetch/release hooks off the
  module, runs HF ``generate`` with its KV cache and no collective per token, then puts the hooks
  back and lets the gathered copies go. DeepSpeed ships the same recipe
  (deepspeed/runtime/zero/stage3.py ``unwrap_model_for_generation``), as does TRL
  (trl/models/utils.py ``unwrap_model_for_generation``); DeepSpeed-Chat's hybrid engine gathers
  per layer group for the same reason. Costs one full policy in memory per GPU while sampling.
- ``synced``: HF ``generate`` on the partitioned module with ``synced_gpus``: every forward
  all-gathers every layer again, i.e. one gather of the whole policy per generated token, and a
  rank that finishes early keeps running forwards until all ranks are done. For a policy that
  fits on no GPU whole.

Under ZeRO-2 the weights are never partitioned and both modes are plain ``generate``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, PPOConfig
from .models import PPOModels, freeze, load_policy, load_reward_model
from .rollout import Rollout, generate, response_logits
from .trainer import PPOTrainer

RANK_SEED_STRIDE = 1_000_003  # sampling seed of rank r = step seed + r * stride
CKPT_TAG = "deepspeed"


@dataclass(frozen=True)
class _EngineBatch:
    """What ``backends.deepspeed_config`` reads, in PPO's units: rollouts per optimizer update."""

    total_batch_pairs: int
    micro_batch_pairs: int
    zero_stage: int
    grad_clip: float


def per_rank_sizes(p: PPOConfig, world_size: int) -> tuple[int, int]:
    """(prompts per rank per step, mini-batch rows per rank); a ConfigError unless both divide."""
    for key, value in (
        ("ppo.prompts_per_step", p.prompts_per_step),
        ("ppo.mini_batch", p.mini_batch),
    ):
        if value % world_size:
            raise ConfigError(
                key,
                f"{value} is not divisible by the world size {world_size}: every rank takes an "
                "equal slice of each PPO mini-batch",
            )
    return p.prompts_per_step // world_size, p.mini_batch // world_size


def rank_slice(items: Sequence[Any], mini_batch: int, rank: int, world_size: int) -> list[Any]:
    """This rank's rows of a step: slice ``rank`` of every global mini-batch, in order."""
    if len(items) % mini_batch or mini_batch % world_size:
        raise ValueError(
            f"{len(items)} rows, mini-batch {mini_batch}, world size {world_size}: need "
            "rows % mini_batch == 0 and mini_batch % world_size == 0"
        )
    m = mini_batch // world_size
    out: list[Any] = []
    for start in range(0, len(items), mini_batch):
        out.extend(items[start + rank * m : start + (rank + 1) * m])
    return out


def ppo_deepspeed_config(p: PPOConfig, *, world_size: int, compute_dtype: str) -> dict[str, Any]:
    from ..training.backends import deepspeed_config

    if p.zero_stage not in (2, 3):
        raise ConfigError(
            "ppo.zero_stage", f"{p.zero_stage}; the PPO DeepSpeed backend runs ZeRO-2 or 3"
        )
    _, micro = per_rank_sizes(p, world_size)
    shape = _EngineBatch(p.mini_batch, micro, p.zero_stage, p.grad_clip)
    return deepspeed_config(shape, world_size=world_size, compute_dtype=compute_dtype)


@contextmanager
def whole_policy(engine) -> Iterator[torch.nn.Module]:
    """The module of a ZeRO-3 training ``engine`` with its full weights on every rank and ZeRO's
    per-module hooks detached, for forwards that must not gather (collective) per call. Every
    rank must enter together (the gather is a collective); nothing may be modified inside
    (``modifier_rank=None``: the gathered copies are dropped on exit, not scattered back)."""
    import deepspeed

    offload = engine.optimizer.parameter_offload
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        for p in params:  # no submodule is "running": nothing may re-partition mid-generate
            p.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield engine.module
        finally:
            # Re-register the fetch/release hooks; this also invalidates the recorded module trace
            # (the generate forwards were not traced), so the next training forward re-records it.
            offload._register_deepspeed_module(offload.module)


class DeepSpeedPPOTrainer(PPOTrainer):
    """``PPOTrainer`` whose models are DeepSpeed engines; ``step`` takes this rank's prompts."""

    name = "deepspeed"

    def __init__(
        self,
        cfg: PPOConfig,
        policy_dir: str | Path,
        rm_dir: str | Path,
        *,
        eos_id: int,
        pad_id: int,
        warmup: int,
        compute_dtype: str = "float32",
        score_per_minibatch: bool = True,
    ):
        import deepspeed
        from transformers.integrations import HfDeepSpeedConfig

        from ..training.backends import (
            ScoreModule,
            init_deepspeed_distributed,
            make_adamw,
            safe_checkpoint_loads,
        )

        self.dist, self.rank, self.world_size = init_deepspeed_distributed()
        self.config = ppo_deepspeed_config(
            cfg, world_size=self.world_size, compute_dtype=compute_dtype
        )
        self.zero3 = cfg.zero_stage == 3
        # Must stay referenced while from_pretrained runs (transformers holds it by weakref) and
        # while generate runs (it reads it to know that ZeRO-3 is on).
        self._hf_ds_config = HfDeepSpeedConfig(self.config) if self.zero3 else None

        self.cfg, self.eos_id, self.pad_id, self.warmup = cfg, eos_id, pad_id, warmup
        self.score_per_minibatch = score_per_minibatch
        self.updates = 0
        self.mini_batch = cfg.mini_batch // self.world_size

        policy = load_policy(policy_dir, compute_dtype)
        reference = freeze(load_policy(policy_dir, compute_dtype))
        reward = freeze(load_reward_model(rm_dir, compute_dtype))
        value = load_reward_model(rm_dir, compute_dtype)  # trunk and score head of the RM
        for model in (policy, value):
            model.requires_grad_(True)
            if cfg.activation_checkpointing:  # as backends.py does for RM training
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
        self.m = PPOModels(policy=policy, reference=reference, reward=reward, value=value)

        def train_engine(module: torch.nn.Module, hf_model: torch.nn.Module):
            engine, *_ = deepspeed.initialize(
                model=module, optimizer=make_adamw(hf_model, cfg), config=copy.deepcopy(self.config)
            )
            safe_checkpoint_loads(engine)
            return engine

        self.policy_engine = train_engine(policy, policy)
        self.value_engine = train_engine(ScoreModule(value), value)
        if self.zero3:
            self.reference_fwd = deepspeed.initialize(
                model=reference, config=copy.deepcopy(self.config)
            )[0]
            self.reward_fwd = deepspeed.initialize(
                model=ScoreModule(reward), config=copy.deepcopy(self.config)
            )[0]
        else:
            device = self.policy_engine.device
            self.reference_fwd = reference.to(device)
            self.reward_fwd = ScoreModule(reward).to(device)
        self.device = self.policy_engine.device

    # ---------------------------------------------------------------- models
    @contextmanager
    def generation_policy(self) -> Iterator[tuple[torch.nn.Module, bool]]:
        """(policy module, synced_gpus) for sampling under ``ppo.generation``; collective."""
        if self.zero3 and self.cfg.generation == "gathered":
            with whole_policy(self.policy_engine) as module:
                yield module, False
        else:
            yield self.policy_engine.module, self.zero3 and self.world_size > 1

    def rollout(self, prompts: Sequence[np.ndarray], seed: int) -> Rollout:
        c = self.cfg
        with self.generation_policy() as (policy, synced):
            return generate(
                policy,
                prompts,
                pad_id=self.pad_id,
                eos_id=self.eos_id,
                max_new_tokens=c.max_new_tokens,
                temperature=c.temperature,
                top_k=c.top_k,
                seed=seed + RANK_SEED_STRIDE * self.rank,
                synced_gpus=synced,
            )

    def policy_logits(self, ro: Rollout) -> torch.Tensor:
        return response_logits(self.policy_engine, ro)

    def reference_logits(self, ro: Rollout) -> torch.Tensor:
        return response_logits(self.reference_fwd, ro)

    def values(self, ro: Rollout) -> torch.Tensor:
        scores = self.value_engine(ro.input_ids, ro.attention_mask)
        return scores[:, ro.prompt_width - 1 : -1].float()

    def rm_rewards(self, ro: Rollout) -> torch.Tensor:
        from ..training.modeling import pool_last

        return pool_last(
            self.reward_fwd(ro.input_ids, ro.attention_mask).float(), ro.attention_mask
        )

    def train_mode(self, on: bool) -> None:
        self.policy_engine.train(on)
        self.value_engine.train(on)

    # ---------------------------------------------------------------- reductions
    def all_sum(self, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = t.detach().to(torch.float64).clone()
        self.dist.all_reduce(out, op=self.dist.ReduceOp.SUM)
        return out.to(t.dtype)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        self.dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def global_mean(self, value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        both = self.all_sum(torch.stack([value.float() * weight.float(), weight.float()]))
        return both[0] / both[1]

    def any_true(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0])
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item() > 0.5)

    def all_true(self, flag: bool) -> bool:
        return not self.any_true(not flag)

    def barrier(self) -> None:
        self.dist.barrier()

    # ---------------------------------------------------------------- update
    def optimize(self, parts, mask: torch.Tensor, lr: float) -> tuple[float, float]:
        """DeepSpeed averages gradients over ranks; scaling each rank's masked-mean loss by
        ``world * n_rank / n_all`` turns that average into the gradient of the masked mean over
        all ``n_all`` response tokens of the mini-batch (what one process computes). Policy and
        value graphs are disjoint, so backward(pg) + backward(vf_coef * vf) is backward(total).
        Returns the (policy, value) global gradient norms before DeepSpeed's clipping."""
        n = mask.sum().to(torch.float64)
        factor = float(n * self.world_size / self.all_sum(n.reshape(1))[0])
        for engine in (self.policy_engine, self.value_engine):
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
        self.policy_engine.backward(parts.policy * factor)
        self.value_engine.backward(parts.value * (self.cfg.vf_coef * factor))
        self.policy_engine.step()
        self.value_engine.step()
        norms = [e.get_global_grad_norm() for e in (self.policy_engine, self.value_engine)]
        return tuple(float("nan") if n is None else float(n) for n in norms)  # type: ignore[return-value]

    # ---------------------------------------------------------------- state
    def checkpoint_state(self) -> dict:
        return {"updates": self.updates, "backend": self.name, "world_size": self.world_size}

    def write_shards(self, folder: Path) -> None:
        """ZeRO checkpoints (weights + optimizer shards) of both trainable engines; collective."""
        for sub, engine in (("policy", self.policy_engine), ("value", self.value_engine)):
            engine.save_checkpoint(str(folder / sub), tag=CKPT_TAG, save_latest=False)

    def restore(self, state: dict, folder: Path) -> None:
        for sub, engine in (("policy", self.policy_engine), ("value", self.value_engine)):
            path, _ = engine.load_checkpoint(
                str(folder / sub),
                tag=CKPT_TAG,
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
            )
            if path is None:
                raise RuntimeError(f"{folder / sub}: DeepSpeed could not load the {sub} checkpoint")
        self.updates = int(state["updates"])

    def full_state_dict(self, which: str = "policy") -> dict[str, torch.Tensor] | None:
        """fp32 master weights of the policy or value model, gathered one tensor at a time (every
        rank must call it); rank 0 gets the HF-keyed dict, other ranks None."""
        from deepspeed.utils import safe_get_full_fp32_param

        model = self.m.policy if which == "policy" else self.m.value
        out: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            full = safe_get_full_fp32_param(p)
            if self.rank == 0:
                out[name] = full.detach().float().cpu().clone()
        return out if self.rank == 0 else None

    def eval_models(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(policy, reward model) as HF modules for ``evaluate_policy`` (ZeRO-3 hooks gather)."""
        return self.m.policy, self.m.reward

    def close(self) -> None:
        self.dist.barrier()
