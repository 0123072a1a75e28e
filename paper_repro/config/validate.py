"""Semantic checks the type system cannot express; each failure is a ``ConfigError`` naming the
key path."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from ..errors import ReproError
from .schema import KNOWN_SPLITS, STAGES, DatasetRef, ReproConfig, StageResources


class ConfigError(ReproError, ValueError):
    """A bad configuration; ``str(err)`` is one line naming the key path."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"config error at '{key}': {problem}")


COMMIT_SHA = re.compile(r"[0-9a-f]{7,40}")


def check_revision(key: str, revision: str) -> None:
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


@dataclass(frozen=True)
class Range:
    """Where a numeric key may lie; NaN and +-inf are never inside."""

    text: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below


FINITE = Range("finite")
POSITIVE = Range("positive (> 0)", lo=0, lo_open=True)
NON_NEGATIVE = Range(">= 0", lo=0)
COUNT = Range(">= 1", lo=1)
LR = Range("positive (> 0) and at most 1", lo=0, hi=1, lo_open=True)
FRACTION = Range("in [0, 1]", lo=0, hi=1)
FRACTION_BELOW_1 = Range("in [0, 1)", lo=0, hi=1, hi_open=True)
ZERO_STAGE = Range("0, 1, 2 or 3 (DeepSpeed ZeRO stage)", lo=0, hi=3)

# Every numeric key of the schema and its range (``resources.*`` = every stage; a list key applies
# to each element). tests/unit/test_config.py fails when a numeric key has no entry here.
NUMERIC_RANGES: dict[str, Range] = {
    **{f"model.tiny.{k}": COUNT for k in ("hidden_size", "intermediate_size")},
    **{f"model.tiny.{k}": COUNT for k in ("num_hidden_layers", "num_attention_heads")},
    "model.tiny.num_key_value_heads": COUNT,
    "model.tiny.sft_steps": NON_NEGATIVE,
    "model.tiny.sft_lr": LR,
    "model.tiny.sft_batch": COUNT,
    "model.tiny.seed": NON_NEGATIVE,
    "data.heldout_fraction": FRACTION_BELOW_1,
    "data.heldout_seed": NON_NEGATIVE,
    "data.max_length": COUNT,
    "data.pad_token_id": NON_NEGATIVE,
    "data.expected_pairs": COUNT,
    "data.ppo_prompt_max_length": COUNT,
    "rm.lr": LR,
    "rm.end_lr": NON_NEGATIVE,
    "rm.betas": FRACTION_BELOW_1,
    "rm.eps": POSITIVE,
    "rm.weight_decay": NON_NEGATIVE,
    "rm.warmup_ratio": FRACTION_BELOW_1,
    "rm.epochs": COUNT,
    "rm.total_batch_pairs": COUNT,
    "rm.micro_batch_pairs": COUNT,
    "rm.token_budget": COUNT,
    "rm.grad_clip": POSITIVE,
    "rm.seed": NON_NEGATIVE,
    "rm.zero_stage": ZERO_STAGE,
    "rm.checkpoint_every": COUNT,
    "rm.eval_every": Range(">= 0 (0 = only after the last update)", lo=0),
    "rm.head_init_std": POSITIVE,
    "eval.template_max_length": COUNT,
    "eval.token_budget": COUNT,
    "eval.bootstrap_samples": COUNT,
    "eval.bootstrap_seed": NON_NEGATIVE,
    "export.verify_pairs": COUNT,
    "reference.standin_seed": NON_NEGATIVE,
    "tracking.copy_model_max_mb": Range(">= 0 (MB; a larger export is referenced)", lo=0),
    "ppo.kl_coef": NON_NEGATIVE,
    "ppo.gamma": FRACTION,
    "ppo.lam": FRACTION,
    "ppo.cliprange": POSITIVE,
    "ppo.cliprange_value": POSITIVE,
    "ppo.vf_coef": NON_NEGATIVE,
    "ppo.value_loss_scale": NON_NEGATIVE,
    "ppo.lr": LR,
    "ppo.warmup_ratio": FRACTION_BELOW_1,
    "ppo.betas": FRACTION_BELOW_1,
    "ppo.eps": POSITIVE,
    "ppo.weight_decay": NON_NEGATIVE,
    "ppo.grad_clip": POSITIVE,
    "ppo.prompts_per_step": COUNT,
    "ppo.mini_batch": COUNT,
    "ppo.ppo_epochs": COUNT,
    "ppo.epochs": COUNT,
    "ppo.max_steps": Range(">= 1 or null (the full epochs)", lo=1),
    "ppo.temperature": POSITIVE,
    "ppo.top_k": Range(">= 0 (0 = no top-k filter)", lo=0),
    "ppo.max_new_tokens": COUNT,
    "ppo.no_eos_reward": FINITE,
    "ppo.reward_gain": POSITIVE,
    "ppo.reward_bias": FINITE,
    "ppo.eval_prompts": NON_NEGATIVE,
    "ppo.seed": NON_NEGATIVE,
    "ppo.zero_stage": ZERO_STAGE,
    "ppo.checkpoint_every": COUNT,
    "downstream.batch_size": COUNT,
    "downstream.limit": Range(">= 1 or null (every document)", lo=1),
    "downstream.vllm_gpu_memory_utilization": Range("in (0, 1]", lo=0, hi=1, lo_open=True),
    "downstream.bon.n": COUNT,
    "downstream.bon.temperature": POSITIVE,
    "downstream.bon.top_p": Range("in (0, 1]", lo=0, hi=1, lo_open=True),
    "downstream.bon.max_new_tokens": COUNT,
    "downstream.bon.seed": NON_NEGATIVE,
    "downstream.rm_token_budget": COUNT,
    "downstream.bootstrap_samples": COUNT,
    "downstream.bootstrap_seed": NON_NEGATIVE,
    "resources.*.nodes": COUNT,
    "resources.*.gpus_per_node": NON_NEGATIVE,
    "resources.*.ranks_per_node": Range(">= 0 (0 = one per GPU, or 1 on CPU)", lo=0),
    "resources.*.cpus_per_rank": COUNT,
    "resources.*.mem_gb": COUNT,
    "resources.*.gpu_mem_gb": COUNT,
    "resources.*.runtime_min": COUNT,
}


