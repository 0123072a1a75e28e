"""One configuration schema for every stage: dataclasses + OmegaConf.

A preset is a small YAML file in ``paper_repro/presets/`` (optionally ``_base_: other-preset``);
``load_config(preset_or_file, overrides)`` merges schema <- preset chain <- ``key=value``
overrides, validates, and returns plain dataclasses. Derived values (accumulation steps, warmup
updates) are computed by ``derived()`` and shown, never written back into the config.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PRESET_DIR = Path(__file__).parent / "presets"

STAGES = (
    "download_base",
    "download_data",
    "prepare_data",
    "train_rm",
    "export_rm",
    "eval_rewardbench",
    "ppo",
    "report",
)

# Known dataset splits per hub id; a typo in a split name should fail before a cluster job starts.
KNOWN_SPLITS: dict[str, tuple[str, ...]] = {
    "allenai/tulu-2.5-preference-data": (
        "ultrafeedback_mean_aspects",
        "ultrafeedback_overall",
        "ultrafeedback_ultrachat",
        "ultrafeedback_evol_instruct",
        "ultrafeedback_flan_v2",
        "ultrafeedback_top_10k",
        "ultrafeedback_middle_10k",
        "ultrafeedback_lower_10k",
        "alpaca_farm_gpt4_pref",
        "alpaca_farm_human_pref",
        "capybara",
        "chatbot_arena_2023",
        "chatbot_arena_2024",
        "helpsteer",
        "hh_rlhf",
        "nectar",
        "orca_dpo_pairs",
        "shp_2",
        "stack_exchange_paired",
        "prm800k_pairs_phase2",
    ),
    "allenai/reward-bench": ("filtered", "train"),
    "allenai/tulu-2.5-prompts": (
        "ultrafeedback_prompts",
        "gsm8k_prompts",
        "math_prompts_20k",
        "ultrafeedback_code_math_prompts",
    ),
}


class ConfigError(ValueError):
    """A bad configuration; ``str(err)`` is one line naming the key path."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"config error at '{key}': {problem}")


# --------------------------------------------------------------------------- schema


@dataclass
class TinyArch:
    """Shape of the locally built tiny Llama (tiny preset only)."""

    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    sft_steps: int = 300  # causal-LM steps on fixture dialogues that make the tiny "SFT base"
    sft_lr: float = 3e-3
    seed: int = 0  # torch seed of the tiny base's init and SFT batches


@dataclass
class ModelConfig:
    source: Literal["hub", "local", "tiny"] = "hub"
    hub_id: str = "allenai/llama-3-tulu-2-70b"
    revision: str | None = None  # pinned commit sha (required for source=hub)
    local_path: str | None = None  # a local HF folder (source=local)
    arch: Literal["llama3-70b", "llama3-8b", "tiny"] = "llama3-70b"  # for planning without weights
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # compute dtype
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False
    tiny: TinyArch = field(default_factory=TinyArch)


@dataclass
class DatasetRef:
    hub_id: str = MISSING
    split: str = MISSING
    revision: str | None = None
    local_path: str | None = None  # a local file/folder instead of the hub


@dataclass
class DataConfig:
    source: Literal["hub", "local", "fixture"] = "hub"
    preference: DatasetRef = field(
        default_factory=lambda: DatasetRef(
            "allenai/tulu-2.5-preference-data", "ultrafeedback_mean_aspects"
        )
    )
    # Held-out preference pairs for RM accuracy during/after training. EasyLM trained on the whole
    # split; a fraction > 0 carves a seeded held-out set out of it (reported, off by default).
    heldout_fraction: float = 0.0
    heldout_seed: int = 42  # seed of that carve-out (data section: prepare_data reruns)
    rewardbench: DatasetRef = field(
        default_factory=lambda: DatasetRef("allenai/reward-bench", "filtered")
    )
    ppo_prompts: DatasetRef = field(
        default_factory=lambda: DatasetRef("allenai/tulu-2.5-prompts", "ultrafeedback_prompts")
    )
    max_length: int = 4096  # EasyLM seq_length; longer pairs are dropped, never truncated
    pad_token_id: int = 128255  # EasyLM tokenizer_pad_token_id: last reserved Llama 3 token
    expected_pairs: int = 60917  # rows before filtering, for `config show` / `plan` estimates
    ppo_prompt_max_length: int = 1024
    ppo_prompt_bos: bool = False  # EasyLM PPO prompts carry no BOS (spec 9, pitfall 4)


