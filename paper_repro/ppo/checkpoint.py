"""PPO checkpoints: ``checkpoints/ppo/step-NNNNNN/`` (NNNNNN = the next step to run) + ``latest``.

Same protocol as RM training (``engine.CheckpointStore``): written to a temporary folder, renamed,
then ``latest`` is pointed at it and older ones are deleted, so a kill during a save keeps the
previous checkpoint. Each checkpoint carries the metrics lines so far and the "before" evaluation,
because Snakemake deletes the stage's declared outputs (``ppo/metrics.jsonl``) before a rerun.
All randomness of a step is derived from (seed, step), so no RNG state needs saving.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine import ResumeError
from ..io import read_json, write_json, write_text

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
        self.root, self.rank, self.barrier = Path(root), rank, barrier

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text().strip()
        if not (folder / "meta.json").is_file() or not (folder / STATE_FILE).is_file():
            raise ResumeError(
                f"{pointer} names {folder}, which lacks meta.json or {STATE_FILE}; "
                f"delete {self.root} to start over"
            )
        return folder

    def save(
        self,
        next_step: int,
        state: dict[str, Any],
        meta: dict[str, Any],
        metrics: list[str],
        write_shards: Callable[[Path], None] | None = None,
    ) -> Path:
        name = f"step-{next_step:06d}"
        tmp, final = self.root / f".tmp-{name}", self.root / name
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        if write_shards is not None:
            write_shards(tmp)
        self.barrier()
        if self.rank == 0:
            torch.save(state, tmp / STATE_FILE)
            write_text(tmp / "metrics.jsonl", "".join(line + "\n" for line in metrics))
            write_json(tmp / "meta.json", {**meta, "next_step": next_step})
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            write_text(self.root / "latest", name + "\n")
            for old in self.root.glob("step-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return final

    def load(self, folder: Path, expect: dict[str, Any]) -> tuple[dict[str, Any], Resumed]:
        """Check ``meta.json`` against this run (config hash, prompt split); returns the trainer
        state and what the stage needs to continue."""
        meta = read_json(folder / "meta.json")
        for key in ("backend", "world_size"):
            if key in expect and meta.get(key) != expect[key]:
                raise ResumeError(
                    f"{folder}: written with {key} {meta.get(key)!r}, this run has {key} "
                    f"{expect[key]!r}. DeepSpeed ZeRO optimizer shards and the per-rank prompt "
                    f"slices belong to one world size and backend: resume with {key} "
                    f"{meta.get(key)!r}, or delete {self.root} to start over"
                )
        for key, want in expect.items():
            if meta.get(key) != want:
                raise ResumeError(
                    f"{folder}: {key} {meta.get(key)!r} != this run's {want!r} (config "
                    f"or data changed since the checkpoint); delete {self.root} to "
                    "start over"
                )
        state = torch.load(folder / STATE_FILE, weights_only=False)
        lines = [ln for ln in (folder / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        return state, Resumed(folder, int(meta["next_step"]), meta, lines)