def numeric_leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every field of a config dataclass declared int, float or a list of
    them (optional ones included)."""
    for f in fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if is_dataclass(value):
            yield from numeric_leaves(value, key + ".")
        elif NUMERIC_TYPE.search(str(f.type)):
            yield key, value


NUMERIC_TYPE = re.compile(r"\b(int|float)\b")  # field annotations are strings (PEP 563)


def range_key(key: str) -> str:
    """The NUMERIC_RANGES entry of a key (``resources.<stage>.x`` -> ``resources.*.x``)."""
    parts = key.split(".")
    return ".".join(["resources", "*", *parts[2:]]) if parts[0] == "resources" else key


# No count, size or index of this pipeline comes near 2^31 (a 70B run has ~61k pairs, 4096-token
# pairs, 128k-id vocabularies); a larger integer is a typo that would surface as an allocation
# failure hours into a job. Seeds go to numpy, which takes 0 <= seed < 2^32.
MAX_INT = 2**31 - 1
MAX_SEED = 2**32 - 1


def check_numbers(cfg: ReproConfig) -> None:
    """Every number finite and inside its range (NaN/inf and out-of-range values name the key)."""
    for key, value in numeric_leaves(cfg):
        rule = NUMERIC_RANGES.get(range_key(key))
        if rule is None or value is None:  # None: an optional key left unset (ppo.max_steps)
            continue
        for x in value if isinstance(value, list) else [value]:
            if not isinstance(x, int | float) or isinstance(x, bool) or x not in rule:
                raise ConfigError(key, f"must be {rule.text}, got {x!r}")
            limit = MAX_SEED if key.endswith("seed") else MAX_INT
            if isinstance(x, int) and abs(x) > limit:
                raise ConfigError(key, f"must be {rule.text} and at most {limit:,}, got {x!r}")


def validate(cfg: ReproConfig) -> None:
    """Semantic checks the type system can't express; raises ConfigError naming the key."""
    check_numbers(cfg)
    m, d = cfg.model, cfg.data
    if m.source == "hub" and not m.revision:
        raise ConfigError("model.revision", "a hub model needs a pinned revision (commit sha)")
    if m.source == "hub":
        check_revision("model.revision", m.revision)
    if m.source == "local" and not m.local_path:
        raise ConfigError("model.local_path", "source=local needs a folder")
    ref = cfg.reference
    if ref.source == "hub":
        if not ref.revision:
            raise ConfigError("reference.revision", "a hub model needs a pinned revision")
        check_revision("reference.revision", ref.revision)
    if ref.source == "local" and not ref.local_path:
        raise ConfigError("reference.local_path", "source=local needs a folder")
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
            check_revision(f"data.{name}.revision", ref.revision)
    for sec in ("rm", "ppo"):
        if len(getattr(cfg, sec).betas) != 2:
            raise ConfigError(
                f"{sec}.betas", f"need two values in [0, 1), got {getattr(cfg, sec).betas}"
            )
    if cfg.rm.end_lr > cfg.rm.lr:
        raise ConfigError(
            "rm.end_lr", f"a cooldown needs 0 <= end_lr <= lr ({cfg.rm.end_lr} > {cfg.rm.lr})"
        )
    world = cfg.resources.train_rm.world_size
    if cfg.rm.total_batch_pairs % (cfg.rm.micro_batch_pairs * world):
        raise ConfigError(
            "rm.total_batch_pairs",
            f"{cfg.rm.total_batch_pairs} is not divisible by micro_batch_pairs x world size "
            f"({cfg.rm.micro_batch_pairs} x {world})",
        )
    p = cfg.ppo
    if p.prompts_per_step % p.mini_batch:
        raise ConfigError(
            "ppo.prompts_per_step",
            f"{p.prompts_per_step} is not divisible by mini_batch {p.mini_batch}",
        )
    if p.policy_hub_id and not p.policy_revision:
        raise ConfigError(
            "ppo.policy_revision", "a hub policy needs a pinned revision (commit sha)"
        )
    if p.generation == "vllm":
        raise ConfigError(
            "ppo.generation",
            "vllm is not available yet; use gathered (the policy whole on each GPU) or synced",
        )
    for stage in STAGES:
        _check_fit(cfg, stage)
    _check_downstream(cfg)


