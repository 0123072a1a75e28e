"""The reward-model training loop: one loop for both backends, preemption-safe.

Per update ``k`` (docs/fidelity.md §3): the rank's micro batches of the
update-group (``batching.BatchPlan``: packed by a token budget, or padded) each go through one
forward over ``[chosen; rejected]``; the reward is the score at each sequence's last token, the EOS
(``read_last``); every micro batch backpropagates the sum of its pairs' Bradley-Terry losses divided
by the group's pair count, so the gradients add up to those of the mean over the whole group
whatever the micro batches hold (up to summation order); then one clipped AdamW update at ``lr_k``
(``schedule.LRSchedule``). Metrics cover the whole group (all ranks).

Preemption: SIGTERM, SIGUSR1 (what Slurm sends before a time limit or a preemption) and SIGINT
(Ctrl-C; a second one stops at once) only set a flag. At the next update boundary the ranks agree
on it, write a checkpoint and raise ``Preempted``; the CLI exits with ``EXIT_PREEMPTED`` (75 =
EX_TEMPFAIL, "try again"). A rerun of the same stage identity resumes from the latest good
checkpoint and ends with bitwise the same weights (plain torch); see ``checkpoints.py`` for
identity, verification and the save protocol. A non-finite loss, reward or gradient norm stops the
run at once (``NonFiniteError``, ``EXIT_NONFINITE``) without applying that update or
checkpointing it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import progress
from ..provenance.identity import StageIdentity
from ..provenance.io import parse_json, write_json
from .batching import Batch, BatchPlan, balanced_micro_batches, make_batch, pair_tokens
from .checkpoints import CheckpointDir, ResumeError
from .modeling import bradley_terry_loss, pair_losses
from .runstate import (
    MetricsLog,
    Preempted,
    StopFlag,
    rng_state,
    set_rng_state,
)
from .schedule import LRSchedule

PoolFn = Callable[[torch.Tensor, Batch], torch.Tensor]  # (scores, batch) -> reward per sequence


def read_last(scores: torch.Tensor, batch: Batch) -> torch.Tensor:
    """EasyLM pooling (docs/fidelity.md §3): the score at each sequence's last token, the EOS."""
    return scores[batch.last]


class NonFiniteError(RuntimeError):
    def __init__(self, update: int, what: str):
        self.update = update
        super().__init__(
            f"non-finite {what} at update {update} (0-based); stopping, the last good "
            "checkpoint is kept"
        )


# --------------------------------------------------------------------------- metrics


@dataclass
class UpdateMetrics:
    update: int
    lr: float
    loss: float
    accuracy: float
    reward_chosen_mean: float
    reward_chosen_std: float
    reward_rejected_mean: float
    reward_rejected_std: float
    margin: float
    grad_norm: float
    tokens: int  # non-pad tokens of the update (all ranks)
    padding_fraction: float
    micro_batches: int  # forwards per rank in this update
    seconds: float
    tokens_per_s: float
    pairs_per_s: float
    heldout_accuracy: float | None = None  # every ``eval_every`` updates, else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# --------------------------------------------------------------------------- checkpoints


class CheckpointStore:
    """RM-training checkpoints ``<root>/update-NNNNNN/`` (NNNNNN = the next update to run): the
    backend state of every rank plus each rank's RNG (``rng-rank<r>.json``), saved and verified
    by ``checkpoints.CheckpointDir`` under the stage identity."""

    def __init__(self, root: Path, backend, identity: StageIdentity):
        self.backend = backend
        self.dir = CheckpointDir(root, "update", identity, group=backend)
        self.root = self.dir.root

    def resume_point(self) -> Path | None:
        """Set aside checkpoints of another identity or a completed run, then the newest good one."""
        self.dir.prepare()
        return self.dir.resume_point()

    def save(self, next_update: int, meta: dict[str, Any], metrics: list[str]) -> Path:
        b = self.backend

        def every_rank(tmp: Path) -> None:
            b.save_checkpoint(tmp)
            write_json(tmp / f"rng-rank{b.rank}.json", rng_state())

        return self.dir.save(
            next_update, {**meta, "next_update": next_update}, metrics, every_rank=every_rank
        )

    def load(self, folder: Path) -> dict[str, Any]:
        """Backend state and this rank's RNG from a verified folder; returns its meta."""
        self.backend.load_checkpoint(folder)
        rng = folder / f"rng-rank{self.backend.rank}.json"
        try:
            set_rng_state(parse_json(self.dir.read_verified(folder, rng.name), rng))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ResumeError(
                f"{rng}: not a valid RNG state ({type(exc).__name__}: {exc})"
            ) from None
        return self.dir.meta(folder)

    def complete(self) -> None:
        self.dir.complete()


