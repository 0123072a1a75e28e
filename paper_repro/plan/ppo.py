"""``paper-repro plan PRESET --stage ppo``: what a PPO run costs before it is submitted.

    paper-repro plan llama3-70b-uf-ppo-8b --stage ppo [--nodes 4 --gpus-per-node 8]

Four models (``ppo/models.py``): policy and reference of ``ppo.policy_arch`` (default
``model.arch``; ``LlamaForCausalLM``), reward model and value model of ``model.arch``
(``LlamaForSequenceClassification``); policy and value trainable, reference and RM frozen, all
ZeRO-3 partitioned over every GPU. Parameters are counted on meta-device models of the real
shapes. Memory: the trainable models' states are DeepSpeed's own ZeRO-3 estimate (as for RM
training); a frozen model holds its bf16 shard plus one gathered module; ``gathered`` generation
adds the whole bf16 policy and its KV cache; training adds the activations of the policy and value
forwards (both are alive at the backward; Korthikanti et al. 2022; ``ppo.activation_checkpointing``),
for the worst row (a prompt of ``data.ppo_prompt_max_length`` and ``max_new_tokens``).

Time, a stated model, not a measurement (the pure functions below; tests/unit/test_plan_ppo.py):

- decoding is memory-bandwidth bound: one token step of a batch reads the whole bf16 policy and
  the batch's KV cache from HBM, at ``--hbm-tbps`` x ``--decode-efficiency`` (compute, at
  ``--gpu-tflops`` x ``--mfu``, only when it is the slower side);
- ``gathered``: one all-gather of the policy per rollout phase, then every GPU decodes its own
  rows with no collective per token; ``synced`` (ZeRO-3 ``synced_gpus``): every token step
  all-gathers the whole policy again, overlapped with (so at least) the decode step; all-gathers
  and reduce-scatters move ``(W-1)/W`` of the bf16 weights per GPU at ``--allgather-gbps``
  (inter-node: the per-GPU NIC is the bottleneck);
- every generation runs to ``max_new_tokens`` (a batch decodes until its longest row ends, and
  the cap is the worst case the run must budget for);
- scoring and updates: 2 x params FLOPs per token per forward, 6 per forward+backward (8 with
  activation checkpointing), over every token of the step, at ``--gpu-tflops`` x ``--mfu``; each
  ZeRO-3 pass also gathers its model (forward; again for the recompute and the backward, and a
  reduce-scatter of the gradients), overlapped, so a pass takes the longer of its compute and its
  communication.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from ..config import ReproConfig
from .train_rm import (
    GIB,
    LLAMA3_SHAPES,
    LlamaShape,
    activation_bytes,
    meta_param_count,
    rm_param_count,
    shape_for,
    zero3_model_states,
)

BF16 = 2
# Defaults of the stated model (H100 SXM 80 GB; one 400 Gb/s NDR InfiniBand NIC per GPU).
HBM_TBPS = 3.35
DECODE_EFFICIENCY = 0.6  # share of HBM peak that small-batch HF decoding reaches [assumption]
ALLGATHER_GBPS = 40.0  # per GPU, ~80% of the NIC's 50 GB/s line rate [assumption]
UF_PROMPTS = 60_917  # allenai/tulu-2.5-prompts ultrafeedback_prompts (UltraFeedback's prompts)
PROMPT_TOKENS = 150  # mean UltraFeedback prompt length in Llama 3 tokens [assumption]


@dataclass(frozen=True)
class Model:
    name: str
    total: int
    largest: int  # largest single module: gathered whole by ZeRO-3


def causal_lm_param_count(s: LlamaShape) -> tuple[int, int]:
    """(total, largest module) of LlamaForCausalLM: the RM's count without its hidden -> 1 score
    head, plus an untied vocab x hidden LM head (the largest module, with the embedding)."""
    rm = rm_param_count(s)
    return rm.total - s.hidden + s.vocab * s.hidden, max(rm.largest_layer, s.vocab * s.hidden)


def frozen_bytes(m: Model, world: int) -> int:
    """A frozen ZeRO-3 model on one GPU: its bf16 shard plus one gathered module."""
    return math.ceil(BF16 * m.total / world) + BF16 * m.largest


def kv_cache_bytes(s: LlamaShape, rows: int, tokens: int) -> int:
    """K and V of every layer for ``rows`` x ``tokens`` positions in bf16 (GQA: kv_heads)."""
    return rows * tokens * s.layers * 2 * s.kv_heads * s.head_dim * BF16


def gather_seconds(params: int, world: int, gbps: float) -> float:
    """One all-gather (or reduce-scatter) of a bf16 model: (W-1)/W of it through each GPU's link."""
    return BF16 * params * (world - 1) / world / (gbps * 1e9)


@dataclass(frozen=True)
class Hardware:
    world: int
    tflops: float
    mfu: float
    hbm_tbps: float
    decode_eff: float
    allgather_gbps: float

    def compute_s(self, flops: float) -> float:
        return flops / (self.tflops * 1e12 * self.mfu)


