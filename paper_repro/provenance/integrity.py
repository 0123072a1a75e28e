"""Verified bytes: before a stage reads anything, the manifests of the upstream outputs it reads
(``stages.UPSTREAM``) are checked. Every listed file is hashed in full except the weights
(``*.safetensors``), which are hashed while they are loaded (``verified.py``: one pass over 140 GB,
not two); for them the size + mtime fast path here only refuses early what is already known bad.
A model folder holding a file its manifest does not list (a ``special_tokens_map.json`` dropped in)
is refused by name: the tokenizer and config loaders would read it.

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

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ReproError
from ..stages import UPSTREAM
from .io import parse_json
from .lock import held_by, running
from .manifest import (
    BadFile,
    ChecksumError,
    ManifestError,
    UnlistedFileError,
    check_files,
    read_manifest,
    refuse_unlisted,
)
from .paths import RunPaths
from .verified import is_weights

# The manifest key listing a stage's record files outside its manifest root: {name: sha256},
# relative to the stage folder (export_rm's manifest root is its model folder).
RECORDS = "records"

# Model folders inside a stage's manifest root (relative to it; "" is the root itself). The
# tokenizer and config loaders read whatever such a folder holds, so an unlisted file is refused.
MODEL_FOLDERS = {"download_base": "", "export_rm": "", "ppo": "policy"}


class UpstreamRunning(ReproError):
    """An upstream stage is running now (its lock is held): its consumer does not start."""


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

    Raises UpstreamRunning (an upstream stage holds its lock: nothing is read or moved),
    ManifestError (missing manifest), UnlistedFileError or ChecksumError (after quarantining the
    bad files), each one line naming the file and the command that recreates it.
    ``PAPER_REPRO_FULL_VERIFY=1`` hashes the weights here too (a second pass over them)."""
    fast = os.environ.get("PAPER_REPRO_FULL_VERIFY") != "1"
    manifests = {}
    for up in UPSTREAM[stage] if upstream is None else upstream:
        if (holder := running(paths, up)) is not None:
            # its files are its own until it writes its manifest: nothing read, nothing moved
            raise UpstreamRunning(
                f"{up} is running ({holder}): {stage} reads its outputs only once it has "
                f"finished; wait for it, then rerun `{rerun_command(paths, stage)}`"
            )
        manifest_path = paths.manifest(up)
        if not manifest_path.is_file():
            raise ManifestError(
                f"{manifest_path}: missing ({up} has not run here, or its outputs were moved to "
                f"quarantine/ after a failed check); run `{rerun_command(paths, up)}` or "
                f"`snakemake {stage}`"
            )
        try:
            manifests[up] = check_manifest(paths, up, fast=fast)
        except ChecksumError as exc:
            raise refused(paths, stage, up, exc) from None
        except ManifestError as exc:  # not a manifest, or a file it does not list
            raise ManifestError(f"{exc}; by hand: `{rerun_command(paths, up)}`") from None
    return manifests


def check_manifest(paths: RunPaths, up: str, *, fast: bool = True) -> dict[str, Any]:
    """Check ``up``'s manifest: every file hashed in full, but for weights (``fast``) whose size
    and mtime are unchanged (their loader hashes them as it reads them); a model folder
    (MODEL_FOLDERS) with a file the manifest does not list is refused naming it."""
    manifest = read_manifest(paths.manifest(up))
    folder = manifest_root(paths, up)
    if up in MODEL_FOLDERS and (model := folder / MODEL_FOLDERS[up]).is_dir():
        prefix = f"{MODEL_FOLDERS[up]}/" if MODEL_FOLDERS[up] else ""
        refuse_unlisted(model, manifest["files"], paths.manifest(up), prefix)
    stats = {n: s for n, s in (manifest.get("stat") or {}).items() if fast and is_weights(n)}
    bad = check_files(folder, {n: {"sha256": h} for n, h in manifest["files"].items()}, stats)
    if bad:
        raise ChecksumError(folder, bad)
    records = manifest.get(RECORDS) or {}
    if bad := check_files(paths.stage_dir(up), {n: {"sha256": h} for n, h in records.items()}):
        raise ChecksumError(paths.stage_dir(up), bad)
    return manifest


def read_record(paths: RunPaths, up: str, path: Path) -> Any:
    """A JSON record of ``up`` that lives beside its model folder (``export_rm/verification.json``)
    and that its manifest lists under ``records``: parsed from the very bytes whose sha256 was
    checked, so a byte changed after ``verify_inputs`` is refused, not used. A file the manifest
    does not list is refused by name: a consumer reads only what a manifest vouches for."""
    manifest = read_manifest(paths.manifest(up))
    want = (manifest.get(RECORDS) or {}).get(path.name)
    if want is None:
        raise UnlistedFileError(
            f"{path}: not listed in {paths.manifest(up)}; rerun `{rerun_command(paths, up)}`"
        )
    data = path.read_bytes()
    if (got := hashlib.sha256(data).hexdigest()) != want:
        raise ChecksumError(path.parent, [BadFile(path.name, f"sha256:{want}", f"sha256:{got}")])
    return parse_json(data, path)


def upstream_of(paths: RunPaths, stage: str, folder: Path) -> str | None:
    """The upstream stage of ``stage`` whose manifest lists files of ``folder``, if any."""
    for up in UPSTREAM.get(stage, ()):
        if Path(folder) in (manifest_root(paths, up), paths.stage_dir(up)):
            return up
    return None


def refused(paths: RunPaths, stage: str, up: str, exc: ChecksumError) -> ChecksumError:
    """``exc`` (bad files of upstream ``up``, found by ``stage``) after quarantining them, with the
    hint that names what happens next."""
    moved = quarantine(paths, up, exc)
    if isinstance(moved, str):
        where = moved
    else:
        where = f"moved it to {moved}" if moved else "left in place (rank 0 moves it)"
    err = ChecksumError(
        exc.folder,
        exc.bad,
        hint=f"{stage} will not use it; {where}, so the next `snakemake` run recreates "
        f"{up}; by hand: `{rerun_command(paths, up)}`",
    )
    err.handled = True
    return err


def quarantine(paths: RunPaths, stage: str, exc: ChecksumError) -> Path | str | None:
    """Move ``stage``'s corrupt files (its whole model folder, where it has one) and manifest
    aside and touch its consumers' config files (rank 0 only); returns where the files went.
    Never while a live process holds ``stage``'s lock: its files are its own while it runs (it
    rewrites them and its manifest when it ends); returns why nothing moved then."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    with held_by(paths, stage) as holder:
        if holder is not None:
            return f"left in place ({stage} is running: {holder})"
        return _move(paths, stage, exc)


def _move(paths: RunPaths, stage: str, exc: ChecksumError) -> Path:
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
