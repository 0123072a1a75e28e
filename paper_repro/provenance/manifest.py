"""sha256 manifests of folders: written once when a stage produces files, checked before any
later stage uses them. ``{"files": {relative name: sha256}, "stat": {name: [size, mtime_ns]},
...metadata}``.

Fast path (``verify_manifest``, ``check_files`` with ``stats``): a file whose size and mtime_ns
equal the ones recorded when the manifest was written is taken as unchanged without reading it; any
other file is hashed again in full. It cannot see bytes changed in place with the size kept and the
mtime restored, so a stage uses it only for weights, which it hashes while loading them
(``verified.py``); ``integrity.verify_inputs`` hashes every other file in full."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReproError
from ..progress import progress
from .io import read_json, sha256_file, write_json


class ManifestError(ReproError, RuntimeError):
    """A missing manifest or a file that does not match it, in one line that says what to do."""


@dataclass
class BadFile:
    name: str
    expected: str
    actual: str


class ChecksumError(ManifestError):
    def __init__(
        self,
        folder: Path,
        bad: list[BadFile],
        hint: str = "nothing downstream may use it, rerun the download stage",
    ):
        self.folder, self.bad = folder, bad
        first = bad[0]
        more = (
            f" (and {len(bad) - 1} more: {', '.join(b.name for b in bad[1:])})"
            if len(bad) > 1
            else ""
        )
        super().__init__(
            f"checksum mismatch in {folder}: {first.name} expected {first.expected} "
            f"got {first.actual}{more}; {hint}"
        )


def git_blob_sha1(path: str | Path) -> str:
    """The git object id of a file (what the hub reports for non-LFS files)."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def digest(path: Path, algo: str) -> str:
    return sha256_file(path) if algo == "sha256" else git_blob_sha1(path)


def file_stat(path: Path) -> list[int]:
    """[size, mtime_ns] of a file (of the target, for a symlink): the fast path's key."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def check_files(
    folder: Path,
    expected: dict[str, dict[str, str]],
    stats: dict[str, list[int]] | None = None,
) -> list[BadFile]:
    """Files of ``folder`` that are missing or whose digest differs. ``stats``: [size, mtime_ns]
    recorded when the digest was taken; a file that still has them is not read again."""
    stats = stats or {}

    bad = []
    for name, want in progress(
        sorted(expected.items()),
        desc=f"verify {folder.name}",
        unit="file",
        leave=False,
        disable=len(expected) < 8,
    ):
        ((algo, value),) = want.items()
        path = folder / name
        if not path.is_file():
            actual = "missing"
        elif name in stats and file_stat(path) == stats[name]:
            continue  # unchanged since it was hashed
        else:
            actual = digest(path, algo)
        if actual != value:
            bad.append(
                BadFile(
                    name, f"{algo}:{value}", actual if actual == "missing" else f"{algo}:{actual}"
                )
            )
    return bad


class RecordChanged(ManifestError):
    """A file a stage wrote changed or vanished before its manifest was written."""


def write_manifest(
    path: str | Path,
    folder: str | Path,
    files: list[str] | None = None,
    *,
    written: dict[str, str | None] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """Write and return ``build_manifest(folder, files, **meta)`` (``path`` itself is skipped).
    ``written``: {name: sha256 of the bytes the stage wrote} (``io.write_json`` returns it); a
    file that is missing or holds other bytes now is refused (RecordChanged naming it) and no
    manifest is written."""
    folder = Path(folder)
    for name in written or {}:
        if not (folder / name).is_file():
            raise RecordChanged(
                f"{folder / name}: written by this stage but gone before its manifest (another "
                "process deleted it); nothing recorded, rerun the stage"
            )
    manifest = build_manifest(folder, files, exclude=Path(path), **meta)
    for name, digest in (written or {}).items():
        if digest is not None and manifest["files"].get(name) != digest:
            raise RecordChanged(
                f"{folder / name}: is not what this stage wrote (sha256 {digest[:12]}, now "
                f"{manifest['files'].get(name, 'unlisted')[:12]}); another process changed it; "
                "nothing recorded, rerun the stage"
            )
    write_json(path, manifest)
    return manifest


def build_manifest(
    folder: str | Path, files: list[str] | None = None, exclude: Path | None = None, **meta: Any
) -> dict[str, Any]:
    """``{"files": {name: sha256}, "stat": {name: [size, mtime_ns]}, ...meta}`` for ``files``
    (default: every file, hidden ones skipped) of ``folder``."""
    folder = Path(folder)
    if files is None:
        files = [
            str(p.relative_to(folder))
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p != exclude
        ]
    stat, digests = {}, {}
    for f in sorted(files):
        if not (folder / f).is_file():
            raise RecordChanged(f"{folder / f}: missing when its manifest was written")
        stat[f] = file_stat(folder / f)  # before hashing: a change during the hash is caught later
        digests[f] = sha256_file(folder / f)
    return {**meta, "files": digests, "stat": stat}


def read_manifest(manifest_path: str | Path) -> dict[str, Any]:
    """A manifest file, its shape checked (ManifestError naming the file when it is not one)."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise ManifestError(f"{manifest_path}: manifest missing; rerun the stage that writes it")
    manifest = read_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(h, str) for h in files.values()):
        raise ManifestError(f"{manifest_path}: not a manifest (no 'files' map of name: sha256)")
    return manifest


class UnlistedFileError(ManifestError):
    """A file in a verified model folder that its manifest does not list."""


# Files in a model folder that its manifest leaves out on purpose: the model card, which
# eval_rewardbench completes after export_rm (export/card.py); no loader reads it.
UNLISTED_OK = frozenset({"README.md"})


def refuse_unlisted(folder: Path, listed: Any, manifest_path: Path, prefix: str = "") -> None:
    """UnlistedFileError naming the first file of model folder ``folder`` that the manifest does
    not list (``listed``: its names, ``prefix`` + the name relative to ``folder``): the tokenizer
    and config loaders would read a ``special_tokens_map.json`` dropped in. Hidden files (no
    loader reads them) and UNLISTED_OK are let through."""
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        name = str(p.relative_to(folder))
        if name.startswith(".") or "/." in name or not p.is_file() or name in UNLISTED_OK:
            continue
        if prefix + name not in listed:
            raise UnlistedFileError(
                f"{p}: not listed in {manifest_path}; a model folder holds only the files its "
                "manifest lists (remove it, or rerun the stage that wrote the folder)"
            )


def verify_manifest(
    folder: str | Path, manifest_path: str | Path, *, fast: bool = True, model: bool = False
) -> dict[str, Any]:
    """Check every file listed in a manifest (``fast``: files whose size and mtime are unchanged
    are not re-read); raises ChecksumError naming the bad ones. ``model``: ``folder`` is a model
    folder, and a file in it that the manifest does not list is refused (``refuse_unlisted``)."""
    manifest = read_manifest(manifest_path)
    if model and Path(folder).is_dir():
        refuse_unlisted(Path(folder), manifest["files"], Path(manifest_path))
    stats = manifest.get("stat") if fast else None
    bad = check_files(Path(folder), {n: {"sha256": h} for n, h in manifest["files"].items()}, stats)
    if bad:
        raise ChecksumError(Path(folder), bad)
    return manifest


def files_digest(files: dict[str, str]) -> str:
    """One sha256 for a ``{name: sha256}`` map (sorted, canonical JSON): the content identity of a
    folder, independent of paths, mtimes and manifest metadata."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def manifest_digest(manifest_path: str | Path) -> str:
    """``files_digest`` of the files a manifest lists (what a consumer's identity records)."""
    return files_digest(read_manifest(manifest_path)["files"])