def decode_step_seconds(s: LlamaShape, params: int, rows: int, context: int, hw: Hardware) -> float:
    """One token step for ``rows`` rows at ``context`` positions on one GPU: read the weights and
    the KV cache once, or the 2 x params FLOPs per row, whichever is slower."""
    read = BF16 * params + kv_cache_bytes(s, rows, context)
    return max(read / (hw.hbm_tbps * 1e12 * hw.decode_eff), hw.compute_s(2.0 * params * rows))


def rollout_seconds(
    mode: str, s: LlamaShape, params: int, rows: int, prompt: int, new: int, hw: Hardware
) -> float:
    """One rollout phase: ``rows`` prompts per GPU, ``new`` tokens each (mean context
    ``prompt + new/2``). ``gathered``: one all-gather, then local decoding; ``synced``: every
    token step waits for an all-gather of the whole policy."""
    step = decode_step_seconds(s, params, rows, prompt + new // 2, hw)
    gather = gather_seconds(params, hw.world, hw.allgather_gbps)
    if mode == "gathered":
        return gather + new * step
    if mode == "synced":
        return new * max(step, gather)
    raise ValueError(f"no throughput model for generation mode {mode!r}")


def pass_seconds(
    params: int, tokens: int, *, backward: bool, hw: Hardware, recompute: bool = False
) -> float:
    """One ZeRO-3 pass over ``tokens`` tokens split over all GPUs: the longer of its compute
    (2 x params per token forward, 6 with the backward, 8 when activation checkpointing
    recomputes the forward) and its parameter traffic (one gather forward; with the backward a
    gather per recompute and backward plus the gradients' reduce-scatter)."""
    passes = 1 + (2 if backward else 0) + (1 if backward and recompute else 0)
    flops = (2.0 * passes if backward else 2.0) * params * tokens / hw.world
    comm = passes * gather_seconds(params, hw.world, hw.allgather_gbps)
    return max(hw.compute_s(flops), comm)


def train_seconds(
    policy: Model,
    value: Model,
    reference: Model,
    reward: Model,
    tokens: int,
    hw: Hardware,
    *,
    recompute: bool = False,
) -> float:
    """Scoring (RM, policy, reference, value forwards) and the update (policy and value
    forward+backward) of ``tokens`` tokens (one mini-batch)."""
    forwards = sum(
        pass_seconds(m.total, tokens, backward=False, hw=hw)
        for m in (reward, policy, reference, value)
    )
    return forwards + sum(
        pass_seconds(m.total, tokens, backward=True, hw=hw, recompute=recompute)
        for m in (policy, value)
    )


# --------------------------------------------------------------------------- CLI


def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def prompt_stats(cfg: ReproConfig, run_dir: Path) -> tuple[int, float, str]:
    """(prompt count, mean prompt tokens, where they come from)."""
    from ..provenance.paths import RunPaths

    source = RunPaths(run_dir).prepared("ppo_prompts")
    if source.is_file():
        from ..data import load_prompts

        ids = list(load_prompts(source).input_ids)
        return len(ids), sum(len(x) for x in ids) / max(len(ids), 1), f"exact, {source}"
    return (
        UF_PROMPTS,
        PROMPT_TOKENS,
        (
            f"assumed: {UF_PROMPTS:,} UltraFeedback prompts of ~{PROMPT_TOKENS} tokens (no "
            f"{source.name} under {run_dir})"
        ),
    )


def run(cfg: ReproConfig, args: argparse.Namespace) -> int:
    p, res = cfg.ppo, cfg.resources.ppo
    nodes = args.nodes if args.nodes is not None else res.nodes
    gpn = args.gpus_per_node if args.gpus_per_node is not None else res.gpus_per_node
    run_dir = Path(getattr(args, "run_dir", None) or Path("results") / cfg.preset)
    rm_shape = shape_for(cfg)
    pol_shape = LLAMA3_SHAPES[p.policy_arch] if p.policy_arch else rm_shape
    pol_counts = meta_param_count(pol_shape, causal_lm=True)
    if pol_counts != causal_lm_param_count(pol_shape):
        raise RuntimeError(f"causal-LM formula disagrees with the meta model {pol_counts}")
    rm_counts = meta_param_count(rm_shape)
    policy, reference = Model("policy", *pol_counts), Model("reference", *pol_counts)
    reward, value = Model("reward model", *rm_counts), Model("value", *rm_counts)
    n_prompts, prompt_len, source = prompt_stats(cfg, run_dir)
    train = n_prompts - p.eval_prompts
    steps = p.epochs * (train // p.prompts_per_step)
    if p.max_steps is not None:
        steps = min(steps, p.max_steps)
    seq = prompt_len + p.max_new_tokens
    print(f"plan: {cfg.preset}, PPO (ppo; ppo.generation={p.generation})")
    for m, what in (
        (policy, f"{p.policy_arch or cfg.model.arch} LlamaForCausalLM, trainable"),
        (reference, "copy of the policy, frozen"),
        (reward, f"{cfg.model.arch} LlamaForSequenceClassification, frozen"),
        (value, "trunk and head of the RM, trainable"),
    ):
        print(f"  {m.name:<19} {m.total:,} parameters ({what}; meta device)")
    print(
        f"  prompts             {source}; {train:,} train -> {steps} steps of "
        f"{p.prompts_per_step} x {p.ppo_epochs} epoch(s), "
        f"{p.prompts_per_step // p.mini_batch} mini-batches of {p.mini_batch}"
    )
    world = nodes * gpn
    if world == 0:
        print("  GPUs                none in resources.ppo; pass --nodes/--gpus-per-node")
        return 0
    hw = Hardware(
        world,
        args.gpu_tflops,
        args.mfu,
        args.hbm_tbps,
        args.decode_efficiency,
        args.allgather_gbps,
    )
    print(
        f"  hardware            {nodes} node(s) x {gpn} GPU(s) = {world} GPUs, "
        f"{res.gpu_mem_gb} GiB each; {hw.tflops:g} TFLOPS at MFU {hw.mfu:g}; HBM "
        f"{hw.hbm_tbps:g} TB/s x {hw.decode_eff:g} for decoding; all-gather {hw.allgather_gbps:g} "
        "GB/s per GPU"
    )
    # Memory per GPU (GiB as DeepSpeed's estimator prints them).
    trainable = {
        m.name: zero3_model_states(m.total, m.largest, gpn, nodes)[0].per_gpu_bytes
        for m in (policy, value)
    }
    frozen = {m.name: frozen_bytes(m, world) for m in (reference, reward)}
    states = sum(trainable.values()) + sum(frozen.values())
    print("  memory per GPU (ZeRO-3, no offload):")
    for name, b in trainable.items():
        print(f"    {name:<17} {_gib(b):>10}  model states (DeepSpeed estimate, zero_init=1)")
    for name, b in frozen.items():
        print(f"    {name:<17} {_gib(b):>10}  bf16 shard + one gathered module")
    # Memory for the worst row: a prompt of data.ppo_prompt_max_length and max_new_tokens.
    worst = cfg.data.ppo_prompt_max_length + p.max_new_tokens
    rows = max(p.prompts_per_step // world, 1)
    kv = kv_cache_bytes(pol_shape, rows, worst)
    whole = BF16 * policy.total
    micro = max(p.mini_batch // world, 1)

    def acts(ckpt: bool) -> int:
        return sum(
            activation_bytes(sh.layers, micro, worst, sh.hidden, checkpointing=ckpt).total
            for sh in (pol_shape, rm_shape)
        )

    gathered = p.generation == "gathered"
    rollout_what = (
        f"+ whole bf16 policy {_gib(whole)} + KV cache {_gib(kv)} ({rows} rows x {worst:,} tokens)"
        if gathered
        else "(synced: one module gathered at a time)"
    )
    ckpt = p.activation_checkpointing
    phases = [
        ("rollout", states + (whole + kv if gathered else 0), rollout_what),
        (
            "update",
            states + acts(ckpt),
            f"+ activations {_gib(acts(ckpt))} (policy and value, {micro} row(s) x {worst:,} "
            f"tokens, {'with' if ckpt else 'without'} checkpointing)",
        ),
    ]
    for label, need, what in phases:
        verdict = "FITS" if need <= res.gpu_mem_gb * GIB else "DOES NOT FIT"
        print(f"    {label:<17} {_gib(need):>10}  {what}: {verdict} in {res.gpu_mem_gb} GiB")
    if not ckpt and states + acts(False) > res.gpu_mem_gb * GIB:
        print(
            f"    hint              ppo.activation_checkpointing=true: update "
            f"{_gib(states + acts(True))}"
        )

    tokens = math.ceil(p.prompts_per_step * seq)
    mini_tokens = math.ceil(p.mini_batch * seq)
    scored = p.prompts_per_step // p.mini_batch * p.ppo_epochs
    train_s = scored * train_seconds(
        policy, value, reference, reward, mini_tokens, hw, recompute=p.activation_checkpointing
    )
    print(
        f"  per PPO step        {tokens:,} tokens ({p.prompts_per_step} x ({prompt_len:,.0f} "
        f"prompt + {p.max_new_tokens} new)); scoring + updates {train_s:,.1f} s"
    )
    hours = {}
    for mode in ("gathered", "synced"):
        gen_s = rollout_seconds(
            mode, pol_shape, policy.total, rows, round(prompt_len), p.max_new_tokens, hw
        )
        step_s = gen_s + train_s
        hours[mode] = step_s * steps * world / 3600
        mark = " <- ppo.generation" if mode == p.generation else ""
        print(
            f"  {mode:<19} rollout {gen_s:,.1f} s ({rows * world * p.max_new_tokens / gen_s:,.0f} "
            f"tokens/s), step {step_s:,.1f} s -> {hours[mode]:,.0f} GPU-hours, wall "
            f"{hours[mode] / world:,.1f} h on {world} GPUs{mark}"
        )
    print("  vllm                not available yet (ppo.generation=vllm is refused)")
    chosen = hours.get(p.generation)
    if chosen is not None and chosen / world * 60 > res.runtime_min:
        print(
            f"  WARNING: wall time exceeds resources.ppo.runtime_min ({res.runtime_min}); the "
            "job relies on preemption-safe resume"
        )
    return 0
