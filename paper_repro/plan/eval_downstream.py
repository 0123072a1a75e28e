"""The eval_downstream part of ``paper-repro plan``: documents, generated and scored tokens,
FLOPs and GPU-hours of the configured downstream evaluation.

Counts are upper bounds: every generation is taken at its token cap
(``downstream.bon.max_new_tokens``). Prompt lengths are rough per-task estimates in Llama 3
tokens (few-shot prompts included). Decoding is memory-bound, so GPU-hours at the training MFU
are a lower bound; vLLM's batching is what keeps them near it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ReproConfig
from ..downstream.suite import plan_tasks
from .train_rm import LLAMA3_SHAPES, gpu_hours, rm_param_count, shape_for


@dataclass(frozen=True)
class TaskSize:
    docs: int  # test documents (lm-eval's test split)
    prompt_tokens: int  # rough prompt length with the task's few-shot examples
    choices: int = 0  # multiple choice: log-likelihood continuations per document


TASK_SIZES: dict[str, TaskSize] = {
    "gsm8k_cot": TaskSize(1319, 900),
    "bbh_cot_fewshot": TaskSize(6511, 1000),
    "mmlu": TaskSize(14042, 150, choices=4),
    "truthfulqa_mc2": TaskSize(817, 300, choices=8),
    "ifeval": TaskSize(541, 100),
    "humaneval": TaskSize(164, 150),
    "tiny_arithmetic": TaskSize(100, 15),
}


@dataclass(frozen=True)
class DownstreamPlan:
    generated_tokens: int  # SFT + PPO greedy, plus N samples per best-of-N prompt
    policy_prompt_tokens: int  # prompts and multiple-choice continuations read by the policies
    scored_tokens: int  # (prompt + completion) x N, by each RM
    policy_params: int
    rm_params: int

    @property
    def flops(self) -> float:
        """2 N T per token forward (inference), policies and RMs."""
        policy = self.generated_tokens + self.policy_prompt_tokens
        return 2.0 * self.policy_params * policy + 2.0 * self.rm_params * self.scored_tokens


def downstream_plan(cfg: ReproConfig) -> DownstreamPlan:
    ds = cfg.downstream
    tp = plan_tasks(cfg)
    cap = ds.bon.max_new_tokens
    generated = prompts = scored = 0
    for t in tp.run:
        size = TASK_SIZES.get(t.task, TaskSize(1000, 500))
        docs = min(size.docs, ds.limit) if ds.limit else size.docs
        if size.choices:
            prompts += 2 * docs * size.choices * size.prompt_tokens  # SFT and PPO
            continue
        generated += 2 * docs * cap
        prompts += 2 * docs * size.prompt_tokens
        if t.task in tp.bon:
            generated += ds.bon.n * docs * cap
            prompts += docs * size.prompt_tokens  # the sampled prompt is prefilled once
            scored += 2 * ds.bon.n * docs * (size.prompt_tokens + cap)  # our RM + published
    rm = rm_param_count(shape_for(cfg)).total
    arch = ds.policy_arch or cfg.model.arch
    shape = shape_for(cfg) if arch == cfg.model.arch else LLAMA3_SHAPES[arch]
    counted = rm_param_count(shape)
    policy = counted.total + counted.embedding - shape.hidden  # + LM head - score head
    return DownstreamPlan(generated, prompts, scored, policy, rm)


def print_plan(cfg: ReproConfig, gpu_tflops: float, mfu: float) -> None:
    p = downstream_plan(cfg)
    tp = plan_tasks(cfg)
    res = cfg.resources.eval_downstream
    gpus = res.nodes * res.gpus_per_node
    print(f"plan: {cfg.preset}, downstream evaluation (eval_downstream, {cfg.downstream.backend})")
    print(f"  tasks               {', '.join(t.task for t in tp.run) or 'none'}")
    print(f"  best-of-{cfg.downstream.bon.n:<11} {', '.join(tp.bon) or 'none'}")
    print(
        f"  generated tokens    {p.generated_tokens:,} at most (every generation at "
        f"{cfg.downstream.bon.max_new_tokens} tokens)"
    )
    print(f"  prompt tokens       {p.policy_prompt_tokens:,} (rough per-task prompt lengths)")
    print(f"  RM-scored tokens    {p.scored_tokens:,} (two RMs)")
    print(
        f"  parameters          policy {p.policy_params:,}, RM {p.rm_params:,}; "
        f"FLOPs (2 N T) {p.flops:.3e}"
    )
    hours = gpu_hours(p.flops, gpu_tflops, mfu)
    where = f"-> wall {hours / gpus:,.2f} h on {gpus} GPUs" if gpus else "(no GPUs configured)"
    print(
        f"  GPU-hours           {hours:,.2f} at MFU {mfu:g} {where}; a lower bound "
        "(decoding is memory-bound)"
    )
    if gpus and hours / gpus * 60 > res.runtime_min:
        print(
            f"  WARNING: wall time exceeds resources.eval_downstream.runtime_min "
            f"({res.runtime_min}); raise it or set downstream.limit"
        )
