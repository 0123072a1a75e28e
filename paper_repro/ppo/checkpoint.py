"""PPO checkpoints: ``checkpoints/ppo/step-NNNNNN/`` (NNNNNN = the next step to run) + ``latest``.

The save protocol is RM training's (``checkpoints.CheckpointDir``). Each checkpoint carries the
metrics lines so far and the "before" evaluation (in ``meta``), because Snakemake deletes the
stage's declared outputs (``ppo/metrics.jsonl``) before a rerun. All randomness of a step is
derived from (seed, step), so no RNG state needs saving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import CheckpointDir

STATE_FILE = "state.pt"


@dataclass
class Resumed:
    folder: Path
    next_step: int
    meta: dict[str, Any]
    metrics: list[str]


class PPOCheckpoints:
    """``rank``/``barrier``: with several ranks (DeepSpeed) every rank writes its ZeRO shards into
    the temporary folder (``write_shards``) between barriers, and rank 0 alone writes the rest."""

    def __init__(self, root: str | Path, rank: int = 0, barrier: Callable[[], None] = lambda: None):
        self.dir = CheckpointDir(root, "step", rank=rank, barrier=barrier)
        self.root = self.dir.root

    def latest(self) -> Path | None:
        return self.dir.latest(required=("meta.json", STATE_FILE))

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

    def load(self, folder: Path, expect: dict[str, Any]) -> tuple[dict[str, Any], Resumed]:
        """Check ``meta.json`` against this run (config hash, prompt split); returns the trainer
        state and what the stage needs to continue."""
        meta = self.dir.check(folder, expect)
        state = torch.load(folder / STATE_FILE, weights_only=False)
        return state, Resumed(folder, int(meta["next_step"]), meta, CheckpointDir.metrics(folder))