@dataclass
class RMTrainConfig:
    lr: float = 1e-5
    end_lr: float = 1e-6  # absolute lr reached at the last update (EasyLM end_lr)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: int = 1
    total_batch_pairs: int = 512  # pairs per optimizer update, independent of world size
    micro_batch_pairs: int = 8  # pairs per rank per forward (chosen+rejected = 2x rows)
    grad_clip: float = 1.0
    seed: int = 42
    backend: Literal["torch", "deepspeed"] = "deepspeed"
    zero_stage: int = 3
    activation_checkpointing: bool = True
    checkpoint_every: int = 10  # updates between preemption checkpoints
    eval_every: int = 0  # held-out accuracy every N updates (0: only after the last update)
    length_grouped: bool = False  # speed option; default keeps EasyLM's plain shuffled order
    head_init_std: float = 0.02


@dataclass
class EvalConfig:
    input_mode: Literal["training-format", "tokenizer-template"] = "training-format"
    template_max_length: int = 2048  # run_rm.py left-truncation length (tokenizer-template mode)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    token_budget: int = 16384  # padded tokens per scoring batch
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0


@dataclass
class PPOConfig:
    kl_coef: float = 0.05  # fixed beta, no adaptive controller (EasyLM)
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    value_loss_scale: float = 0.5
    lr: float = 1e-6  # policy and value
    warmup_ratio: float = 0.1  # of the first epoch's steps, then constant
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    prompts_per_step: int = 512
    mini_batch: int = 64
    ppo_epochs: int = 1
    epochs: int = 1
    max_steps: int | None = None  # cap on PPO steps (None = the full epochs)
    temperature: float = 0.7
    top_k: int = 50  # HF GenerationConfig default that applied in EasyLM's generate
    max_new_tokens: int = 1024
    no_eos_reward: float = -10.0  # EasyLM "EOS trick"
    reward_gain: float = 1.0
    reward_bias: float = 0.0
    eval_prompts: int = 256  # held-out prompts scored before/after for the report
    seed: int = 42
    backend: Literal["torch", "deepspeed"] = "deepspeed"
    zero_stage: int = 3
    checkpoint_every: int = 5
    policy_hub_id: str | None = None  # None: the SFT base of `model`
    policy_revision: str | None = None  # pinned commit of policy_hub_id (required with it)
    # EasyLM scores each mini-batch (rewards, old log-probs, values, GAE, whitening) right before
    # its update; False scores the whole rollout batch once (textbook PPO). See ppo/trainer.py.
    score_per_minibatch: bool = True


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: sqlite under results/<run>/ (embedded, nothing to start)
    experiment: str = "tulu25-rm-repro"


@dataclass
class StageResources:
    nodes: int = 1
    gpus_per_node: int = 0
    ranks_per_node: int = 0  # processes per node; 0 = gpus_per_node (or 1 on CPU)
    cpus_per_rank: int = 1
    mem_gb: int = 8  # per node
    gpu_mem_gb: int = 80
    runtime_min: int = 60

    @property
    def procs_per_node(self) -> int:
        return self.ranks_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


@dataclass
class ResourcesConfig:
    download_base: StageResources = field(default_factory=StageResources)
    download_data: StageResources = field(default_factory=StageResources)
    prepare_data: StageResources = field(default_factory=StageResources)
    train_rm: StageResources = field(default_factory=StageResources)
    export_rm: StageResources = field(default_factory=StageResources)
    eval_rewardbench: StageResources = field(default_factory=StageResources)
    ppo: StageResources = field(default_factory=StageResources)
    report: StageResources = field(default_factory=StageResources)


