"""Semantic checks the type system cannot express; each failure is a ``ConfigError`` naming the
key path."""

from __future__ import annotations

import re

from .schema import KNOWN_SPLITS, STAGES, DatasetRef, ReproConfig, StageResources


class ConfigError(ValueError):
    """A bad configuration; ``str(err)`` is one line naming the key path."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"config error at '{key}': {problem}")


COMMIT_SHA = re.compile(r"[0-9a-f]{7,40}")


def _check_revision(key: str, revision: str) -> None:
    """A pin must be a commit sha (7-40 lowercase hex): a branch name like 'main' moves. A short
    one is resolved to the full commit on first download (``hub.revisions``) and recorded."""
    if not COMMIT_SHA.fullmatch(str(revision)):
        # YAML reads an unquoted all-digit sha as a number (0123456 becomes 42798)
        hint = "; quote an all-digit sha" if str(revision).isdigit() else ""
        raise ConfigError(
            key,
            f"revision {revision!r} is not a commit sha (7-40 hex characters; a short sha is "
            f"resolved to the full commit on first download){hint}",
        )


def validate(cfg: ReproConfig) -> None:
    """Semantic checks the type system can't express; raises ConfigError naming the key."""
    m, d = cfg.model, cfg.data
    if m.source == "hub" and not m.revision:
        raise ConfigError("model.revision", "a hub model needs a pinned revision (commit sha)")
    if m.source == "hub":
        _check_revision("model.revision", m.revision)
    if m.source == "local" and not m.local_path:
        raise ConfigError("model.local_path", "source=local needs a folder")
    if m.trust_remote_code:
        raise ConfigError("model.trust_remote_code", "remote code is disabled in this package")
    for name in ("preference", "rewardbench", "ppo_prompts"):
        ref: DatasetRef = getattr(d, name)
        known = KNOWN_SPLITS.get(ref.hub_id)
        if known is not None and ref.split not in known:
            raise ConfigError(f"data.{name}.split", f"unknown split '{ref.split}' of {ref.hub_id}")
        if d.source == "hub" and not ref.revision:
            raise ConfigError(f"data.{name}.revision", "a hub dataset needs a pinned revision")
        if d.source == "hub":
            _check_revision(f"data.{name}.revision", ref.revision)
    if d.max_length <= 0:
        raise ConfigError("data.max_length", "must be positive")
    if not 0.0 <= d.heldout_fraction < 1.0:
        raise ConfigError("data.heldout_fraction", "must be in [0, 1)")
    if cfg.export.verify_pairs <= 0:
        raise ConfigError("export.verify_pairs", "must be positive")
    _check_optim("rm", cfg.rm.lr, cfg.rm.betas, cfg.rm.eps, cfg.rm.warmup_ratio, cfg.rm.grad_clip)
    if cfg.rm.end_lr < 0 or cfg.rm.end_lr > cfg.rm.lr:
        raise ConfigError(
            "rm.end_lr", f"a cooldown needs 0 <= end_lr <= lr ({cfg.rm.end_lr} > {cfg.rm.lr})"
        )
    for key in (
        "epochs",
        "total_batch_pairs",
        "micro_batch_pairs",
        "checkpoint_every",
        "token_budget",
    ):
        if getattr(cfg.rm, key) <= 0:
            raise ConfigError(f"rm.{key}", "must be positive")
    if cfg.rm.eval_every < 0:
        raise ConfigError("rm.eval_every", "must be >= 0 (0 = only after the last update)")
    if cfg.rm.zero_stage not in (0, 1, 2, 3):
        raise ConfigError("rm.zero_stage", "must be 0, 1, 2 or 3")
    world = cfg.resources.train_rm.world_size
    if cfg.rm.total_batch_pairs % (cfg.rm.micro_batch_pairs * world):
        raise ConfigError(
            "rm.total_batch_pairs",
            f"{cfg.rm.total_batch_pairs} is not divisible by micro_batch_pairs x world size "
            f"({cfg.rm.micro_batch_pairs} x {world})",
        )
    p = cfg.ppo
    _check_optim("ppo", p.lr, p.betas, p.eps, p.warmup_ratio, p.grad_clip)
    if p.prompts_per_step % p.mini_batch:
        raise ConfigError(
            "ppo.prompts_per_step",
            f"{p.prompts_per_step} is not divisible by mini_batch {p.mini_batch}",
        )
    if p.temperature <= 0:
        raise ConfigError("ppo.temperature", "must be positive")
    if p.policy_hub_id and not p.policy_revision:
        raise ConfigError(
            "ppo.policy_revision", "a hub policy needs a pinned revision (commit sha)"
        )
    if cfg.eval.template_max_length <= 0 or cfg.eval.token_budget <= 0:
        raise ConfigError("eval.token_budget", "must be positive")
    for stage in STAGES:
        _check_fit(cfg, stage)


def _check_optim(
    sec: str, lr: float, betas: list[float], eps: float, warmup: float, clip: float
) -> None:
    if lr <= 0:
        raise ConfigError(f"{sec}.lr", f"learning rate must be positive, got {lr}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"{sec}.betas", f"need two values in [0, 1), got {list(betas)}")
    if eps <= 0:
        raise ConfigError(f"{sec}.eps", "must be positive")
    if not 0.0 <= warmup < 1.0:
        raise ConfigError(f"{sec}.warmup_ratio", f"must be in [0, 1), got {warmup}")
    if clip <= 0:
        raise ConfigError(f"{sec}.grad_clip", "must be positive")


# Parameter counts of the architectures we plan for (meta-device count of the HF Llama shapes).
ARCH_PARAMS = {"llama3-70b": 70.55e9, "llama3-8b": 8.03e9, "tiny": 0.5e6}
BYTES_PER_PARAM_ZERO = 16  # bf16 weights + grads, fp32 master + Adam m and v (ZeRO paper, K=12)


def _check_fit(cfg: ReproConfig, stage: str) -> None:
    """Model states of a training stage must fit the GPUs it asks for (ZeRO-3 partitioning)."""
    res: StageResources = getattr(cfg.resources, stage)
    key = f"resources.{stage}"
    if res.nodes <= 0 or res.cpus_per_rank <= 0 or res.runtime_min <= 0 or res.mem_gb <= 0:
        raise ConfigError(key, "nodes, cpus_per_rank, mem_gb and runtime_min must be positive")
    if res.gpus_per_node and res.ranks_per_node and res.ranks_per_node != res.gpus_per_node:
        raise ConfigError(f"{key}.ranks_per_node", "with GPUs, run one rank per GPU")
    if stage not in ("train_rm", "ppo") or not res.gpus_per_node:
        return
    zero = cfg.rm.zero_stage if stage == "train_rm" else cfg.ppo.zero_stage
    params = ARCH_PARAMS[cfg.model.arch] * (1 if stage == "train_rm" else 2)  # policy + value
    shards = res.world_size if zero == 3 else 1
    per_gpu_gb = params * BYTES_PER_PARAM_ZERO / shards / 1e9
    if per_gpu_gb > res.gpu_mem_gb:
        raise ConfigError(
            key,
            f"{cfg.model.arch} model states need ~{per_gpu_gb:.0f} GB per GPU on {res.world_size} GPUs "
            f"(ZeRO-{zero}) but gpu_mem_gb is {res.gpu_mem_gb}; add nodes",
        )
