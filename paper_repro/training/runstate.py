"""What a training loop keeps across a preemption, shared by ``train_rm`` (``engine.Trainer``) and
``ppo``: the stop flag that turns SIGTERM/SIGUSR1/SIGINT into a checkpoint at the next update
boundary, the exit codes, ``metrics.jsonl`` written in whole lines, and every RNG as plain JSON
(never a pickle)."""

from __future__ import annotations

import base64
import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..provenance.io import write_text

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: checkpoint written, rerun to resume
EXIT_NONFINITE = 3  # NaN/Inf loss, reward or gradient norm; the last good checkpoint is kept
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, next_update: int, checkpoint: Path):
        self.next_update, self.checkpoint = next_update, checkpoint
        super().__init__(f"preempted: checkpoint {checkpoint} resumes at update {next_update}")


class StopFlag:
    """Records SIGTERM/SIGUSR1/SIGINT instead of dying mid-update; a second SIGINT (Ctrl-C twice)
    raises ``KeyboardInterrupt`` at once (a partial checkpoint folder is removed on the next start)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> StopFlag:
        for sig in PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def append_line(path: Path, line: str) -> None:
    """Append one whole line: one ``write`` on an O_APPEND descriptor, and on a failure (disk
    full) the file is cut back to its previous length, so no torn line is ever left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        data = (line + "\n").encode()
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"{path}: short write")
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


class MetricsLog:
    """``metrics.jsonl`` (rank 0). The lines also travel inside every checkpoint: ``restore``
    rewrites the file from them on resume (even after Snakemake deleted the preempted attempt's
    outputs, and dropping a line torn by a crash), and ``append`` adds whole lines only (a live
    view). ``finish`` rewrites the file whole from the lines held in memory before the stage
    hashes it into its manifest: a file deleted or cut short while the stage ran (Snakemake
    removing the outputs of a job refused by the stage lock) is never what the manifest records."""

    def __init__(self, path: Path | None, enabled: bool = True):
        self.path, self.enabled, self.lines = path, enabled, []

    def restore(self, lines: list[str]) -> None:
        self.lines = list(lines)
        if self.enabled and self.path is not None:
            write_text(self.path, "".join(line + "\n" for line in self.lines))

    def append(self, line: str) -> None:
        self.lines.append(line)
        if self.enabled and self.path is not None:
            append_line(self.path, line)

    def finish(self) -> str | None:
        """Rewrite the file whole (atomically) from memory; returns the sha256 of its bytes."""
        if not (self.enabled and self.path is not None):
            return None
        return write_text(self.path, "".join(line + "\n" for line in self.lines))


def _bytes(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """Every RNG of this process as plain JSON (never a pickle): torch (and CUDA) generator bytes
    in base64, numpy's MT19937 keys and python's Mersenne twister as integer lists."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {
        "torch": _bytes(torch.get_rng_state()),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(mt), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_bytes(s.cpu()) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(_tensor(state["torch"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, mt, gauss_next = state["python"]
    random.setstate((version, tuple(mt), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_tensor(s) for s in state["cuda"]])
