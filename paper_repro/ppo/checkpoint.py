"""PPO checkpoints: ``checkpoints/ppo/step-NNNNNN/`` (NNNNNN = the next step to run).

The protocol (identity, verification, keeping the last two, save) is RM training's
(``checkpoints.CheckpointDir``). Each checkpoint carries the metrics lines so far and the "before"
evaluation (in ``meta``), because Snakemake deletes the stage's declared outputs
(``ppo/metrics.jsonl``) before a rerun. All randomness of a step is derived from (seed, step), so
no RNG state needs saving. ``state.pt`` holds tensors and numbers only and is read with
``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..provenance.identity import StageIdentity
from ..training.checkpoints import CheckpointDir, Group, load_torch

STATE_FILE = "state.pt"


@dataclass
class Resumed:
    folder: Path
    next_step: int
    meta: dict[str, Any]
    metrics: list[str]


class PPOCheckpoints:
    """``group``: the trainer; with several ranks (DeepSpeed) every rank writes its ZeRO shards
    into the temporary folder (``write_shards``) between barriers, and rank 0 alone the rest."""

    def __init__(self, root: str | Path, identity: StageIdentity, group: Group | None = None):
        self.dir = CheckpointDir(root, "step", identity, group=group)
        self.root = self.dir.root

    def resume_point(self) -> Path | None:
        self.dir.prepare()
        return self.dir.resume_point()

    def save(
        self,
        next_step: int,
        state: dict[str, Any],
        meta: dict[str, Any],
        metrics: list[str],
        write_shards: Callable[[Path], None] | None = None,
    ) -> Path:
        return self.dir.save(
            next_step,
            {**meta, "next_step": next_step},
            metrics,
            every_rank=write_shards,
            rank_zero=lambda tmp: torch.save(state, tmp / STATE_FILE),
        )

    def load(self, folder: Path) -> tuple[dict[str, Any], Resumed]:
        """The trainer state of a verified folder and what the stage needs to continue."""
        meta = self.dir.meta(folder)
        state = load_torch(folder / STATE_FILE, data=self.dir.read_verified(folder, STATE_FILE))
        return state, Resumed(folder, int(meta["next_step"]), meta, self.dir.metrics(folder))

    def complete(self) -> None:
        self.dir.complete()