@dataclass
class ExportConfig:
    # Held-out pairs scored by both the in-training fp32 model and the exported folder after the
    # export (paper_repro/stages/export_rm.py). Each pair costs three 2-sequence forwards; lower
    # it for a 70B export on CPU.
    verify_pairs: int = 64


@dataclass
class ReproConfig:
    preset: str = MISSING
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rm: RMTrainConfig = field(default_factory=RMTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


# Config sections each stage reads: a change elsewhere must not rerun it (Snakemake params).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "download_base": ("model",),
    "download_data": ("data",),
    "prepare_data": ("model", "data"),
    "train_rm": ("model", "data", "rm"),
    "export_rm": ("model", "data", "rm", "export"),
    "eval_rewardbench": ("model", "data", "eval"),
    "ppo": ("model", "data", "ppo"),
    "report": ("preset", "description", "model", "data", "rm", "eval", "ppo"),
}


# --------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_chain(name: str, seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("preset", f"unknown preset '{name}' (known: {', '.join(list_presets())})")
    if name in seen:
        raise ConfigError("_base_", f"preset inheritance loop through '{name}'")
    body = yaml.safe_load(path.read_text()) or {}
    base = body.pop("_base_", None)
    chain = _preset_chain(base, seen + (name,)) if base else []
    return chain + [body]


def _schema_error(exc: OmegaConfBaseException) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    msg = str(exc).splitlines()[0]
    if "Key '" in msg and "not in" in msg or "ConfigKeyError" in type(exc).__name__:
        msg = "unknown key"
    return ConfigError(key, msg)


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ReproConfig:
    """Preset name or resolved YAML file, plus ``key=value`` overrides, validated."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        layers = [yaml.safe_load(path.read_text()) or {}]
    else:
        layers = _preset_chain(str(source))
        layers[-1].setdefault("preset", str(source))
    try:
        merged = OmegaConf.structured(ReproConfig)
        for layer in layers:
            merged = OmegaConf.merge(merged, OmegaConf.create(layer))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(item, "override must look like key.path=value")
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg: ReproConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise _schema_error(exc) from None
    validate(cfg)
    return cfg


COMMIT_SHA = re.compile(r"[0-9a-f]{7,40}")


def _check_revision(key: str, revision: str) -> None:
    """A pin must be a commit sha (7-40 lowercase hex): a branch name like 'main' moves."""
    if not COMMIT_SHA.fullmatch(str(revision)):
        raise ConfigError(key, f"revision {revision!r} is not a commit sha (7-40 hex characters)")


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
    for key in ("epochs", "total_batch_pairs", "micro_batch_pairs", "checkpoint_every"):
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


# --------------------------------------------------------------------------- output


def to_dict(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: ReproConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(cfg: ReproConfig, sections: tuple[str, ...] | None = None) -> str:
    """sha256 (first 16 hex) of the canonical YAML of the whole config or of some sections."""
    data = to_dict(cfg)
    if sections is not None:
        data = {k: data[k] for k in sections}
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def stage_hash(cfg: ReproConfig, stage: str) -> str:
    return config_hash(cfg, STAGE_SECTIONS[stage])


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config (for MLflow params)."""
    if is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in fields(obj)}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if is_dataclass(value) or isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Derived:
    world_size: int
    accumulation_steps: int
    est_updates: int
    est_warmup_updates: int


def derived(cfg: ReproConfig, kept_pairs: int | None = None) -> Derived:
    """Values computed from the config (never written back). EasyLM: updates = epochs x
    floor(N / total_batch), warmup = ceil(warmup_ratio x updates) (spec 6.1)."""
    world = cfg.resources.train_rm.world_size
    n = cfg.data.expected_pairs if kept_pairs is None else kept_pairs
    updates = cfg.rm.epochs * (n // cfg.rm.total_batch_pairs)
    return Derived(
        world_size=world,
        accumulation_steps=cfg.rm.total_batch_pairs // (cfg.rm.micro_batch_pairs * world),
        est_updates=updates,
        est_warmup_updates=math.ceil(cfg.rm.warmup_ratio * updates),
    )
