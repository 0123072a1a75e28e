"""The Tulu 2.5 evaluation suite (arXiv 2406.09279, Sec. 2.2 and App. C; open-instruct's
evaluations) mapped onto lm-evaluation-harness task names, and which of them run here.

A task runs when it is requested in ``downstream.tasks``; code tasks only with
``downstream.allow_code_execution`` (lm-eval executes the generated code); judge-scored and
classifier-scored tasks never run here and are listed with the reason, never as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ReproConfig

NO_JUDGE = "not run: no judge configured"
NO_CODE = "not run: code execution not enabled (downstream.allow_code_execution)"
NO_CLASSIFIER = "not run: classifier-scored (ToxiGen RoBERTa), not in lm-eval"
NOT_REQUESTED = "not run: not in downstream.tasks"


@dataclass(frozen=True)
class SuiteTask:
    name: str  # as the paper's tables name it
    task: str | None  # lm-eval task (or group) name; None: not an lm-eval task
    setting: str  # shots and prompting, as the paper ran it
    kind: str  # "generate" | "multiple_choice" | "code" | "judge" | "classifier"


# The paper's categories: factuality, reasoning, truthfulness, coding, safety, instruction
# following. lm-eval's task defaults give the paper's shots: gsm8k_cot 8-shot CoT,
# bbh_cot_fewshot 3-shot CoT, mmlu 0-shot.
PAPER_SUITE: tuple[SuiteTask, ...] = (
    SuiteTask("GSM8k", "gsm8k_cot", "8-shot CoT", "generate"),
    SuiteTask("BBH", "bbh_cot_fewshot", "3-shot CoT", "generate"),
    SuiteTask("MMLU", "mmlu", "0-shot", "multiple_choice"),
    SuiteTask("TruthfulQA", "truthfulqa_mc2", "MC2, 0-shot", "multiple_choice"),
    SuiteTask("IFEval", "ifeval", "0-shot, prompt-level loose", "generate"),
    SuiteTask("HumanEval", "humaneval", "pass@1 (lm-eval)", "code"),
    SuiteTask("AlpacaEval 1", None, "GPT-4 judge", "judge"),
    SuiteTask("AlpacaEval 2", None, "GPT-4 judge, length-controlled", "judge"),
    SuiteTask("XSTest", None, "GPT-4 judge", "judge"),
    SuiteTask("ToxiGen", None, "RoBERTa toxicity classifier", "classifier"),
)

# The tiny preset's task: single-digit sums (paper_repro/fixtures/arithmetic.py), shipped in
# lm-eval's local-dataset format (tasks/tiny_arithmetic.yaml).
TINY_TASK = SuiteTask("Arithmetic (tiny)", "tiny_arithmetic", "0-shot", "generate")
CODE_TASKS = frozenset({"humaneval", "humaneval_plus", "mbpp", "mbpp_plus"})
MC_TASKS = frozenset({"mmlu", "truthfulqa_mc1", "truthfulqa_mc2"})


@dataclass(frozen=True)
class TaskPlan:
    run: list[SuiteTask]  # lm-eval tasks to evaluate
    bon: list[str]  # the lm-eval tasks best-of-N runs on (generation tasks only)
    not_run: dict[str, str]  # suite name -> why


def known(task: str) -> SuiteTask:
    for t in (*PAPER_SUITE, TINY_TASK):
        if t.task == task:
            return t
    kind = "code" if task in CODE_TASKS else "multiple_choice" if task in MC_TASKS else "generate"
    return SuiteTask(task, task, "lm-eval default", kind)


def plan_tasks(cfg: ReproConfig) -> TaskPlan:
    """Which requested tasks run, which best-of-N covers, and why each other suite task does not.

    Best-of-N runs on generation tasks only, as in the paper: a multiple-choice task reads the
    policy's log-likelihoods, which selection cannot change (BoN would equal SFT there)."""
    ds = cfg.downstream
    run, not_run = [], {}
    for name in ds.tasks:
        t = known(name)
        if t.kind == "code" and not ds.allow_code_execution:
            not_run[t.name] = NO_CODE
        else:
            run.append(t)
    requested = {t.task for t in run} | set(ds.tasks)
    for t in PAPER_SUITE:
        if t.kind == "judge":
            not_run[t.name] = NO_JUDGE
        elif t.kind == "classifier":
            not_run[t.name] = NO_CLASSIFIER
        elif t.task not in requested:
            not_run.setdefault(t.name, NOT_REQUESTED)
    generation = [t.task for t in run if t.kind in ("generate", "code")]
    bon = [t for t in ds.bon.tasks if t in generation] if ds.bon.tasks else generation
    return TaskPlan(run, bon, not_run)
