"""The configuration schema: one dataclass per section, each default commented with its source.

``STAGE_SECTIONS`` says which sections each stage reads, so a change elsewhere never reruns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from omegaconf import MISSING

STAGES = (
    "download_base",
    "download_data",
    "prepare_data",
    "train_rm",
    "export_rm",
    "eval_rewardbench",
    "eval_reference",
    "ppo",
    "eval_downstream",
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


@dataclass
class TinyArch:
    """Shape of the locally built tiny Llama (tiny preset only)."""

    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    # "fixture": the shipped 512-id BPE; "llama3": the real Llama 3 tokenizer (128,256 ids, built
    # offline from the llama-models wheel, paper_repro/data/llama3_tokenizer.py) and a matching embedding.
    tokenizer: Literal["fixture", "llama3"] = "fixture"
    sft_steps: int = 300  # causal-LM steps on fixture dialogues that make the tiny "SFT base"
    sft_batch: int = 32  # dialogues per SFT step
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
    ppo_prompt_bos: bool = False  # EasyLM PPO prompts carry no BOS (docs/fidelity.md §9)


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
    # Pair order: "easylm" = the permutation EasyLM's seeded torch DataLoader drew (the original
    # run's update groups); "seeded-randperm" = torch.randperm seeded with seed + epoch.
    data_order: Literal["easylm", "seeded-randperm"] = "easylm"
    backend: Literal["torch", "deepspeed"] = "deepspeed"
    zero_stage: int = 3
    activation_checkpointing: bool = True
    checkpoint_every: int = 10  # updates between preemption checkpoints
    eval_every: int = 0  # held-out accuracy every N updates (0: only after the last update)
    length_grouped: bool = False  # speed option; default keeps EasyLM's plain shuffled order
    # Packed micro batches: the same pairs per update, concatenated without padding into forwards
    # of at most token_budget tokens per rank (batching.py). false: padded micro batches of
    # micro_batch_pairs pairs (EasyLM's layout, kept for comparison).
    packing: bool = True
    # Tokens per packed forward per rank. 16384 = 2 pairs x 2 sides x 4096: the worst case of the
    # 70B preset's padded micro batch, so packing never needs more activation memory.
    token_budget: int = 16384
    head_init_std: float = 0.02


@dataclass
class EvalConfig:
    input_mode: Literal["training-format", "tokenizer-template"] = "training-format"
    template_max_length: int = 2048  # run_rm.py left-truncation length (tokenizer-template mode)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    token_budget: int = 16384  # tokens per scoring forward (packed row; padded: rows x longest)
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0


@dataclass
class ReferenceConfig:
    """The published reward model that eval_reference scores with eval_rewardbench's code and
    ``eval`` settings, to judge the reproduction against the original and not only its card."""

    source: Literal["hub", "local", "tiny"] = "hub"
    hub_id: str = "allenai/llama-3-tulu-2-70b-uf-mean-rm"
    revision: str | None = None  # pinned commit sha (required for source=hub)
    local_path: str | None = None  # a local HF folder (source=local)
    standin_seed: int = 1  # source=tiny: rm.seed of the locally trained stand-in RM


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
    # How rollouts are sampled under ZeRO-3 (same sampling either way; ppo/distributed.py):
    # gathered = the policy's full weights all-gathered once per rollout phase, then generate with
    # no collective per token; synced = HF generate with synced_gpus (a per-layer all-gather for
    # every token; for a policy that fits no GPU whole); vllm = not available yet (refused).
    generation: Literal["gathered", "synced", "vllm"] = "gathered"
    # Recompute each decoder layer in the backward of policy and value (DeepSpeed backend): at
    # cluster scale the 70B value model's activations do not fit otherwise (`plan --stage ppo`).
    activation_checkpointing: bool = False
    # Architecture of the policy for `paper-repro plan` (None: model.arch, the RM's base).
    policy_arch: Literal["llama3-70b", "llama3-8b", "tiny"] | None = None


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: sqlite under results/<run>/ (embedded, nothing to start)
    experiment: str = "tulu25-rm-repro"
    # An exported RM up to this size is copied into the artifact store as a loadable MLflow model;
    # a larger one (a 70B export is 140 GB) is recorded by path and sha256 manifest only.
    copy_model_max_mb: int = 2048


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
    eval_reference: StageResources = field(default_factory=StageResources)
    ppo: StageResources = field(default_factory=StageResources)
    eval_downstream: StageResources = field(default_factory=StageResources)
    report: StageResources = field(default_factory=StageResources)


@dataclass
class ExportConfig:
    # Held-out pairs scored by both the in-training fp32 model and the exported folder after the
    # export (paper_repro/stages/export_rm.py). Each pair costs four 2-sequence forwards (six for
    # a bf16 export); lower it for a 70B export on CPU.
    verify_pairs: int = 64


@dataclass
class TaskDataPin:
    """A task's hub dataset, pinned: ``paper_repro.downstream.taskdata`` fetches it verified
    (sha256 lock) and points lm-eval's task at the local files."""

    hub_id: str = MISSING
    revision: str | None = None  # commit sha; None = unresolved: the task is refused


