"""``paper-repro train-rm``: Bradley-Terry reward-model training (docs/fidelity.md §3).

Reads ``prepare_data/{train,heldout}.parquet`` and the SFT base, refuses a tokenizer that does not
match the data fingerprint, trains with ``engine.Trainer`` on the configured backend and writes

- ``train_rm/metrics.jsonl``: one line per update (``engine.UpdateMetrics``), mirrored to MLflow;
- ``train_rm/summary.json``: counts, final loss, held-out accuracy, wall time, resume point;
- ``train_rm/final.safetensors``: consolidated fp32 state dict of ``LlamaForSequenceClassification``
  (HF key names), read by export_rm.

- ``train_rm/manifest.json``: sha256 of those three files (the content identity export_rm records).

Checkpoints go to ``checkpoints/train_rm/`` (never a Snakemake output) under the stage identity
(``identity.py``: config, code, base model and prepared data content, backend and world size): only
an interrupted run of the same identity resumes (``checkpoints.py``). Exit codes: 0 done,
``EXIT_PREEMPTED`` (75) checkpoint written after SIGTERM/SIGUSR1/SIGINT (rerun to resume),
``EXIT_NONFINITE`` (3) NaN/Inf loss, reward or gradient norm, 2 a checkpoint refused.

Launch: plain torch in one process (``rm.backend=torch``), or DeepSpeed under a launcher, e.g.
``torchrun --nnodes N --nproc-per-node G -m paper_repro.cli train-rm PRESET --run-dir DIR``.
"""

from __future__ import annotations

import os
import sys
import time

from ..config import ReproConfig
from ..errors import ReproError
from ..provenance.identity import stage_identity
from ..provenance.io import atomic_path, write_json
from ..provenance.manifest import write_manifest
from ..provenance.paths import RunPaths
from ..training.engine import (
    CheckpointStore,
    NonFiniteError,
    Trainer,
    UpdateMetrics,
    evaluate_accuracy,
)
from ..training.runstate import EXIT_NONFINITE, EXIT_PREEMPTED, MetricsLog, Preempted, StopFlag

STAGE = "train_rm"


class TrainSetupError(ReproError, RuntimeError):
    pass


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(f"[train_rm] {msg}", file=sys.stderr, flush=True)


def build_backend(cfg: ReproConfig, paths: RunPaths):
    """The configured backend with the reward model loaded from the SFT base."""
    from ..training.modeling import load_reward_model_from_base

    rm = cfg.rm

    def load(dtype: str):
        return load_reward_model_from_base(
            paths.base_model,
            pad_token_id=cfg.data.pad_token_id,
            init_std=rm.head_init_std,
            seed=rm.seed,
            dtype=dtype,
            attn_implementation=cfg.model.attn_implementation,
        )

    if rm.backend == "torch":
        from ..training.backends import TorchBackend

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != 1:
            raise TrainSetupError(
                f"rm.backend=torch runs one process, but WORLD_SIZE={world}; "
                "use rm.backend=deepspeed for several ranks"
            )
        # fp32 master weights; bf16 (model.dtype) is a compute dtype under autocast
        return TorchBackend(load("float32"), rm, packed=rm.packing, compute_dtype=cfg.model.dtype)
    from ..training.backends import DeepSpeedBackend

    return DeepSpeedBackend(
        lambda: load(cfg.model.dtype), rm, packed=rm.packing, compute_dtype=cfg.model.dtype
    )


def save_state_dict(path, state) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"}
        )


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    """Exit code: 0, EXIT_PREEMPTED, EXIT_NONFINITE, or 2 for a setup/resume problem (message on
    stderr naming the file or config key)."""
    from ..data import DataError
    from ..training.checkpoints import ResumeError

    try:
        return _run(cfg, paths)
    except (TrainSetupError, ResumeError, DataError) as exc:
        print(f"train_rm: {exc}", file=sys.stderr, flush=True)
        return 2


