"""ppo: train a policy against the frozen reward model, as EasyLM did (docs/fidelity.md §9).

Inputs: the policy's SFT checkpoint (``download_base/model``, or ``ppo.policy_hub_id`` fetched and
verified into ``ppo_policy_base/``), the exported RM (``export_rm/model``), the tokenized prompts
(``prepare_data/ppo_prompts.parquet``, checked against the tokenization fingerprint).

The last ``ppo.eval_prompts`` prompts are held out (never trained on) and scored before and after
training; the rest are shuffled per epoch with a seeded permutation [I: EasyLM's loader order is
not documented] and consumed ``prompts_per_step`` at a time (a partial last batch is dropped).

Backends: ``ppo.backend=torch`` (one process) or ``deepspeed`` (ZeRO-2/3 under torchrun / srun,
``ppo/distributed.py``); e.g. ``torchrun --nproc-per-node 2 -m paper_repro.cli ppo tiny
ppo.backend=deepspeed --run-dir DIR``. Rank 0 alone writes files and logs to MLflow. Under ZeRO-3,
``ppo.generation`` (``gathered`` or ``synced``, ``ppo/distributed.py``) decides how rollouts and
the held-out evaluation sample; both give the same tokens.

Outputs: ``ppo/metrics.jsonl`` (one line per step, rank 0), ``ppo/summary.json``, ``ppo/policy/``
(safetensors + tokenizer), ``ppo/manifest.json`` (their sha256). SIGTERM/SIGUSR1/SIGINT ->
checkpoint at the end of the current step and exit 75; a rerun of the same stage identity (config,
code, policy base, prompts and exported RM content, backend and world size; ``identity.py``)
resumes from ``checkpoints/ppo/`` and gives bitwise the same result on CPU. Any other rerun (a new
reward model, ``--forcerun``) starts at step 0; the old checkpoints are moved aside.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError, ReproConfig
from ..progress import progress
from ..provenance.identity import stage_identity
from ..provenance.io import write_json
from ..provenance.manifest import write_manifest
from ..provenance.paths import RunPaths
from ..tracking import stage_run
from ..training.checkpoints import ResumeError
from ..training.runstate import EXIT_PREEMPTED, MetricsLog, StopFlag

EVAL_SEED_OFFSET = 7_919  # eval sampling seed = ppo.seed + this, identical before and after


class PPOPreempted(Exception):  # noqa: N818 - control flow: leave the MLflow run as not finished
    def __init__(self, checkpoint: Path, next_step: int):
        self.checkpoint, self.next_step = checkpoint, next_step
        super().__init__(f"preempted: {checkpoint} resumes at step {next_step}")


@dataclass(frozen=True)
class PromptPlan:
    """Which prompts each step uses; a pure function of (prompts, config)."""

    train: list[np.ndarray]
    heldout: list[np.ndarray]
    steps_per_epoch: int
    total_steps: int
    seed: int
    per_step: int

    def step_prompts(self, step: int) -> list[np.ndarray]:
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train))
        return [self.train[i] for i in order[k * self.per_step : (k + 1) * self.per_step]]


def plan_prompts(prompts: list[np.ndarray], cfg: ReproConfig, source: Path) -> PromptPlan:
    p = cfg.ppo
    if p.eval_prompts < 0 or p.eval_prompts >= len(prompts):
        raise ConfigError(
            "ppo.eval_prompts",
            f"{p.eval_prompts} held-out prompts leave none to train "
            f"on ({len(prompts)} prompts in {source})",
        )
    train, held = prompts[: len(prompts) - p.eval_prompts], prompts[len(prompts) - p.eval_prompts :]
    steps_per_epoch = len(train) // p.prompts_per_step
    if steps_per_epoch == 0:
        raise ConfigError(
            "ppo.prompts_per_step",
            f"{p.prompts_per_step} exceeds the {len(train)} training prompts in {source}",
        )
    total = p.epochs * steps_per_epoch
    if p.max_steps is not None:
        total = min(total, p.max_steps)
    return PromptPlan(train, held, steps_per_epoch, total, p.seed, p.prompts_per_step)


def policy_source(cfg: ReproConfig, paths: RunPaths) -> Path:
    """The SFT checkpoint the policy (and reference) start from."""
    p = cfg.ppo
    if not p.policy_hub_id or p.policy_hub_id == cfg.model.hub_id:
        return paths.base_model
    from ..hub import fetch_model

    # Policy differs from the RM's base (e.g. the 8B policy trained with the 70B RM): its own pinned,
    # sha256-verified snapshot; the lock manifest makes a rerun a cheap re-check.
    fetch_model(
        p.policy_hub_id, p.policy_revision, paths.ppo_policy_base, paths.ppo_policy_base_manifest
    )
    return paths.ppo_policy_base


def save_policy(policy, tokenizer, dest: Path, state_dict: dict | None = None) -> None:
    """HF folder (safetensors + tokenizer), written next to ``dest`` and renamed into place.
    ``state_dict``: the consolidated weights of a ZeRO-partitioned ``policy``."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    """Exit code 0, EXIT_PREEMPTED after a checkpoint, or 2 for a refused checkpoint. With
    several ranks every rank passes a final barrier here (the CLI may then leave with
    ``os._exit``: ranks sometimes abort in interpreter teardown)."""
    trainer_box: list = []
    try:
        code = _run(cfg, paths, trainer_box)
    except PPOPreempted as exc:
        if not trainer_box or trainer_box[0].rank == 0:
            print(f"ppo: {exc}; rerun the stage to continue (exit {EXIT_PREEMPTED})")
        code = EXIT_PREEMPTED
    except ResumeError as exc:
        print(f"ppo: {exc}", file=sys.stderr, flush=True)
        return 2
    if trainer_box and trainer_box[0].world_size > 1:
        trainer_box[0].close()
    return code


def build_trainer(cfg: ReproConfig, policy_dir: Path, rm_dir: Path, *, eos_id, pad_id, warmup):
    """The configured backend's trainer: plain torch in one process, or DeepSpeed engines."""
    p = cfg.ppo
    if p.backend == "deepspeed":
        from ..ppo.distributed import DeepSpeedPPOTrainer

        trainer = DeepSpeedPPOTrainer(
            p,
            policy_dir,
            rm_dir,
            eos_id=eos_id,
            pad_id=pad_id,
            warmup=warmup,
            compute_dtype=cfg.model.dtype,
            score_per_minibatch=p.score_per_minibatch,
        )
        check_vocab(trainer.m.policy, trainer.m.reward, eos_id=eos_id, pad_id=pad_id)
        return trainer
    from ..ppo.models import build_models, load_policy, load_reward_model
    from ..ppo.trainer import PPOTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != 1:
        raise ConfigError(
            "ppo.backend",
            f"torch runs one process, but WORLD_SIZE={world}; use ppo.backend=deepspeed",
        )
    policy = load_policy(policy_dir, cfg.model.dtype)
    reward_model = load_reward_model(rm_dir, cfg.model.dtype)
    check_vocab(policy, reward_model, eos_id=eos_id, pad_id=pad_id)
    return PPOTrainer(
        p,
        build_models(policy, reward_model),
        eos_id=eos_id,
        pad_id=pad_id,
        warmup=warmup,
        score_per_minibatch=p.score_per_minibatch,
    )


