"""sha256 manifests of folders: written once when a stage produces files, checked before any
later stage uses them. ``{"files": {relative name: sha256}, ...metadata}``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import read_json, sha256_file, write_json
from .progress import progress


class ManifestError(RuntimeError):
    """A missing manifest or a file that does not match it, in one line that says what to do."""


@dataclass
class BadFile:
    name: str
    expected: str
    actual: str


class ChecksumError(ManifestError):
    def __init__(self, folder: Path, bad: list[BadFile]):
        self.bad = bad
        first = bad[0]
        more = (
            f" (and {len(bad) - 1} more: {', '.join(b.name for b in bad[1:])})"
            if len(bad) > 1
            else ""
        )
        super().__init__(
            f"checksum mismatch in {folder}: {first.name} expected {first.expected} "
            f"got {first.actual}{more}; nothing downstream may use it, rerun the download stage"
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


def check_files(folder: Path, expected: dict[str, dict[str, str]]) -> list[BadFile]:
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
        actual = digest(path, algo) if path.is_file() else "missing"
        if actual != value:
            bad.append(
                BadFile(
                    name, f"{algo}:{value}", actual if actual == "missing" else f"{algo}:{actual}"
                )
            )
    return bad


def write_manifest(
    path: str | Path, folder: str | Path, files: list[str] | None = None, **meta: Any
) -> dict[str, Any]:
    """``{"files": {name: sha256}, ...meta}`` for ``files`` (default: every file) of ``folder``."""
    folder = Path(folder)
    if files is None:
        files = [
            str(p.relative_to(folder))
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p != Path(path)
        ]
    manifest = {**meta, "files": {f: sha256_file(folder / f) for f in sorted(files)}}
    write_json(path, manifest)
    return manifest


def verify_manifest(folder: str | Path, manifest_path: str | Path) -> dict[str, Any]:
    """Check every file listed in a manifest; raises ChecksumError naming the bad ones."""
    folder, manifest_path = Path(folder), Path(manifest_path)
    if not manifest_path.is_file():
        raise ManifestError(f"{manifest_path}: manifest missing; rerun the download stage")
    manifest = read_json(manifest_path)
    bad = check_files(folder, {n: {"sha256": h} for n, h in manifest["files"].items()})
    if bad:
        raise ChecksumError(folder, bad)
    return manifest


def files_digest(files: dict[str, str]) -> str:
    """One sha256 for a ``{name: sha256}`` map (sorted, canonical JSON): the content identity of a
    folder, independent of paths, mtimes and manifest metadata."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def manifest_digest(manifest_path: str | Path) -> str:
    """``files_digest`` of the files a manifest lists (what a consumer's identity records)."""
    return files_digest(read_json(manifest_path)["files"])