def _run(cfg: ReproConfig, paths: RunPaths) -> int:
    from ..data import check_fingerprint, load_pairs
    from ..provenance.integrity import verify_inputs
    from ..tracking import stage_run
    from ..training.batching import BatchPlan, pair_lengths, pair_tokens
    from ..training.schedule import LRSchedule

    t_start = time.time()
    rm = cfg.rm
    verify_inputs(paths, STAGE)
    fp = check_fingerprint(paths.fingerprint, paths.base_model)
    if fp["pad_token_id"] != cfg.data.pad_token_id:
        raise TrainSetupError(
            f"{paths.fingerprint}: data padded with id {fp['pad_token_id']}, "
            f"config data.pad_token_id is {cfg.data.pad_token_id}"
        )
    train = load_pairs(paths.prepared("train"))
    heldout_path = paths.prepared("heldout")
    heldout = load_pairs(heldout_path) if heldout_path.is_file() else None
    heldout = heldout if heldout is not None and len(heldout) else None

    if len(train) < rm.total_batch_pairs:
        raise TrainSetupError(
            f"{paths.prepared('train')}: {len(train)} pairs, fewer than one update "
            f"of rm.total_batch_pairs={rm.total_batch_pairs}"
        )
    backend = build_backend(cfg, paths)
    rank, world = backend.rank, backend.world_size
    if rm.total_batch_pairs % (rm.micro_batch_pairs * world):
        raise TrainSetupError(
            f"rm.total_batch_pairs {rm.total_batch_pairs} is not divisible by "
            f"rm.micro_batch_pairs x world size ({rm.micro_batch_pairs} x {world})"
        )
    plan = BatchPlan.from_config(rm, pair_tokens(train), pair_lengths(train), world)
    # padded: fixed micro batches per rank and update; packed: their number follows the tokens
    # of each update (the metrics' micro_batches)
    accumulation = None if rm.packing else plan.accumulation
    schedule = LRSchedule.from_config(rm, len(train))
    identity = stage_identity(cfg, paths, STAGE)
    _log(
        rank,
        f"{backend.name} backend, world size {world}, {len(train)} pairs -> "
        f"{plan.num_updates} updates ({schedule.warmup} warmup), "
        + (
            f"packed micro batches of <= {rm.token_budget} tokens"
            if rm.packing
            else f"accumulation {accumulation} x micro {rm.micro_batch_pairs} pairs"
        )
        + f"; identity {identity.digest}",
    )

    def heldout_accuracy() -> float:
        return evaluate_accuracy(
            backend,
            heldout,
            cfg.data.pad_token_id,
            rm.micro_batch_pairs,
            token_budget=plan.token_budget,
        )

    metrics = MetricsLog(paths.train_metrics, enabled=rank == 0)
    store = CheckpointStore(paths.checkpoints(STAGE), backend, identity)
    stop = StopFlag().install()
    trainer = Trainer(
        backend,
        train,
        plan,
        schedule,
        cfg.data.pad_token_id,
        store=store,
        checkpoint_every=rm.checkpoint_every,
        meta={"num_updates": plan.num_updates, "kept_pairs": len(train)},
        metrics=metrics,
        stop=stop,
        evaluate=heldout_accuracy if heldout is not None else None,
        eval_every=rm.eval_every,
    )
    code = 0
    try:
        start = trainer.resume()  # before MLflow: a resumed attempt continues its own run
        with stage_run(cfg, paths, STAGE, resume=start > 0) as tr:
            tags = {"world_size": world, "backend": backend.name, "packing": rm.packing}
            tr.set_tags(tags | ({} if rm.packing else {"accumulation_steps": accumulation}))
            # the prepared pairs as MLflow dataset inputs (digest = sha256 of the parquet)
            tr.log_dataset("train", paths.prepared("train"))
            if heldout is not None:
                tr.log_dataset("heldout", paths.prepared("heldout"), context="evaluation")
            if backend.name == "deepspeed" and rank == 0:
                ds_path = paths.stage_dir(STAGE) / "deepspeed_config.json"
                write_json(ds_path, backend.config)
                tr.log_artifact(ds_path)

            def on_update(m: UpdateMetrics) -> None:
                values = {k: v for k, v in vars(m).items() if k != "update" and v is not None}
                tr.log_metrics(values, step=m.update)

            def on_checkpoint(folder, next_update: int) -> None:
                # by path only: a 70B checkpoint is far too big to upload
                tr.set_tags(
                    {
                        "checkpoint.latest": str(folder.resolve()),
                        "checkpoint.next_update": next_update,
                    }
                )

            trainer.on_update, trainer.on_checkpoint = on_update, on_checkpoint
            if start:
                _log(rank, f"resumed from {trainer.resumed_from} at update {start}")
                tr.set_tags({"resumed_from_update": start})
            try:
                result = trainer.fit(start)
            except Preempted as exc:
                tr.set_tags({"preempted_at_update": exc.next_update})
                _log(rank, f"{exc}; exiting with {EXIT_PREEMPTED}")
                raise
            heldout_acc = heldout_accuracy() if heldout is not None else None
            state = backend.full_state_dict()
            if rank == 0:
                save_state_dict(paths.trained_state, state)
                final = result.final
                summary = {
                    "updates": plan.num_updates,
                    "warmup_updates": schedule.warmup,
                    "accumulation_steps": accumulation,
                    "world_size": world,
                    "backend": backend.name,
                    "zero_stage": rm.zero_stage if backend.name != "torch" else None,
                    "kept_pairs": len(train),
                    "total_batch_pairs": rm.total_batch_pairs,
                    "micro_batch_pairs": rm.micro_batch_pairs,
                    "length_grouped": rm.length_grouped,
                    "packing": rm.packing,
                    "token_budget": rm.token_budget if rm.packing else None,
                    "final_loss": final.loss if final else None,
                    "final_accuracy": final.accuracy if final else None,
                    "heldout_accuracy": heldout_acc,
                    "heldout_pairs": len(heldout) if heldout is not None else 0,
                    "wall_s": round(time.time() - t_start, 3),
                    "resumed_from_update": result.resumed_from_update,
                }
                # record files whole from memory, checked by write_manifest: a metrics.jsonl
                # deleted or cut short while training ran is rewritten, never hashed as is
                written = {
                    paths.train_metrics.name: metrics.finish(),
                    paths.train_summary.name: write_json(paths.train_summary, summary),
                }
                outputs = (paths.trained_state, paths.train_summary, paths.train_metrics)
                manifest = write_manifest(
                    paths.manifest(STAGE),
                    paths.stage_dir(STAGE),
                    [p.name for p in outputs],
                    written=written,
                )
                store.complete()  # a rerun of a finished stage never resumes these
                tr.log_metrics(
                    {
                        k: summary[k]
                        for k in ("final_loss", "heldout_accuracy", "wall_s")
                        if summary[k] is not None
                    },
                    step=plan.num_updates,
                )
                tr.log_artifact(paths.train_summary)
                sha = manifest["files"][paths.trained_state.name]
                tr.log_file_ref("final_state", paths.trained_state, sha)
                _log(
                    rank,
                    f"done: {plan.num_updates} updates, final loss {summary['final_loss']:.4f}, "
                    f"held-out accuracy {heldout_acc}, {summary['wall_s']:.1f} s",
                )
    except Preempted:
        code = EXIT_PREEMPTED
    except NonFiniteError as exc:
        _log(0, str(exc))
        code = EXIT_NONFINITE
    finally:
        stop.uninstall()
    backend.close()  # every rank passed the final barrier (the CLI may then leave with os._exit)
    return code
