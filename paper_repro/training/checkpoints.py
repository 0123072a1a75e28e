"""Preemption checkpoints of a training stage: ``<root>/<prefix>-NNNNNN/``, NNNNNN = the next
update/step to run. Shared by RM training and PPO.

Identity. ``<root>/identity.json`` names the ``StageIdentity`` every checkpoint in the folder was
written under. ``prepare()`` moves the whole folder aside (kept, never deleted) when this run's
identity differs, or when the run that wrote it completed (``complete()``): a changed config,
code, upstream artifact or world size, and any rerun of a finished stage (``--forcerun``, ``-R``),
train from update 0. One log line says which part of the identity changed and where the old
checkpoints went. Only an interrupted run of the same identity resumes.

Save protocol: every rank writes into ``<root>/.tmp-<name>`` between barriers and hashes its share
of the files (a 70B ZeRO checkpoint is ~1 TB: the hashing is spread over the ranks); rank 0 adds
its files, the metrics lines so far (Snakemake deletes a stage's outputs before a rerun),
``meta.json`` with the sha256 of every file and ``meta.json.sha256``, renames the folder, points
``latest`` at it (for people; the loader scans the folder) and deletes all but the previous one. A
kill at any moment leaves the two last good checkpoints; leftover ``.tmp-*`` folders are removed on
failure and on the next start.

Verification: ``resume_point()`` takes the newest checkpoint whose files all match their sha256
(ranks share the hashing and agree); one that does not is renamed ``<name>.corrupt-<time>`` with
one log line and the previous one is used. Files are then loaded as plain tensors and numbers only
(``torch.load(weights_only=True)``, JSON): a file that needs anything else is refused
(``ResumeError``, exit 2), whatever its sha256.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import ReproError, free_bytes, human_bytes
from ..provenance.identity import StageIdentity
from ..provenance.io import parse_json, read_json, sha256_file, write_json, write_text

Writer = Callable[[Path], None]
IDENTITY = "identity.json"
COMPLETE = "complete.json"
META = "meta.json"
META_SHA = "meta.json.sha256"


class ResumeError(ReproError, RuntimeError):
    """A checkpoint that cannot be resumed by this run; the message says why and what to do."""


class CheckpointSpaceError(ReproError, OSError):
    """The disk filled up while a checkpoint was written: the partial one is removed, the previous
    ones are untouched; the message names both and the free space."""


# torch.save reports a failed write as a RuntimeError from its zip writer ("unexpected pos ..."),
# safetensors as a SafetensorError ("... (os error 28)"); neither is an OSError with an errno.
WRITE_FAILED = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")
TORCH_WRITER = ("unexpected pos", "file write failed", "PytorchStreamWriter", "iostream error")
LOW_SPACE = 1 << 20  # below this after a failed write, the write failed for want of space


def out_of_space(exc: BaseException, folder: Path) -> bool:
    """True when ``exc`` (raised while writing into ``folder``) means the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if any(m in text for m in WRITE_FAILED):
        return True
    free = free_bytes(folder)
    return any(m in text for m in TORCH_WRITER) and free is not None and free < LOW_SPACE


class Group(Protocol):
    """The ranks of a stage: what the protocol needs from a backend or trainer."""

    rank: int
    world_size: int

    def barrier(self) -> None: ...
    def all_true(self, flag: bool) -> bool: ...


class Solo:
    rank, world_size = 0, 1

    def barrier(self) -> None:
        pass

    def all_true(self, flag: bool) -> bool:
        return bool(flag)


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative names, sorted), the protocol's own files excepted."""
    own = {META, META_SHA}
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name not in own and not p.name.startswith(".sha256-rank")
    )