@dataclass
class BestOfNConfig:
    """Best-of-N from the SFT policy's samples, as the Tulu 2.5 paper evaluates reward models
    (arXiv 2406.09279). N = 16 is reward-bench's best-of-N setting (bon_eval/README.md: 16
    samples of Tulu-2-dpo-13b); the paper's own N could not be confirmed from a source read here."""

    n: int = 16
    temperature: float = 0.7  # sampling parameters: the same for the hf and vllm backends
    top_p: float = 1.0
    max_new_tokens: int = 512  # cap on every generation (lm-eval's max_gen_toks)
    seed: int = 42
    # lm-eval tasks BoN runs on; empty: every generation task that runs (the paper's choice)
    tasks: list[str] = field(default_factory=list)


@dataclass
class DownstreamConfig:
    """The eval_downstream stage: the paper's evaluation suite through lm-evaluation-harness."""

    # lm-eval task names; the paper suite (paper_repro/downstream/suite.py) by default
    tasks: list[str] = field(
        default_factory=lambda: ["gsm8k_cot", "bbh_cot_fewshot", "mmlu", "truthfulqa_mc2", "ifeval"]
    )
    # lm-eval executes generated code: code tasks (humaneval, mbpp) run only with this opt-in
    allow_code_execution: bool = False
    # OpenAI-compatible judge for AlpacaEval 1/2 and XSTest; None: listed as "not run"
    judge_endpoint: str | None = None
    backend: Literal["hf", "vllm"] = "hf"  # lm-eval's HF backend, or its vllm backend (GPU)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    batch_size: int = 8
    chat_template: bool = True  # prompts in the policy's chat format (open-instruct's Tulu format)
    limit: int | None = None  # documents per task (None = all)
    vllm_gpu_memory_utilization: float = 0.85
    # the policies' architecture for `paper-repro plan` (None: model.arch, the RM's)
    policy_arch: Literal["llama3-70b", "llama3-8b", "tiny"] | None = None
    bon: BestOfNConfig = field(default_factory=BestOfNConfig)
    rm_token_budget: int = 16384  # tokens per packed RM scoring forward
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    # pinned hub datasets by lm-eval task name (a group pins every subtask reading that dataset);
    # the commits were read from public code pinning those repos (no hub access here). BBH's is
    # unresolved: set it before a cluster run (README, "Hub pins").
    datasets: dict[str, TaskDataPin] = field(
        default_factory=lambda: {
            "gsm8k_cot": TaskDataPin("openai/gsm8k", "740312add88f781978c0658806c59bc2815b9866"),
            "bbh_cot_fewshot": TaskDataPin("SaylorTwift/bbh"),
            "mmlu": TaskDataPin("cais/mmlu", "c30699e8356da336a370243923dbaf21066bb9fe"),
            "truthfulqa_mc2": TaskDataPin(
                "truthfulqa/truthful_qa", "741b8276f2d1982aa3d5b832d3ee81ed3b896490"
            ),
            "ifeval": TaskDataPin("google/IFEval", "966cd89545d6b6acfd7638bc708b98261ca58e84"),
            "humaneval": TaskDataPin(
                "openai/openai_humaneval", "7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544"
            ),
        }
    )


@dataclass
class ReproConfig:
    preset: str = MISSING
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rm: RMTrainConfig = field(default_factory=RMTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
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
    # + "rm" with reference.source=tiny: the stand-in is trained with the rm recipe (stage_hash)
    "eval_reference": ("model", "data", "eval", "reference"),
    "ppo": ("model", "data", "ppo"),
    # + "reference": which published RM (its content, like the policies' and our RM's, comes
    # through the manifests it verifies); an eval.* change re-scores RewardBench only
    "eval_downstream": ("downstream", "reference"),
    "report": ("preset", "description", "model", "data", "rm", "eval", "reference", "ppo"),
}

# Keys of those sections that change no result of the stage: left out of its identity
# (``stage_hash``), so changing one reruns nothing. "*": for every stage. The stage itself still
# reads the value from its config file the next time it runs.
IDENTITY_NEUTRAL: dict[str, tuple[str, ...]] = {
    "*": (
        "rm.checkpoint_every",  # preemption checkpoints: a resumed run ends in the same weights
        "ppo.checkpoint_every",
        "export.verify_pairs",  # how many pairs the after-export cross-check scores
        "data.expected_pairs",  # only `config show` / `plan` estimates
    ),
    # download_data fetches the three dataset refs; filtering, padding and the held-out carve-out
    # are prepare_data's (a new max_length must not download the data again).
    "download_data": (
        "data.heldout_fraction",
        "data.heldout_seed",
        "data.max_length",
        "data.pad_token_id",
        "data.ppo_prompt_max_length",
        "data.ppo_prompt_bos",
    ),
}
