"""One writer per stage folder, and stage processes that die with the job that started them.

``stage_lock``: an exclusive ``flock`` on ``results/<run>/<stage>/.lock`` for the whole run of the
stage (rank 0 of a launcher group only). The kernel drops it when the holder dies, whatever the
way, so a crash never leaves a stale lock behind. A second process on the same stage gets
``StageBusy`` naming the holder's PID and host. On a network file system this needs working
``flock`` (NFSv4, or Lustre mounted with ``-o flock``).

``die_with_parent``: ``PR_SET_PDEATHSIG`` (Linux): the stage gets SIGTERM when the process that
started it dies, e.g. Snakemake SIGKILLed (the workflow ``exec``s the stage, so that parent is
Snakemake itself; workflow/scripts/launch.sh does the same for torchrun). A trainer takes SIGTERM
as a preemption: it checkpoints at the next update boundary and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ReproError
from .paths import RunPaths

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StageBusy(ReproError):
    """Another process holds the stage folder (one line naming its PID and host)."""


def lock_path(paths: RunPaths, stage: str) -> Path:
    return paths.stage_dir(stage) / ".lock"


@contextlib.contextmanager
def stage_lock(paths: RunPaths, stage: str) -> Iterator[Path]:
    path = lock_path(paths, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = "another process"
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                h = json.loads(Path(path).read_text())
                holder = f"PID {h['pid']} on host {h['host']} (since {h['since']})"
            raise StageBusy(
                f"{paths.stage_dir(stage)} is in use by {holder}; wait for it to finish or stop "
                f"it (lock: {path})"
            ) from None
        since = time.strftime("%Y-%m-%dT%H:%M:%S")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
