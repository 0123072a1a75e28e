"""One writer per stage folder, and stage processes that die with the job that started them.

``stage_lock``: an exclusive ``flock`` on ``results/<run>/<stage>/.lock`` for the whole run of the
stage (rank 0 of a launcher group only). The kernel drops it when the holder dies, whatever the
way, so a crash never leaves a stale lock behind. A second process on the same stage gets
``StageBusy`` naming the holder's PID and host. On a network file system this needs working
``flock`` (NFSv4, or Lustre mounted with ``-o flock``). The lock file is opened with
``O_NOFOLLOW``: a ``.lock`` that is a symbolic link (or not a regular file) is refused in one line,
so the holder record is never written through it into another file. ``held_by`` takes the same
lock for a moment (integrity.py's quarantine: never move the files of a running stage);
``running`` a shared one (integrity.py: a consumer of a running stage refuses to start).

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
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ReproError
from .paths import RunPaths

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StageBusy(ReproError):
    """Another process holds the stage folder (one line naming its PID and host)."""


class LockFileError(ReproError):
    """The lock file is a symbolic link or not a regular file."""


def lock_path(paths: RunPaths, stage: str) -> Path:
    return paths.stage_dir(stage) / ".lock"


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, never through a symbolic link (O_NOFOLLOW)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise LockFileError(
                f"{path}: is a symbolic link (to {os.readlink(path)}); a stage lock is never "
                "followed, remove the link"
            ) from None
        raise LockFileError(f"{path}: cannot open the stage lock ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockFileError(f"{path}: not a regular file; remove it")
    return fd


def _holder(path: Path) -> str:
    holder = "another process"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            h = json.loads(f.read(4096))
        holder = f"PID {h['pid']} on host {h['host']} (since {h['since']})"
    return holder


@contextlib.contextmanager
def held_by(paths: RunPaths, stage: str) -> Iterator[str | None]:
    """Yields who holds ``stage``'s lock, or None; in that case the lock is held by this process
    until the block ends (so the stage cannot start meanwhile)."""
    fd = _open_lock(lock_path(paths, stage))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _holder(lock_path(paths, stage))
            return
        yield None
    finally:
        os.close(fd)


def running(paths: RunPaths, stage: str) -> str | None:
    """Who is running ``stage`` now (its holder), or None. A shared lock for a moment: consumers
    checking the same upstream at once do not see each other, a stage holding its exclusive lock
    is seen. Creates nothing (a stage that never ran has no lock file)."""
    path = lock_path(paths, stage)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # no lock file: never started here (a link is refused when the stage starts)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)  # releases the shared lock
    return None


@contextlib.contextmanager
def stage_lock(paths: RunPaths, stage: str) -> Iterator[Path]:
    path = lock_path(paths, stage)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageBusy(
                f"{paths.stage_dir(stage)} is in use by {_holder(path)}; wait for it to finish "
                f"or stop it (lock: {path})"
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