# --------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    updates_run: int  # in this process (after a resume: fewer than the plan's total)
    final: UpdateMetrics | None
    resumed_from_update: int | None


class Trainer:
    """``fit()`` runs updates ``start .. plan.num_updates - 1``. ``pool`` is the reward read-out
    (tests pass a deliberately wrong one to prove the accuracy test can fail)."""

    def __init__(
        self,
        backend,
        pairs,
        plan: BatchPlan,
        schedule: LRSchedule,
        pad_id: int,
        *,
        store: CheckpointStore | None = None,
        checkpoint_every: int = 0,
        meta: dict[str, Any] | None = None,
        metrics: MetricsLog | None = None,
        on_update: Callable[[UpdateMetrics], None] | None = None,
        stop: StopFlag | None = None,
        pool: PoolFn = read_last,
        progress: bool = True,
        evaluate: Callable[[], float] | None = None,
        eval_every: int = 0,
        on_checkpoint: Callable[[Path, int], None] | None = None,
    ):
        if schedule.total != plan.num_updates:
            raise ValueError(f"schedule has {schedule.total} updates, data plan {plan.num_updates}")
        self.backend, self.pairs, self.plan, self.schedule = backend, pairs, plan, schedule
        self.pad_id, self.store, self.checkpoint_every = pad_id, store, checkpoint_every
        self.meta = meta or {}
        self.metrics = metrics or MetricsLog(None)
        self.on_update, self.stop, self.pool, self.progress = on_update, stop, pool, progress
        self.evaluate, self.eval_every, self.on_checkpoint = evaluate, eval_every, on_checkpoint
        self.resumed_from: Path | None = None

    def resume(self) -> int:
        """Load the newest good checkpoint of this identity, if any; returns the update to start
        from (0: a fresh start, the metrics file restarts too)."""
        folder = self.store.resume_point() if self.store is not None else None
        if folder is None:
            self.metrics.restore([])
            return 0
        meta = self.store.load(folder)
        self.metrics.restore(self.store.dir.metrics(folder))
        self.resumed_from = folder
        return int(meta["next_update"])

    def fit(self, start: int = 0) -> TrainResult:
        b, plan = self.backend, self.plan
        bar = progress(
            total=plan.num_updates,
            initial=start,
            desc="train_rm",
            unit="update",
            disable=not self.progress or b.rank != 0,
        )
        last = None
        try:
            for k in range(start, plan.num_updates):
                last = self._update(k)
                due = self.eval_every and (k + 1) % self.eval_every == 0
                if self.evaluate is not None and due and k + 1 < plan.num_updates:
                    last.heldout_accuracy = self.evaluate()  # all ranks (ZeRO-3 forwards)
                if b.rank == 0:
                    self.metrics.append(last.to_json())
                    if self.on_update is not None:
                        self.on_update(last)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{last.loss:.4f}",
                    acc=f"{last.accuracy:.3f}",
                    pairs_s=f"{last.pairs_per_s:.1f}",
                    tok_s=f"{last.tokens_per_s:.0f}",
                )
                stop = b.any_true(self.stop is not None and self.stop.requested)
                periodic = self.checkpoint_every and (k + 1) % self.checkpoint_every == 0
                if self.store is not None and (stop or (periodic and k + 1 < plan.num_updates)):
                    folder = self.store.save(k + 1, self.meta, self.metrics.lines)
                    if self.on_checkpoint is not None and b.rank == 0:
                        self.on_checkpoint(folder, k + 1)
                    if stop:
                        raise Preempted(k + 1, folder)
        finally:
            bar.close()
        return TrainResult(plan.num_updates - start, last, start or None)

    def _update(self, k: int) -> UpdateMetrics:
        b, plan = self.backend, self.plan
        t0 = time.perf_counter()
        b.train()
        chosen, rejected, finite = [], [], True
        tokens = padded = 0
        micro = plan.micro_batches(k, b.rank)
        for m, idx in enumerate(micro):
            batch = make_batch(self.pairs, idx, self.pad_id, packed=plan.packed).to(b.device)
            r = self.pool(b.scores(batch), batch)
            r_c, r_r = r[: batch.n_pairs], r[batch.n_pairs :]
            loss = pair_losses(r_c, r_r).sum() / plan.total_batch
            finite = finite and bool(torch.isfinite(loss)) and bool(torch.isfinite(r).all())
            b.backward(loss, last=m == len(micro) - 1)
            chosen.append(r_c.detach().float())
            rejected.append(r_r.detach().float())
            tokens += batch.tokens
            padded += batch.padded_tokens
        if not b.all_true(finite):
            raise NonFiniteError(k, "loss or reward")
        lr = self.schedule(k)
        grad_norm = b.step(lr)
        if not math.isfinite(grad_norm):
            raise NonFiniteError(k, "gradient norm")
        _, stats = bradley_terry_loss(b.gather(torch.cat(chosen)), b.gather(torch.cat(rejected)))
        tokens, padded = int(b.sum(tokens)), int(b.sum(padded))
        dt = time.perf_counter() - t0
        return UpdateMetrics(
            update=k,
            lr=lr,
            **asdict(stats),
            grad_norm=grad_norm,
            tokens=tokens,
            padding_fraction=1.0 - tokens / padded,
            micro_batches=len(micro),
            seconds=dt,
            tokens_per_s=tokens / dt,
            pairs_per_s=plan.total_batch / dt,
        )


