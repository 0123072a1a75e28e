"""Verified bytes: before a stage reads anything, the manifests of the upstream outputs it reads
(``stages.UPSTREAM``) are checked (``manifest.verify_manifest``, with its size + mtime fast path).

A corrupt upstream output is never used, and never silently accepted later either: the bad files
and that stage's ``manifest.json`` (a declared Snakemake output) are moved to
``<run>/quarantine/<time>/``, so the next ``snakemake`` run sees the upstream stage incomplete and
runs it again, then everything after it. The error names the command that recreates it by hand.
Only global rank 0 moves files; other ranks of a multi-rank job just fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .manifest import ChecksumError, ManifestError, verify_manifest
from .paths import RunPaths
from .stages import UPSTREAM

# The stages whose outputs carry ``<stage>/manifest.json``, and the folder its names are relative
# to (default: the stage folder).
MANIFESTED = ("download_base", "download_data", "prepare_data", "export_rm")


def manifest_root(paths: RunPaths, stage: str) -> Path:
    return {"download_base": paths.base_model, "export_rm": paths.rm_model}.get(
        stage, paths.stage_dir(stage)
    )


def rerun_command(paths: RunPaths, stage: str) -> str:
    """The command that (re)creates ``stage``'s outputs in this run folder."""
    config = paths.stage_config(stage)
    return (
        f"paper-repro {stage.replace('_', '-')} "
        f"{config if config.is_file() else 'CONFIG'} --run-dir {paths.root}"
    )


def verify_inputs(paths: RunPaths, stage: str) -> dict[str, dict[str, Any]]:
    """Verify every manifested upstream output of ``stage``; returns {upstream: manifest}.

    Raises ManifestError (missing manifest) or ChecksumError (after quarantining the bad files),
    each one line naming the file and the command that recreates it."""
    manifests = {}
    for up in UPSTREAM[stage]:
        if up not in MANIFESTED:
            continue
        manifest_path = paths.manifest(up)
        if not manifest_path.is_file():
            raise ManifestError(
                f"{manifest_path}: missing ({up} has not run in this run folder); "
                f"run `{rerun_command(paths, up)}` or `snakemake {stage}`"
            )
        try:
            manifests[up] = verify_manifest(manifest_root(paths, up), manifest_path)
        except ChecksumError as exc:
            moved = quarantine(paths, up, exc)
            where = f"moved it and {manifest_path.name} to {moved}" if moved else "not moved"
            raise ChecksumError(
                exc.folder,
                exc.bad,
                hint=f"{stage} will not use it; {where}, so the next `snakemake` run recreates "
                f"{up}; by hand: `{rerun_command(paths, up)}`",
            ) from None
    return manifests


def quarantine(paths: RunPaths, stage: str, exc: ChecksumError) -> Path | None:
    """Move the corrupt files of ``stage`` and its manifest aside (rank 0 only); returns where."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    dest = paths.root / "quarantine" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    root = manifest_root(paths, stage)
    bad = [root / b.name for b in exc.bad if b.actual != "missing"]
    for src in [*bad, paths.manifest(stage)]:
        if src.is_file() or src.is_symlink():  # a hub file is a link into the cache: move the link
            target = dest / src.relative_to(paths.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
    return dest
