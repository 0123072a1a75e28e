"""``paper-repro plan``: what an RM training run costs before it is submitted.

    paper-repro plan llama3-70b-uf --nodes 4 --gpus-per-node 8 [--mfu 0.35 --gpu-tflops 989]

Parameters are counted on a meta-device ``LlamaForSequenceClassification`` of the real Llama 3
shape (docs/fidelity.md §1); tokens come from the prepared data when it exists; the
ZeRO-3 model-state memory is DeepSpeed's own estimator; activations and GPU-hours use the formulas
stated next to each function. GPU-hours are given for packed micro batches (``rm.packing``, the
default: compute on non-pad tokens only), for this trainer's padded micro batches and for EasyLM's
rows padded to ``max_length``. The arithmetic lives in small pure functions
(tests/unit/test_plan.py).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from ..config import ReproConfig
from .tokens import lockstep_tokens, prepared_lengths, training_tokens

GIB = 2**30  # DeepSpeed's estimator prints GiB (labelled "GB"); we keep its unit and say so

# Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
# eq. 1): one transformer layer stores s*b*h*(34 + 5*a*s/h) bytes of activations in 16-bit.
# SDPA/flash attention never materialises the a*s*s score matrix, so the 5as/h term drops.
ACT_BYTES_PER_TOKEN_HIDDEN = 34


@dataclass(frozen=True)
class LlamaShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# Llama 3 70B's config.json; the 8B is the same family at hidden 4096 / 32 layers.
LLAMA3_SHAPES = {
    "llama3-70b": LlamaShape(128256, 8192, 28672, 80, 64, 8),
    "llama3-8b": LlamaShape(128256, 4096, 14336, 32, 32, 8),
}


def shape_for(cfg: ReproConfig) -> LlamaShape:
    if cfg.model.arch == "tiny":
        from ..data.llama3_tokenizer import VOCAB_SIZE as LLAMA3_VOCAB
        from ..fixtures.tiny import VOCAB_SIZE

        t = cfg.model.tiny
        return LlamaShape(
            LLAMA3_VOCAB if t.tokenizer == "llama3" else VOCAB_SIZE,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
        )
    return LLAMA3_SHAPES[cfg.model.arch]


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int
    per_layer: int
    largest_layer: int  # largest single module (DeepSpeed's "largest layer"): gathered whole


def rm_param_count(s: LlamaShape) -> ParamCount:
    """Parameters of LlamaForSequenceClassification(num_labels=1): embeddings, per layer q/k/v/o
    (GQA: k and v are hidden x kv_heads*head_dim), SwiGLU gate/up/down, two RMSNorms; the final
    norm and the bias-free score head (hidden -> 1). No LM head."""
    kv = s.kv_heads * s.head_dim
    attn = 2 * s.hidden * s.hidden + 2 * s.hidden * kv
    mlp = 3 * s.hidden * s.intermediate
    per_layer = attn + mlp + 2 * s.hidden
    embedding = s.vocab * s.hidden
    total = embedding + s.layers * per_layer + s.hidden + s.hidden
    largest = max(embedding, s.hidden * s.intermediate, s.hidden * s.hidden)
    return ParamCount(total, embedding, per_layer, largest)


def meta_param_count(s: LlamaShape, causal_lm: bool = False) -> tuple[int, int]:
    """(total, largest module) of the real HF class (the RM's LlamaForSequenceClassification, or
    LlamaForCausalLM for a policy) built on the meta device (no memory). Counted with numel, not
    DeepSpeed's data_ptr dedupe, which sees every meta tensor at address 0 (that is why its
    `_all_live` estimator reports 0 parameters for a meta model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    head = {} if causal_lm else {"num_labels": 1, "pad_token_id": s.vocab - 1}
    config = LlamaConfig(
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        tie_word_embeddings=False,
        **head,
    )
    with torch.device("meta"):
        cls = LlamaForCausalLM if causal_lm else LlamaForSequenceClassification
        model = cls(config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def train_flops(params: int, tokens: int) -> float:
    """Model FLOPs of one training pass: 6 x params x tokens (forward 2, backward 4; attention
    score FLOPs and the activation-checkpointing recompute are not counted, as MFU conventions)."""
    return 6.0 * params * tokens


def gpu_hours(flops: float, gpu_tflops: float, mfu: float) -> float:
    return flops / (gpu_tflops * 1e12 * mfu) / 3600.0


@dataclass(frozen=True)
class Zero3Memory:
    offload: str
    per_gpu_bytes: int
    per_cpu_bytes: int  # per node


def zero3_model_states(
    total: int, largest: int, gpus_per_node: int, nodes: int
) -> list[Zero3Memory]:
    """DeepSpeed's ZeRO-3 model-state estimate (params + grads + Adam states), the rows that
    ``estimate_zero3_model_states_mem_needs_all_cold`` prints for zero_init=1, as numbers."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    rows = []
    for label, opt, par in (
        ("none", False, False),
        ("optimizer", True, False),
        ("optimizer+params", True, True),
    ):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total,
            largest,
            num_gpus_per_node=gpus_per_node,
            num_nodes=nodes,
            cpu_offload=opt,
            cpu_offload_params=par,
            zero_init=True,
        )
        rows.append(Zero3Memory(label, int(gpu), int(cpu)))
    return rows


@dataclass(frozen=True)
class Activations:
    checkpoints: int
    working: int

    @property
    def total(self) -> int:
        return self.checkpoints + self.working


def activation_bytes(
    layers: int, rows: int, seq: int, hidden: int, *, checkpointing: bool, bytes_per: int = 2
) -> Activations:
    """With activation checkpointing every decoder layer keeps only its input,
    layers x rows x seq x hidden x bytes, and one layer at a time is recomputed with its full
    34 x rows x seq x hidden bytes (Korthikanti et al., flash/SDPA attention). Without it every
    layer keeps the full set."""
    full = ACT_BYTES_PER_TOKEN_HIDDEN * rows * seq * hidden
    if not checkpointing:
        return Activations(0, layers * full)
    return Activations(layers * rows * seq * hidden * bytes_per, full)


def max_micro_pairs(
    budget_bytes: int,
    layers: int,
    seq: int,
    hidden: int,
    checkpointing: bool,
    *,
    pairs_per_rank: int | None = None,
    limit: int = 64,
) -> int:
    """Largest micro batch (pairs; 2 rows each) whose activations fit ``budget_bytes``; with
    ``pairs_per_rank`` (total batch / world size) only divisors of it count, since the
    accumulation steps must be whole."""
    best = 0
    for pairs in range(1, limit + 1):
        if (
            activation_bytes(layers, 2 * pairs, seq, hidden, checkpointing=checkpointing).total
            > budget_bytes
        ):
            break
        if pairs_per_rank is None or pairs_per_rank % pairs == 0:
            best = pairs
    return best


# --------------------------------------------------------------------------- CLI


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def run(cfg: ReproConfig, args: argparse.Namespace) -> int:
    if getattr(args, "stage", "train_rm") == "ppo":
        from .ppo import run as run_ppo

        return run_ppo(cfg, args)

    from .eval_downstream import print_plan

    code = run_train_rm(cfg, args)
    print_plan(cfg, args.gpu_tflops, args.mfu)
    return code


def run_train_rm(cfg: ReproConfig, args: argparse.Namespace) -> int:
    res = cfg.resources.train_rm
    nodes = args.nodes if args.nodes is not None else res.nodes
    gpn = args.gpus_per_node if args.gpus_per_node is not None else res.gpus_per_node
    run_dir = Path(getattr(args, "run_dir", None) or Path("results") / cfg.preset)
    shape = shape_for(cfg)
    counted = rm_param_count(shape)
    total, largest = meta_param_count(shape)
    if (total, largest) != (counted.total, counted.largest_layer):
        raise RuntimeError(
            f"parameter formula {counted} disagrees with the meta model "
            f"({total}, {largest}); update rm_param_count"
        )
    tokens = training_tokens(cfg, run_dir)
    flops = train_flops(total, tokens.nonpad)
    flops_padded = train_flops(total, tokens.padded)
    r = cfg.rm
    updates = r.epochs * (tokens.pairs // r.total_batch_pairs)
    print(f"plan: {cfg.preset} ({cfg.model.arch}), reward model training (train_rm)")
    print(
        f"  parameters          {total:,} (LlamaForSequenceClassification on the meta device; "
        f"embedding {counted.embedding:,}, {shape.layers} layers x {counted.per_layer:,})"
    )
    print(
        f"  training pairs      {tokens.pairs:,} x {r.epochs} epoch(s) -> {updates} updates of "
        f"{r.total_batch_pairs} pairs"
    )
    print(f"  training tokens     {tokens.nonpad:,} non-pad ({tokens.source})")
    print(f"  FLOPs (6 N T)       {flops:.3e}")
    print(
        f"  EasyLM padded       {tokens.padded:,} tokens (every row padded to "
        f"{cfg.data.max_length}) -> {flops_padded:.3e} FLOPs, "
        f"{flops_padded / max(flops, 1):.1f}x the non-pad compute"
    )
    world = nodes * gpn
    if world == 0:
        print(
            "  GPUs                none in resources.train_rm; pass --nodes/--gpus-per-node "
            "for memory and GPU-hours"
        )
        return 0
    gpu_mem = res.gpu_mem_gb * GIB
    states = zero3_model_states(total, largest, gpn, nodes)
    print(
        f"  hardware            {nodes} node(s) x {gpn} GPU(s) = {world} GPUs, "
        f"{res.gpu_mem_gb} GiB each, {args.gpu_tflops:g} dense bf16 TFLOPS, MFU {args.mfu:g}"
    )
    print(
        "  ZeRO-3 model states (DeepSpeed estimate_zero3_model_states_mem_needs, zero_init=1; GiB):"
    )
    for row in states:
        print(
            f"    offload {row.offload:<17} per GPU {_gib(row.per_gpu_bytes):>12}   "
            f"per node CPU {_gib(row.per_cpu_bytes):>12}"
        )
    ckpt = "with" if r.activation_checkpointing else "without"

    def fits(act: Activations) -> str:
        need = states[0].per_gpu_bytes + act.total
        verdict = "FITS" if need <= gpu_mem else "DOES NOT FIT"
        return f"{_gib(need)} per GPU (no offload) vs {res.gpu_mem_gb} GiB: {verdict}"

    # Packed: one row per forward; attention runs per sequence (no row x row score matrix), so
    # activations scale with the tokens of the row. A pair over the budget runs alone.
    row = max(r.token_budget, 2 * cfg.data.max_length)
    packed_act = activation_bytes(
        shape.layers, 1, row, shape.hidden, checkpointing=r.activation_checkpointing
    )
    used = "this run" if r.packing else "rm.packing=true"
    print(
        f"  packed forwards     ({used}) at most rm.token_budget = {r.token_budget:,} tokens per "
        f"GPU, a pair over it alone (up to 2 x {cfg.data.max_length:,}):"
    )
    print(
        f"    activations       {_gib(packed_act.total)} (one row of {row:,} tokens, {ckpt} "
        f"checkpointing); total {fits(packed_act)}"
    )
    rows = 2 * r.micro_batch_pairs
    act = activation_bytes(
        shape.layers,
        rows,
        cfg.data.max_length,
        shape.hidden,
        checkpointing=r.activation_checkpointing,
    )
    used = "rm.packing=false" if r.packing else "this run"
    print(
        f"  padded forwards     ({used}) micro batch {r.micro_batch_pairs} pairs ({rows} rows) x "
        f"{cfg.data.max_length} tokens, {ckpt} checkpointing: activations {_gib(act.total)}"
    )
    if r.activation_checkpointing:
        print(
            f"    layer inputs      {shape.layers} x {rows} x {cfg.data.max_length} x "
            f"{shape.hidden} x 2 B = {_gib(act.checkpoints)}"
        )
    print(
        f"    one layer         34 x {rows} x {cfg.data.max_length} x {shape.hidden} B = "
        f"{_gib(act.working)} (Korthikanti et al. 2022, no attention-score term)"
    )
    print(
        f"    per-GPU total     {fits(act)} (before CUDA context, comm buffers and "
        "fragmentation, typically a few GiB)"
    )
    per_rank = r.total_batch_pairs // world if r.total_batch_pairs % world == 0 else None
    fit_pairs = max_micro_pairs(
        gpu_mem - states[0].per_gpu_bytes,
        shape.layers,
        cfg.data.max_length,
        shape.hidden,
        r.activation_checkpointing,
        pairs_per_rank=per_rank,
    )
    print(
        f"    largest micro batch that fits at {cfg.data.max_length} tokens"
        f"{f' and divides {per_rank} pairs per GPU' if per_rank else ''}: {fit_pairs} pair(s)"
    )

    def hours_line(label: str, tokens: int, what: str) -> float:
        hours = gpu_hours(train_flops(total, tokens), args.gpu_tflops, args.mfu)
        print(
            f"  {label:<19} {hours:,.1f} at MFU {args.mfu:g} -> wall {hours / world:,.2f} h on "
            f"{world} GPUs ({math.ceil(hours / world * 60):,} min): {what}"
        )
        return hours

    hours = hours_line("GPU-hours, packed", tokens.nonpad, "non-pad tokens, ranks balanced")
    lengths = prepared_lengths(run_dir)
    if lengths is not None and per_rank and per_rank % r.micro_batch_pairs == 0:
        lock = lockstep_tokens(*lengths, r, world)
        hours = hours_line(
            "  in lockstep", lock.packed, "ranks wait for the largest packed micro batch (exact)"
        )
        hours_line(
            "GPU-hours, padded", lock.padded, "rows padded to the longest of each micro batch"
        )
    hours_line("GPU-hours, EasyLM", tokens.padded, "every row padded to max_length as EasyLM did")
    if hours / world * 60 > res.runtime_min:
        print(
            f"  WARNING: wall time exceeds resources.train_rm.runtime_min ({res.runtime_min}); "
            "the job relies on preemption-safe resume"
        )
    return 0
