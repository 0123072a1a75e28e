"""Preemption checkpoints of a training stage: ``<root>/<prefix>-NNNNNN/`` + a ``latest`` file.

NNNNNN is the next update/step to run. Save protocol (shared by RM training and PPO): every rank
writes into ``<root>/.tmp-<name>`` between barriers; rank 0 then adds its files, ``meta.json`` and
the metrics lines so far (Snakemake deletes the stage's declared outputs before a rerun), renames
the folder, points ``latest`` at it and only then deletes older checkpoints. A kill at any point
leaves the previous checkpoint intact. ``<root>`` is never a Snakemake output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ReproError
from .io import read_json, write_json, write_text

Writer = Callable[[Path], None]


class ResumeError(ReproError, RuntimeError):
    """A checkpoint that cannot be resumed by this run; the message says why and what to do."""


class CheckpointDir:
    def __init__(
        self,
        root: str | Path,
        prefix: str,
        rank: int = 0,
        barrier: Callable[[], None] = lambda: None,
    ):
        self.root, self.prefix, self.rank, self.barrier = Path(root), prefix, rank, barrier

    def latest(self, required: tuple[str, ...] = ("meta.json",)) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text().strip()
        missing = [name for name in required if not (folder / name).is_file()]
        if missing:
            raise ResumeError(
                f"{pointer} names {folder}, which lacks {', '.join(missing)}; "
                f"delete {self.root} to start over"
            )
        return folder

    def save(
        self,
        index: int,
        meta: dict[str, Any],
        metrics: list[str],
        *,
        every_rank: Writer | None = None,
        rank_zero: Writer | None = None,
    ) -> Path:
        """``every_rank(tmp)`` runs on all ranks (ZeRO shards, per-rank RNG), ``rank_zero(tmp)``
        on rank 0 only; ``meta`` should name the next update/step to run."""
        name = f"{self.prefix}-{index:06d}"
        tmp, final = self.root / f".tmp-{name}", self.root / name
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        if every_rank is not None:
            every_rank(tmp)
        self.barrier()
        if self.rank == 0:
            if rank_zero is not None:
                rank_zero(tmp)
            write_text(tmp / "metrics.jsonl", "".join(line + "\n" for line in metrics))
            write_json(tmp / "meta.json", meta)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            write_text(self.root / "latest", name + "\n")
            for old in self.root.glob(f"{self.prefix}-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return final

    def check(self, folder: Path, expect: dict[str, Any]) -> dict[str, Any]:
        """``meta.json`` of ``folder`` must agree with this run on every key of ``expect``."""
        meta = read_json(folder / "meta.json")
        for key in ("backend", "world_size"):
            name = key.replace("_", " ")
            if key in expect and meta.get(key) != expect[key]:
                raise ResumeError(
                    f"{folder}: written with {name} {meta.get(key)!r}, this run has {name} "
                    f"{expect[key]!r}. DeepSpeed ZeRO optimizer shards belong to one world size and "
                    f"backend: resume with {name} {meta.get(key)!r}, or delete {self.root} to start over"
                )
        for key, want in expect.items():
            if meta.get(key) != want:
                raise ResumeError(
                    f"{folder}: {key} {meta.get(key)!r} != this run's {want!r} (config or data "
                    f"changed since the checkpoint); delete {self.root} to start over"
                )
        return meta

    @staticmethod
    def metrics(folder: Path) -> list[str]:
        return [ln for ln in (folder / "metrics.jsonl").read_text().splitlines() if ln.strip()]