# lm-eval task and group names: letters, digits, '_', '-', '.' (never a path or a blank)
TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _check_downstream(cfg: ReproConfig) -> None:
    ds = cfg.downstream
    if ds.judge_endpoint:
        # refused loudly rather than skipped: the judge-scored tasks have no implementation here
        raise ConfigError(
            "downstream.judge_endpoint",
            "judge-scored tasks (AlpacaEval 1/2, XSTest) are not supported by eval_downstream "
            "yet; unset it (they are then listed as not run)",
        )
    if not ds.tasks:
        raise ConfigError("downstream.tasks", "no task to evaluate")
    for key, tasks in (("downstream.tasks", ds.tasks), ("downstream.bon.tasks", ds.bon.tasks)):
        for task in tasks:
            if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
                raise ConfigError(key, f"{task!r} is not an lm-eval task name")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(key, "a task is listed twice")
    if extra := sorted(set(ds.bon.tasks) - set(ds.tasks)):
        raise ConfigError("downstream.bon.tasks", f"not in downstream.tasks: {', '.join(extra)}")
    for task, pin in ds.datasets.items():
        if pin.revision is not None:
            check_revision(f"downstream.datasets.{task}.revision", pin.revision)


# Parameter counts of the architectures we plan for (meta-device count of the HF Llama shapes).
ARCH_PARAMS = {"llama3-70b": 70.55e9, "llama3-8b": 8.03e9, "tiny": 139_648}
BYTES_PER_PARAM_ZERO = 16  # bf16 weights + grads, fp32 master + Adam m and v (ZeRO paper, K=12)


def _check_fit(cfg: ReproConfig, stage: str) -> None:
    """Model states of a training stage must fit the GPUs it asks for (ZeRO-3 partitioning)."""
    res: StageResources = getattr(cfg.resources, stage)
    key = f"resources.{stage}"
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
