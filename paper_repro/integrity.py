"""Verified bytes: before a stage reads anything, the manifests of the upstream outputs it reads
(``stages.UPSTREAM``) are checked (``manifest.verify_manifest``, with its size + mtime fast path).

A corrupt upstream output is never used, and never silently accepted later either. The bad files
(the whole folder for a model folder) and the stage's ``manifest.json`` (a rule output) move to
``<run>/quarantine/<time>/``. Snakemake ignores a missing intermediate file while the files made
from it are up to date, so the config files of the stages that read it (``config/<stage>.yaml``,
inputs of their rules) are touched too: the next ``snakemake`` run reruns those consumers, for
their missing inputs the damaged stage first, then everything after them. The error names the
command that recreates the outputs by hand. Only global rank 0 moves files; other ranks of a
multi-rank job just fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .manifest import ChecksumError, ManifestError, verify_manifest
from .paths import RunPaths
from .stages import UPSTREAM


def manifest_root(paths: RunPaths, stage: str) -> Path:
    """The folder the names in ``<stage>/manifest.json`` are relative to (every stage but the
    report writes one)."""
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


def verify_inputs(
    paths: RunPaths, stage: str, upstream: tuple[str, ...] | None = None
) -> dict[str, dict[str, Any]]:
    """Verify every manifested upstream output of ``stage`` (``upstream``: the part of
    ``UPSTREAM[stage]`` this configuration reads); returns {upstream stage: manifest}.

    Raises ManifestError (missing manifest) or ChecksumError (after quarantining the bad files),
    each one line naming the file and the command that recreates it. ``PAPER_REPRO_FULL_VERIFY=1``
    re-hashes every file instead of trusting unchanged sizes and mtimes."""
    fast = os.environ.get("PAPER_REPRO_FULL_VERIFY") != "1"
    manifests = {}
    for up in UPSTREAM[stage] if upstream is None else upstream:
        manifest_path = paths.manifest(up)
        if not manifest_path.is_file():
            raise ManifestError(
                f"{manifest_path}: missing ({up} has not run here, or its outputs were moved to "
                f"quarantine/ after a failed check); run `{rerun_command(paths, up)}` or "
                f"`snakemake {stage}`"
            )
        try:
            manifests[up] = verify_manifest(manifest_root(paths, up), manifest_path, fast=fast)
        except ChecksumError as exc:
            moved = quarantine(paths, up, exc)
            where = f"moved it to {moved}" if moved else "left in place (rank 0 moves it)"
            raise ChecksumError(
                exc.folder,
                exc.bad,
                hint=f"{stage} will not use it; {where}, so the next `snakemake` run recreates "
                f"{up}; by hand: `{rerun_command(paths, up)}`",
            ) from None
        except ManifestError as exc:  # not a manifest
            raise ManifestError(f"{exc}; by hand: `{rerun_command(paths, up)}`") from None
    return manifests


def quarantine(paths: RunPaths, stage: str, exc: ChecksumError) -> Path | None:
    """Move ``stage``'s corrupt files (its whole model folder, where it has one) and manifest
    aside and touch its consumers' config files (rank 0 only); returns where the files went."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    dest = paths.root / "quarantine" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    root = manifest_root(paths, stage)
    if root != paths.stage_dir(stage):
        moved = [root]
    else:
        moved = [root / b.name for b in exc.bad if b.actual != "missing"]
    for src in [*moved, paths.manifest(stage)]:
        if src.exists() or src.is_symlink():  # a hub file is a link into the cache: move the link
            target = dest / src.relative_to(paths.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
    for consumer in (s for s, ups in UPSTREAM.items() if stage in ups):
        if (config := paths.stage_config(consumer)).is_file():
            config.touch()  # newer than the consumer's outputs: Snakemake reruns it
    return dest
