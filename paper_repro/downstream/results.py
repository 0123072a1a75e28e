"""Per-document scores out of lm-eval's results, bootstrap CIs and paired deltas.

The value of a task is lm-eval's own aggregate of its metric (the number lm-eval prints); the
per-document scores behind it (``log_samples``) give a percentile bootstrap CI and, for two
models on the same documents, a paired bootstrap CI of their difference (the same resampled
documents for both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The headline metric of each task as "<metric>,<filter>" (lm-eval's result key). GSM8k:
# flexible-extract takes the last number of the answer, as open-instruct's GSM evaluation does.
PRIMARY_METRIC: dict[str, str] = {
    "gsm8k_cot": "exact_match,flexible-extract",
    "gsm8k": "exact_match,flexible-extract",
    "bbh_cot_fewshot": "exact_match,get-answer",
    "mmlu": "acc,none",
    "truthfulqa_mc1": "acc,none",
    "truthfulqa_mc2": "acc,none",
    "ifeval": "prompt_level_loose_acc,none",
    "humaneval": "pass@1,create_test",
    "tiny_arithmetic": "exact_match,extract",
}


@dataclass(frozen=True)
class TaskScores:
    task: str
    metric: str  # "<metric>,<filter>"
    value: float  # lm-eval's aggregate
    docs: dict[str, float]  # "<subtask>/<doc_id>" -> the document's score


def primary_metric(results: dict, task: str) -> str:
    if task in PRIMARY_METRIC:
        return PRIMARY_METRIC[task]
    keys = [k for k in results["results"][task] if "," in k and "_stderr" not in k]
    keys = [k for k in keys if k.split(",")[0] not in ("alias", "name", "sample_len")]
    if not keys:
        raise KeyError(f"lm-eval reported no metric for task {task}")
    return sorted(keys)[0]


def subtasks(results: dict, task: str) -> list[str]:
    """The leaf tasks whose samples make up ``task`` (itself, or a group's members)."""
    groups = results.get("group_subtasks", {})
    if task not in groups or not groups[task]:
        return [task]
    return [leaf for sub in groups[task] for leaf in subtasks(results, sub)]


def task_scores(results: dict, task: str) -> TaskScores:
    """The task's metric and per-document scores from one ``simple_evaluate`` result."""
    key = primary_metric(results, task)
    metric, filt = key.split(",", 1)
    docs = {}
    for sub in subtasks(results, task):
        for s in results["samples"].get(sub, []):
            if s.get("filter", "none") == filt and metric in s:
                docs[f"{sub}/{s['doc_id']}"] = float(s[metric])
    value = float(results["results"][task][key])
    return TaskScores(task, key, value, docs)


def bootstrap_ci(values, samples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(samples, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


@dataclass(frozen=True)
class Delta:
    a: str
    b: str
    task: str
    delta: float  # mean(a) - mean(b) over the shared documents
    lo: float
    hi: float
    docs: int

    @property
    def within_noise(self) -> bool:
        return self.lo <= 0.0 <= self.hi


def paired_delta(
    a: TaskScores, b: TaskScores, names: tuple[str, str], samples: int, seed: int
) -> Delta:
    """``a - b`` with a paired bootstrap CI over the documents both were scored on."""
    shared = sorted(set(a.docs) & set(b.docs))
    if not shared:
        nan = float("nan")
        return Delta(*names, a.task, nan, nan, nan, 0)
    diff = np.array([a.docs[k] - b.docs[k] for k in shared])
    lo, hi = bootstrap_ci(diff, samples, seed)
    return Delta(*names, a.task, float(diff.mean()), lo, hi, len(shared))
