"""One downstream evaluation: policies and best-of-N selections through lm-eval, written out.

``evaluate`` runs every planned task for each policy (the task's own generation settings), then
best-of-N from the sampling policy's samples for each reward model, and writes:

- ``results.json``: per task and model the metric, lm-eval's value, a bootstrap CI and the
  document count; paired deltas; the tasks not run and why; the settings (lm-eval model specs,
  sampling parameters, task data pins, lm-eval version);
- ``samples/<model>/<task>.jsonl``: lm-eval's logged samples (prompt, response, filtered
  answer, per-document metric);
- ``samples/bon_<rm>/selections.jsonl``: every prompt's N candidates, their rewards and the pick.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..config import ReproConfig
from ..provenance.io import write_json, write_text
from .backend import LMSpec, build_lm, lm_spec, sampling_kwargs
from .results import Delta, TaskScores, bootstrap_ci, paired_delta, task_scores
from .suite import plan_tasks
from .taskdata import (
    TINY_DATA,
    TINY_LOCK,
    TINY_TASK,
    fetch_task_data,
    pinned_hub_tasks,
    tiny_override,
    verified_copy,
    write_overrides,
)

log = logging.getLogger(__name__)

# The models of the downstream table and the paired deltas it shows. "sft" is the task's own
# generation setting (greedy for the shipped tasks); "sft_sample" is best-of-1 at the best-of-N
# sampling parameters (the first of the same N samples), so BoN - sft_sample is what selection
# by the RM adds, sampling held equal.
DELTAS = (("ppo", "sft"), ("bon_ours", "bon_published"), ("bon_ours", "sft_sample"))
SAMPLE_ROW = "sft_sample"


@dataclass
class Models:
    policies: dict[str, Path]  # "sft", "ppo" -> HF causal LM folders
    rms: dict[str, Path]  # "ours", "published" -> sequence-classification RMs
    sampler: str = "sft"  # the policy best-of-N samples from
    names: dict[str, str] = field(default_factory=dict)  # display names (model folders, hub ids)


def prepare_tasks(cfg: ReproConfig, tasks: list[str], data_dir: Path) -> tuple[Path, dict]:
    """The run-local lm-eval task folder (overrides pointing at verified local data) and the
    pins used ({task: {hub_id, revision} or the shipped lock})."""
    task_dir = data_dir / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    pins: dict[str, Any] = {}
    if TINY_TASK in tasks:
        data = verified_copy(TINY_DATA, TINY_LOCK, data_dir / TINY_TASK)
        tiny_override(data, task_dir)
        pins[TINY_TASK] = {"shipped": TINY_DATA.name, "lock": json.loads(TINY_LOCK.read_text())}
    hub = pinned_hub_tasks(cfg, tasks)
    if hub:
        from lm_eval.tasks import TaskManager

        local = {}
        for task, (hub_id, revision) in hub.items():
            slug = hub_id.replace("/", "--")
            local[hub_id] = fetch_task_data(hub_id, revision, data_dir / slug)
            pins[task] = {"hub_id": hub_id, "revision": revision}
        write_overrides(TaskManager().task_index, local, task_dir)
    return task_dir, pins


def _simple_evaluate(cfg: ReproConfig, lm, tasks: list[str], task_manager) -> dict:
    import lm_eval

    ds = cfg.downstream
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=task_manager,
        limit=ds.limit,
        apply_chat_template=ds.chat_template,
        # open-instruct puts the few-shot examples into the one user turn
        fewshot_as_multiturn=False,
        log_samples=True,
        bootstrap_iters=0,  # CIs come from results.bootstrap_ci over the logged samples
        random_seed=ds.bon.seed,
        numpy_random_seed=ds.bon.seed,
        torch_random_seed=ds.bon.seed,
        fewshot_random_seed=ds.bon.seed,
        confirm_run_unsafe_code=ds.allow_code_execution,
    )


def _write_samples(out_dir: Path, model: str, results: dict) -> None:
    for task, rows in results.get("samples", {}).items():
        body = "".join(json.dumps(r, default=str, sort_keys=True) + "\n" for r in rows)
        write_text(out_dir / "samples" / model / f"{task}.jsonl", body)


def _row(s: TaskScores, cfg: ReproConfig) -> dict[str, Any]:
    ds = cfg.downstream
    lo, hi = bootstrap_ci(list(s.docs.values()), ds.bootstrap_samples, ds.bootstrap_seed)
    return {"metric": s.metric, "value": s.value, "ci": [lo, hi], "docs": len(s.docs)}


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _best_of_n(cfg, sampler, rms: dict[str, Path], tasks, tm, out_dir: Path, scores) -> None:
    """Best-of-N for each RM among the same samples of ``sampler`` (one ``SampleCache``), then
    best-of-1 (the first of those samples) as the like-for-like baseline."""
    import numpy as np

    from .bon import BestOfN, RewardScorer, SampleCache

    ds = cfg.downstream
    cache = SampleCache()
    for rm_name, rm_path in rms.items():
        scorer = RewardScorer(rm_path, ds.dtype, ds.rm_token_budget)
        bon = BestOfN(sampler, scorer, ds.bon.n, partial(sampling_kwargs, cfg), cache)
        res = _simple_evaluate(cfg, bon, tasks, tm)
        name = f"bon_{rm_name}"
        _write_samples(out_dir, name, res)
        scores[name] = {t: task_scores(res, t) for t in tasks}
        body = "".join(json.dumps(asdict(s)) + "\n" for s in bon.selections)
        write_text(out_dir / "samples" / name / "selections.jsonl", body)
        del scorer, bon
        _free_memory()
    # best-of-1: equal rewards make select_best keep the first sample drawn
    first = BestOfN(
        sampler, lambda c: np.zeros(len(c)), ds.bon.n, partial(sampling_kwargs, cfg), cache
    )
    res = _simple_evaluate(cfg, first, tasks, tm)
    _write_samples(out_dir, SAMPLE_ROW, res)
    scores[SAMPLE_ROW] = {t: task_scores(res, t) for t in tasks}


def evaluate(cfg: ReproConfig, models: Models, out_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Run the planned tasks for every policy and best-of-N for every RM; write the files."""
    from lm_eval import __version__ as lm_eval_version
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ds = cfg.downstream
    plan = plan_tasks(cfg)
    tasks = [t.task for t in plan.run]
    task_dir, pins = prepare_tasks(cfg, tasks, data_dir)
    # lm-eval's own task folders are indexed (seconds) only when a hub task needs them
    hub = any("hub_id" in p for p in pins.values())
    tm = TaskManager(include_path=str(task_dir), include_defaults=hub)
    specs: dict[str, LMSpec] = {}
    scores: dict[str, dict[str, TaskScores]] = {}
    for name, path in models.policies.items():
        specs[name] = lm_spec(cfg, path)
        lm = build_lm(specs[name])
        res = _simple_evaluate(cfg, lm, tasks, tm)
        _write_samples(out_dir, name, res)
        scores[name] = {t: task_scores(res, t) for t in tasks}
        if name == models.sampler and plan.bon:
            # best-of-N while this policy is loaded; one model pair on the GPUs at a time
            _best_of_n(cfg, lm, models.rms, plan.bon, tm, out_dir, scores)
        del lm
        _free_memory()
    deltas: list[Delta] = []
    for a, b in DELTAS:
        for t in tasks:
            if t in scores.get(a, {}) and t in scores.get(b, {}):
                d = paired_delta(
                    scores[a][t], scores[b][t], (a, b), ds.bootstrap_samples, ds.bootstrap_seed
                )
                deltas.append(d)
    body = {
        "tasks": {t.task: {"name": t.name, "setting": t.setting, "kind": t.kind} for t in plan.run},
        "models": {m: {t: _row(s, cfg) for t, s in per.items()} for m, per in scores.items()},
        "model_names": {**{k: str(v) for k, v in models.policies.items()}, **models.names},
        "deltas": [{**asdict(d), "within_noise": d.within_noise} for d in deltas],
        "bon_tasks": plan.bon,
        "not_run": plan.not_run,
        "settings": {
            "lm_eval_version": lm_eval_version,
            "backend": ds.backend,
            "lm_specs": {k: v.as_dict() for k, v in specs.items()},
            "sampling": asdict(ds.bon),
            "chat_template": ds.chat_template,
            "limit": ds.limit,
            "task_data": pins,
            "bootstrap_samples": ds.bootstrap_samples,
        },
    }
    write_json(out_dir / "results.json", body)
    return body