def check_vocab(policy, reward_model, *, eos_id: int, pad_id: int) -> None:
    from ..ppo.models import check_vocab as check

    check(policy, reward_model, eos_id=eos_id, pad_id=pad_id)


def _run(cfg: ReproConfig, paths: RunPaths, trainer_box: list) -> int:
    p = cfg.ppo
    import torch

    from ..data import check_fingerprint, load_prompts, load_tokenizer
    from ..ppo.checkpoint import PPOCheckpoints
    from ..ppo.evaluate import evaluate_policy
    from ..ppo.trainer import warmup_updates
    from ..provenance.integrity import verify_inputs

    verify_inputs(paths, "ppo")  # the base model (the default policy), the export, the prompts
    torch.manual_seed(p.seed)
    policy_dir = policy_source(cfg, paths)  # another policy: fetch_model hashes every file
    tok = load_tokenizer(policy_dir)
    check_fingerprint(paths.fingerprint, tok)
    pad_id, eos_id = cfg.data.pad_token_id, tok.eos_token_id
    source = paths.prepared("ppo_prompts")
    plan = plan_prompts(list(load_prompts(source).input_ids), cfg, source)
    warmup = warmup_updates(p, min(plan.steps_per_epoch, plan.total_steps))

    trainer = build_trainer(
        cfg, policy_dir, paths.rm_model, eos_id=eos_id, pad_id=pad_id, warmup=warmup
    )
    trainer_box.append(trainer)
    rank, world = trainer.rank, trainer.world_size
    sharded = trainer.write_shards is not None

    def my_prompts(step: int) -> list[np.ndarray]:
        prompts = plan.step_prompts(step)
        if world == 1:
            return prompts
        from ..ppo.distributed import rank_slice

        return rank_slice(prompts, p.mini_batch, rank, world)

    def evaluate(label: str):
        # Every rank scores all held-out prompts with the same seed (identical results on every
        # rank and the same number of forwards, as ZeRO-3 needs); W-fold redundant but simple.
        t = time.time()
        _, reward_model = trainer.eval_models()
        with trainer.generation_policy() as (policy, synced):  # ppo.generation, as in training
            res = evaluate_policy(
                policy,
                reward_model,
                plan.heldout,
                p,
                pad_id=pad_id,
                eos_id=eos_id,
                seed=p.seed + EVAL_SEED_OFFSET,
                batch_size=p.mini_batch,
                synced_gpus=synced,
            )
        if rank != 0:
            return res.to_dict()
        print(
            f"ppo: eval {label}: reward {res.reward_mean:.4f} (RM raw {res.raw_reward_mean:.4f}, "
            f"no EOS {res.no_eos_frac:.3f}) on {res.prompts} held-out prompts, {time.time() - t:.1f} s"
        )
        return res.to_dict()

    identity = stage_identity(cfg, paths, "ppo")  # after policy_source: its snapshot counts
    store = PPOCheckpoints(paths.checkpoints("ppo"), identity, group=trainer)
    latest = store.resume_point()
    metrics = MetricsLog(paths.ppo_metrics, enabled=rank == 0)
    start = 0
    if latest is not None:
        state, resumed = store.load(latest)
        trainer.restore(state, latest)
        start, before = resumed.next_step, resumed.meta["eval_before"]
        metrics.restore(resumed.metrics)
    else:
        metrics.restore([])
    # a resumed attempt continues its own MLflow run; anything else opens a new one
    with stage_run(cfg, paths, "ppo", resume=latest is not None) as tr:
        tr.log_params(
            {
                "ppo.derived.steps": plan.total_steps,
                "ppo.derived.warmup_updates": warmup,
                "ppo.derived.train_prompts": len(plan.train),
                "ppo.derived.heldout_prompts": len(plan.heldout),
                "ppo.derived.world_size": world,
                "ppo.eval_decoding": f"sampled (temperature {p.temperature}, top_k {p.top_k}, "
                f"seed {p.seed + EVAL_SEED_OFFSET})",
            }
        )
        tr.log_dataset("ppo_prompts", source)
        if latest is not None:
            if rank == 0:
                print(f"ppo: resumed from {latest} at step {start}/{plan.total_steps}")
        else:
            if rank == 0:
                print(f"ppo: identity {identity.digest}, starting at step 0/{plan.total_steps}")
            before = evaluate("before")
            tr.log_metrics({f"eval_before.{k}": v for k, v in before.items()})
        meta = {
            "train_prompts": len(plan.train),
            "total_steps": plan.total_steps,
            "eval_before": before,
        }

        flag = StopFlag().install()
        t0 = time.time()
        try:
            bar = progress(
                range(start, plan.total_steps),
                desc="ppo",
                unit="step",
                initial=start,
                total=plan.total_steps,
                disable=rank != 0,
            )
            for step in bar:
                stats = trainer.step(step, my_prompts(step), seed=p.seed * 100_003 + step)
                row = stats.to_dict()
                norms = list(zip(stats.grad_norm_policy, stats.grad_norm_value, strict=True))
                scalars = {k: v for k, v in row.items() if not isinstance(v, list)}
                if not all(
                    math.isfinite(v)
                    for v in [*scalars.values(), *stats.grad_norm_policy, *stats.grad_norm_value]
                ):
                    raise FloatingPointError(f"non-finite PPO metrics at step {step}: {row}")
                metrics.append(json.dumps(row, sort_keys=True))
                tr.log_metrics({k: v for k, v in scalars.items() if k != "step"}, step=step)
                first = stats.updates - len(norms)  # per-update series, at the update number
                for i, (gp, gv) in enumerate(norms):
                    tr.log_metrics({"grad_norm_policy": gp, "grad_norm_value": gv}, step=first + i)
                bar.set_postfix(reward=f"{stats.reward_mean:.3f}", kl=f"{stats.kl:.3f}")
                done = step + 1
                stop = trainer.any_true(flag.requested)  # all ranks checkpoint together
                if stop or (done % p.checkpoint_every == 0 and done < plan.total_steps):
                    folder = store.save(
                        done, trainer.checkpoint_state(), meta, metrics.lines, trainer.write_shards
                    )
                    if stop:
                        raise PPOPreempted(folder, done)
        finally:
            flag.uninstall()
        train_s = time.time() - t0

        after = evaluate("after")
        state = trainer.full_state_dict("policy") if sharded else None
        if rank == 0:
            save_policy(trainer.m.policy, tok, paths.ppo_policy, state_dict=state)
        last = json.loads(metrics.lines[-1]) if metrics.lines else {}
        summary = {
            "steps": plan.total_steps,
            "updates": trainer.updates,
            "eval_reward_before": before["reward_mean"],
            "eval_reward_after": after["reward_mean"],
            "eval_before": before,
            "eval_after": after,
            "eval_decoding": (
                f"sampled: temperature {p.temperature}, top_k {p.top_k}, "
                f"max_new_tokens {p.max_new_tokens}, seed {p.seed + EVAL_SEED_OFFSET}"
            ),
            "heldout_prompts": len(plan.heldout),
            "train_prompts": len(plan.train),
            "kl_final": last.get("kl"),
            "reward_final": last.get("reward_mean"),
            "no_eos_frac_final": last.get("no_eos_frac"),
            "kl_coef": p.kl_coef,
            "score_per_minibatch": p.score_per_minibatch,
            "train_seconds_this_run": round(train_s, 2),
            "policy_source": str(policy_dir),
            "backend": trainer.name,
            "world_size": world,
        }
        if rank == 0:
            # record files whole from memory, checked by write_manifest (runstate.MetricsLog)
            written = {
                paths.ppo_metrics.name: metrics.finish(),
                paths.ppo_summary.name: write_json(paths.ppo_summary, summary),
            }
            policy_files = sorted(
                str(f.relative_to(paths.stage_dir("ppo")))
                for f in paths.ppo_policy.rglob("*")
                if f.is_file()
            )
            write_manifest(
                paths.manifest("ppo"),
                paths.stage_dir("ppo"),
                [paths.ppo_metrics.name, paths.ppo_summary.name, *policy_files],
                written=written,
            )
        store.complete()  # a rerun of a finished stage never resumes these
        tr.log_metrics({f"eval_after.{k}": v for k, v in after.items()})
        tr.log_artifact(paths.ppo_summary)
        tr.log_artifact(paths.ppo_metrics)
        tr.log_file_ref("policy", paths.ppo_policy)
    if rank == 0:
        print(
            f"ppo: {plan.total_steps} steps; held-out reward {before['reward_mean']:.4f} -> "
            f"{after['reward_mean']:.4f}; final KL {summary['kl_final']}; "
            f"policy -> {paths.ppo_policy}"
        )
    return 0
