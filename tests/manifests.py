"""Test helper: after a test edits a stage's files on purpose, record them in its manifest again
(what the producing stage would have written), so later stages accept the edit."""

from __future__ import annotations

from paper_repro.provenance.integrity import manifest_root
from paper_repro.provenance.io import read_json
from paper_repro.provenance.manifest import write_manifest
from paper_repro.provenance.paths import RunPaths


def remanifest(paths: RunPaths, stage: str, *, all_files: bool = False) -> None:
    """Rewrite ``stage``'s manifest over the files it lists (``all_files``: every file now in the
    folder, for a folder the test added or removed files in), keeping its other fields."""
    path = paths.manifest(stage)
    old = read_json(path) if path.is_file() else {}
    files = None if all_files or "files" not in old else list(old["files"])
    meta = {k: v for k, v in old.items() if k not in ("files", "stat")}
    write_manifest(path, manifest_root(paths, stage), files, **meta)
