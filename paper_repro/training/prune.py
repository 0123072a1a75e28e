"""``paper-repro prune RUN_DIR [--dry-run]``: delete the checkpoint folders a training stage set
aside and will never resume from (``checkpoints.py`` keeps them instead of deleting them):

- ``checkpoints/<stage>.superseded-*``: written under another identity (config, code, upstream
  content or world size changed);
- ``checkpoints/<stage>.completed-*``: those of a run that completed;
- ``checkpoints/<stage>/<name>.corrupt-*``: a checkpoint that failed verification.

The live checkpoints (``checkpoints/<stage>/<prefix>-NNNNNN``) are never removed. The
``.corrupt-*`` folders sit inside a stage's live folder, so they are removed only under the
stage's lock (``lock.stage_lock``): while the stage runs they are listed as skipped. The folders
set aside next to it are no longer the stage's and go whether it runs or not (a 70B checkpoint
set is about 1 TB: that space is what a long run needs back).
"""

from __future__ import annotations

import argparse
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReproError
from ..provenance.lock import StageBusy, stage_lock
from ..provenance.paths import RunPaths

ASIDE = re.compile(r"^(?P<stage>[a-z_]+)\.(?P<kind>superseded|completed)-")
CORRUPT = re.compile(r"\.corrupt-")


class NotARunDir(ReproError):
    """The folder given to prune is not a run folder."""


@dataclass(frozen=True)
class Prunable:
    path: Path
    stage: str
    why: str  # superseded / completed / corrupt
    size: int  # bytes

    @property
    def live_folder(self) -> bool:
        """Inside the stage's live checkpoint folder (needs the stage's lock)."""
        return self.why == "corrupt"


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def find_prunable(paths: RunPaths) -> list[Prunable]:
    """Every set-aside checkpoint folder of the run, sorted by path."""
    root = paths.root / "checkpoints"
    found: list[Prunable] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        m = ASIDE.match(entry.name)
        if m:
            found.append(Prunable(entry, m["stage"], m["kind"], folder_size(entry)))
        elif "." not in entry.name:  # a live stage folder: its corrupt checkpoints only
            for sub in sorted(entry.iterdir()):
                if sub.is_dir() and not sub.is_symlink() and CORRUPT.search(sub.name):
                    found.append(Prunable(sub, entry.name, "corrupt", folder_size(sub)))
    return found


def _remove(item: Prunable, run_root: Path, dry_run: bool) -> str:
    rel = item.path.relative_to(run_root)
    verb = "would remove" if dry_run else "removed"
    if not dry_run:
        shutil.rmtree(item.path)
    return f"{verb} {human(item.size):>10}  {rel}  ({item.why})"


def prune(paths: RunPaths, dry_run: bool = False) -> tuple[list[str], int]:
    """Remove (or with ``dry_run`` list) the set-aside folders; returns (lines, bytes freed)."""
    lines: list[str] = []
    freed = 0
    items = find_prunable(paths)
    for item in [i for i in items if not i.live_folder]:
        lines.append(_remove(item, paths.root, dry_run))
        freed += item.size
    for stage in sorted({i.stage for i in items if i.live_folder}):
        inside = [i for i in items if i.live_folder and i.stage == stage]
        try:
            # held for the removal: the stage cannot start (and resume) meanwhile
            with stage_lock(paths, stage):
                for item in inside:
                    lines.append(_remove(item, paths.root, dry_run))
                    freed += item.size
        except StageBusy as busy:
            for item in inside:
                rel = item.path.relative_to(paths.root)
                lines.append(f"skipped {human(item.size):>10}  {rel}  (stage running: {busy})")
    return lines, freed


def run_cli(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise NotARunDir(f"{run_dir}: no such run folder")
    if not (run_dir / "checkpoints").is_dir() and not (run_dir / "config").is_dir():
        raise NotARunDir(f"{run_dir}: not a run folder (no checkpoints/ or config/ in it)")
    lines, freed = prune(RunPaths(run_dir), dry_run=args.dry_run)
    for line in lines:
        print(line)
    if not lines:
        print(f"{run_dir}: nothing to prune")
    else:
        print(f"{'would free' if args.dry_run else 'freed'} {human(freed)}")
    return 0