def load_torch(
    path: Path, map_location=None, safe_globals: tuple = (), data: bytes | None = None
) -> Any:
    """``torch.load`` of tensors, numbers, strings and containers only (no pickled code); anything
    else is a ``ResumeError`` naming the file. ``data``: the file's bytes, already read and checked
    (``CheckpointDir.read_verified``), loaded instead of reading ``path`` again."""
    import io
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            source = path if data is None else io.BytesIO(data)
            return torch.load(source, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResumeError(
            f"{path}: refused to load as plain tensors and numbers ({first[:160]}); "
            f"move {path.parent} away if you did not put it there"
        ) from None


class CheckpointDir:
    def __init__(
        self,
        root: str | Path,
        prefix: str,
        identity: StageIdentity,
        group: Group | None = None,
    ):
        self.root, self.prefix, self.identity = Path(root), prefix, identity
        self.group = group or Solo()
        self.rank = self.group.rank
        # {checkpoint folder: its meta.json, parsed from the bytes resume_point hashed}
        self._verified: dict[Path, dict[str, Any]] = {}

    def log(self, msg: str) -> None:
        """One line on stderr (the stage's log), rank 0 only."""
        if self.rank == 0:
            print(f"{self.identity.stage}: {msg}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ identity
    def prepare(self) -> None:
        """Remove partial folders; move the checkpoints of another identity or of a completed run
        aside. Call on every rank before ``resume_point``."""
        if self.rank == 0 and self.root.is_dir():
            for tmp in self.root.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
            stale = self._stale()
            if stale is not None:
                kind, reason = stale
                old = self._recorded()
                aside = self.root.with_name(
                    f"{self.root.name}.{kind}-{stamp()}-{old.digest if old else 'unknown'}"
                )
                self.root.rename(aside)
                self.log(f"{reason}; moved {self.root} aside to {aside.name}; starting from 0")
        self.group.barrier()

    def _recorded(self) -> StageIdentity | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return StageIdentity.from_json(read_json(self.root / IDENTITY))
        return None

    def _stale(self) -> tuple[str, str] | None:
        """(how the folder set aside is named, why) when this run must not resume from it."""
        if not any(self.root.iterdir()):
            return None
        old = self._recorded()
        if old is None:
            return "superseded", "the checkpoints have no readable identity.json"
        if old != self.identity:
            changed = ", ".join(self.identity.changes(old))
            return (
                "superseded",
                f"the checkpoints were written under another identity ({changed} changed)",
            )
        if (self.root / COMPLETE).is_file():
            return (
                "completed",
                "the checkpoints belong to a run that completed (a rerun trains from the start)",
            )
        return None

    def complete(self) -> None:
        """Mark the checkpoints as those of a finished run (rank 0): never resumed again."""
        if self.rank == 0 and self.root.is_dir():
            write_json(self.root / COMPLETE, {"identity": self.identity.digest, "time": stamp()})

    # ------------------------------------------------------------------ resume
    def candidates(self) -> list[Path]:
        """Checkpoint folders, newest first (set-aside ``*.corrupt-*`` and ``.tmp-*`` excluded)."""
        found = [
            p
            for p in self.root.glob(f"{self.prefix}-*")
            if p.is_dir() and p.name.removeprefix(f"{self.prefix}-").isdigit()
        ]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def _verify_share(self, folder: Path) -> str | None:
        """This rank's share of the check; the first problem found, or None."""
        g = self.group
        try:
            meta_bytes = (folder / META).read_bytes()
            want = (folder / META_SHA).read_text().strip()
        except OSError as exc:
            return f"{exc.filename}: {exc.strerror}"
        if hashlib.sha256(meta_bytes).hexdigest() != want:
            return f"{META} does not match {META_SHA}"
        try:
            meta = parse_json(meta_bytes, folder / META)  # the bytes just hashed, not a re-read
            files = meta["files"]
        except (ValueError, KeyError, TypeError):
            return f"{META} is unreadable"
        if meta.get("identity") != self.identity.digest:
            return f"{META} names identity {meta.get('identity')}, not {self.identity.digest}"
        if set(files) != set(_files(folder)):
            return "its files differ from the list in meta.json"
        for name in sorted(files)[g.rank :: g.world_size]:
            if sha256_file(folder / name) != files[name]:
                return f"{name}: sha256 mismatch"
        self._verified[folder] = meta
        return None

    def resume_point(self) -> Path | None:
        """The newest checkpoint that verifies on every rank; bad ones are set aside."""
        for folder in self.candidates():
            problem = self._verify_share(folder)
            if self.group.all_true(problem is None):
                return folder
            if self.rank == 0:
                aside = folder.with_name(f"{folder.name}.corrupt-{stamp()}")
                folder.rename(aside)
                rest = [p for p in self.candidates() if p.name < folder.name]
                then = (
                    f"using {rest[0].name}" if rest else "no good checkpoint left, starting from 0"
                )
                self.log(
                    f"checkpoint {folder} failed verification "
                    f"({problem or 'on another rank'}); set aside as {aside.name}; {then}"
                )
            self.group.barrier()
        return None

    # ------------------------------------------------------------------ save
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
        g = self.group
        name = f"{self.prefix}-{index:06d}"
        tmp, final = self.root / f".tmp-{name}", self.root / name
        try:
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                if not (self.root / IDENTITY).is_file():
                    write_json(self.root / IDENTITY, self.identity.to_json())
            g.barrier()
            if every_rank is not None:
                every_rank(tmp)
            g.barrier()
            shared = _files(tmp)[g.rank :: g.world_size]
            write_json(
                tmp / f".sha256-rank{g.rank}.json", {f: sha256_file(tmp / f) for f in shared}
            )
            g.barrier()
            if self.rank == 0:
                self._commit(tmp, final, name, meta, metrics, rank_zero)
            g.barrier()
        except BaseException as exc:
            full = isinstance(exc, Exception) and out_of_space(exc, tmp)
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            if not full:
                raise
        else:
            return final
        # Raised outside the handler, so the failed writer (torch's keeps its file open) is
        # released first and the free space reported is what the next attempt will have.
        raise self._space_error(final)

    def _space_error(self, final: Path) -> CheckpointSpaceError:
        previous = self.candidates()
        kept = f"the previous checkpoint {previous[0]} is intact" if previous else "no earlier one"
        free = free_bytes(self.root)
        return CheckpointSpaceError(
            f"no space left on device writing checkpoint {final} "
            f"({human_bytes(free) if free is not None else 'unknown'} free there after removing "
            f"the partial one); {kept}; free space and rerun to resume"
        )

    def _commit(self, tmp, final, name, meta, metrics, rank_zero) -> None:
        hashes: dict[str, str] = {}
        for part in sorted(tmp.glob(".sha256-rank*.json")):
            hashes.update(read_json(part))
            part.unlink()
        before = set(_files(tmp))
        if rank_zero is not None:
            rank_zero(tmp)
        write_text(tmp / "metrics.jsonl", "".join(line + "\n" for line in metrics))
        hashes.update({f: sha256_file(tmp / f) for f in _files(tmp) if f not in before})
        write_json(tmp / META, {**meta, "identity": self.identity.digest, "files": hashes})
        write_text(tmp / META_SHA, sha256_file(tmp / META) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        write_text(self.root / "latest", name + "\n")
        for old in self.candidates()[2:]:  # keep this one and the previous good one
            shutil.rmtree(old, ignore_errors=True)

    def meta(self, folder: Path) -> dict[str, Any]:
        """The meta.json of a checkpoint ``resume_point`` returned, as parsed from the bytes it
        hashed there (never read again)."""
        try:
            return self._verified[Path(folder)]
        except KeyError:
            raise ResumeError(f"{folder}: not verified by this run (resume_point)") from None

    def read_verified(self, folder: Path, name: str) -> bytes:
        """The bytes of checkpoint file ``name``, read once and checked against the sha256 that
        the verified meta.json lists: what is parsed is what was hashed."""
        data = (Path(folder) / name).read_bytes()
        want = self.meta(folder)["files"].get(name)
        if want is None or hashlib.sha256(data).hexdigest() != want:
            raise ResumeError(
                f"{Path(folder) / name}: changed after the checkpoint was verified (not the "
                f"sha256 its {META} lists); move {folder} away if nothing else writes there"
            )
        return data

    def metrics(self, folder: Path) -> list[str]:
        """The metrics lines saved with a verified checkpoint (from the bytes checked)."""
        text = self.read_verified(folder, "metrics.jsonl").decode("utf-8", errors="replace")
        return [ln for ln in text.splitlines() if ln.strip()]