@torch.no_grad()
def evaluate_accuracy(
    backend,
    pairs,
    pad_id: int,
    micro_batch: int,
    pool: PoolFn = read_last,
    *,
    token_budget: int | None = None,
) -> float:
    """Pairwise accuracy (strict >) over all pairs, sharded over ranks: ``micro_batch`` pairs per
    padded forward, or with ``token_budget`` packed forwards balanced over the ranks. Under ZeRO-3
    every rank must run the same number of forwards, so pair 0 fills in where there are too few
    pairs (its result is not counted)."""
    n, world, rank = len(pairs.chosen), backend.world_size, backend.rank
    if token_budget is None:
        per_rank = math.ceil(n / world)
        mine = np.arange(rank, n, world)
        shard = np.concatenate([mine, np.zeros(per_rank - len(mine), dtype=np.int64)])
        counted = np.arange(per_rank) < len(mine)
        steps = [
            (shard[a : a + micro_batch], counted[a : a + micro_batch])
            for a in range(0, per_rank, micro_batch)
        ]
    else:
        positions = np.arange(math.ceil(n / world) * world)  # whole pairs for every rank
        index = positions % n
        cuts = balanced_micro_batches(pair_tokens(pairs)[index], world, token_budget)[rank]
        steps = [(index[c], positions[c] < n) for c in cuts]
    backend.eval()
    correct = 0.0
    for idx, count in steps:
        batch = make_batch(pairs, idx, pad_id, packed=token_budget is not None).to(backend.device)
        r = pool(backend.scores(batch), batch)
        wins = r[: batch.n_pairs] > r[batch.n_pairs :]
        correct += float(wins[torch.from_numpy(count).to(wins.device)].sum())
    return backend.sum(correct) / n
