"""Pinned model and dataset snapshots: download (or find in the cache), verify every file
against a manifest, link into the run folder, write the lock manifest."""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path
from typing import Any

from ..provenance.io import read_json, write_json
from ..provenance.manifest import (
    BadFile,
    ChecksumError,
    build_manifest,
    check_files,
    verify_manifest,
    write_manifest,
)
from .errors import HubError, hub_errors, is_offline
from .revisions import is_full_sha, resolve_revision

MODEL_ALLOW = [
    "*.safetensors",
    "*.json",
    "tokenizer*",
    "*.jinja",
    "LICENSE*",
    "NOTICE*",
    "*license*",
    "*LICENSE*",
    "USE_POLICY*",
]
# Pickle-based or duplicate weight formats: never downloaded, never loaded.
MODEL_IGNORE = [
    "*.bin",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.pickle",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.npz",
    "original/*",
    "*.gguf",
]


def _wanted(name: str, allow: list[str], ignore: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in allow) and not any(
        fnmatch.fnmatch(name, p) for p in ignore
    )


def expected_from_hub(
    repo_id: str,
    revision: str,
    allow: list[str],
    ignore: list[str],
    repo_type: str = "model",
    endpoint: str | None = None,
) -> tuple[str, dict[str, dict[str, str]]]:
    """(resolved commit, {file: {algo: hash}}) from the hub's file metadata."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    info = (api.model_info if repo_type == "model" else api.dataset_info)(
        repo_id, revision=revision, files_metadata=True
    )
    out = {}
    for s in info.siblings or []:
        if not _wanted(s.rfilename, allow, ignore):
            continue
        lfs = s.lfs
        sha = (
            (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None))
            if lfs
            else None
        )
        out[s.rfilename] = {"sha256": sha} if sha else {"git_sha1": s.blob_id}
    return info.sha, out


def expected_from_cache(
    snapshot: Path, allow: list[str], ignore: list[str]
) -> dict[str, dict[str, str]]:
    """{file: {algo: hash}} from the cache's blob names (sha256 for LFS, git sha1 otherwise)."""
    out = {}
    for p in sorted(snapshot.rglob("*")):
        if p.is_file() and _wanted(str(p.relative_to(snapshot)), allow, ignore):
            blob = Path(os.path.realpath(p)).name
            algo = "sha256" if len(blob) == 64 else "git_sha1" if len(blob) == 40 else None
            if algo is None:
                raise HubError(f"{p}: not a hub cache snapshot (blob name {blob!r})")
            out[str(p.relative_to(snapshot))] = {algo: blob}
    return out


# --------------------------------------------------------------------------- snapshots


def fetch_snapshot(
    repo_id: str,
    revision: str | None,
    dest: str | Path,
    manifest_path: str | Path,
    *,
    allow: list[str],
    ignore: list[str] | None = None,
    repo_type: str = "model",
    require: tuple[list[str], str] | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """Download (or find in the cache) the ``allow``-ed files of a pinned model or dataset
    snapshot, verify them, link them into ``dest`` and write the lock manifest. Returns it.

    ``require``: (patterns, what) -- at least one file must match a pattern, else a HubError
    saying ``what`` is missing. ``meta``: extra manifest fields that are also part of the lock's
    identity (e.g. a dataset split). ``endpoint``: a hub mirror (default ``HF_ENDPOINT``)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    ignore = ignore or []
    dest, manifest_path = Path(dest), Path(manifest_path)
    offline = is_offline()
    endpoint = endpoint or os.environ.get("HF_ENDPOINT")  # read now, not at library import
    what = f"{repo_type} {repo_id}@{revision or 'main'}"
    # Model manifests keep their original fields; other repo types record theirs.
    ident = {"repo_id": repo_id, "requested_revision": revision, **meta}
    if repo_type != "model":
        ident["repo_type"] = repo_type
    lock = read_json(manifest_path) if manifest_path.is_file() else None
    if lock and any(lock.get(k) != v for k, v in ident.items()):
        lock = None  # a different pin: start over

    # The pin as a full commit: resolved once (a short sha or a branch), then taken from the lock.
    if lock and is_full_sha(lock.get("commit")):
        commit = lock["commit"]
    else:
        commit = resolve_revision(
            repo_id, revision, repo_type=repo_type, endpoint=endpoint, cache_dir=cache_dir
        )
    with hub_errors(repo_id, commit, repo_type):
        snapshot = Path(
            snapshot_download(
                repo_id,
                repo_type=repo_type,
                revision=commit,
                cache_dir=cache_dir,
                allow_patterns=allow,
                ignore_patterns=ignore,
                local_files_only=offline,
                endpoint=endpoint,
            )
        )
        if lock:
            expected, source = {n: {"sha256": h} for n, h in lock["files"].items()}, "lock file"
        elif not offline:
            sha, expected = expected_from_hub(
                repo_id, commit, allow, ignore, repo_type=repo_type, endpoint=endpoint
            )
            if sha != commit:
                raise HubError(f"{what}: the hub answered commit {sha} for {commit}")
            source = "hub metadata"
        else:
            expected = expected_from_cache(snapshot, allow, ignore)
            source = "hf cache content address"
        if require and not any(_wanted(n, require[0], []) for n in expected):
            raise HubError(f"{what}: {require[1]} (no file matches {', '.join(require[0])})")
        bad = check_files(snapshot, expected)
        if bad and not offline:  # fetch again only what is missing or corrupt
            for b in bad:
                print(f"re-downloading {b.name} (expected {b.expected}, found {b.actual})")
                hf_hub_download(
                    repo_id,
                    b.name,
                    repo_type=repo_type,
                    revision=commit,
                    cache_dir=cache_dir,
                    force_download=True,
                    endpoint=endpoint,
                )
            bad = check_files(snapshot, expected)
    if bad:
        raise ChecksumError(snapshot, bad)
    _link_tree(snapshot, sorted(expected), dest)
    return write_manifest(
        manifest_path, dest, sorted(expected), **ident, commit=commit, expected_from=source
    )


# --------------------------------------------------------------------------- models


def fetch_model(
    repo_id: str,
    revision: str,
    dest: str | Path,
    manifest_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    allow: list[str] | None = None,
    ignore: list[str] | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """A pinned model snapshot (safetensors, configs, tokenizer; never pickles), verified and
    linked into ``dest``; see ``fetch_snapshot``."""
    return fetch_snapshot(
        repo_id,
        revision,
        dest,
        manifest_path,
        allow=allow or MODEL_ALLOW,
        ignore=ignore or MODEL_IGNORE,
        require=(["*.safetensors"], "no safetensors weights (pickled weights are refused)"),
        cache_dir=cache_dir,
        endpoint=endpoint,
    )


def _link_tree(src: Path, names: list[str], dest: Path) -> None:
    """``dest`` becomes a folder of symlinks to ``src/<name>`` (resolved), replaced atomically."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for n in names:
        (tmp / n).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.realpath(src / n), tmp / n)
    tmp.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def link_local_model(
    src: str | Path,
    dest: str | Path,
    manifest_path: str | Path,
    allow: list[str] | None = None,
    ignore: list[str] | None = None,
) -> dict:
    """A model from a local folder (``model.source: local``): same file filter, the lock
    manifest is checked on a rerun and written on first use."""
    src, manifest_path = Path(src), Path(manifest_path)
    if not src.is_dir():
        raise HubError(f"model.local_path {src} is not a folder")
    allow, ignore = allow or MODEL_ALLOW, ignore or MODEL_IGNORE
    names = [
        str(p.relative_to(src))
        for p in sorted(src.rglob("*"))
        if p.is_file() and _wanted(str(p.relative_to(src)), allow, ignore)
    ]
    if not any(n.endswith(".safetensors") for n in names):
        raise HubError(f"{src}: no *.safetensors weights (pickled weights are refused)")
    lock = read_json(manifest_path) if manifest_path.is_file() else {}
    if lock.get("local_path") != str(src):
        lock = {}
    if lock:
        verify_manifest(src, manifest_path)  # early: a file visibly changed since first use
    _link_tree(src, names, Path(dest))
    manifest = build_manifest(
        dest, names, local_path=str(src), expected_from="first use of the local folder"
    )
    # the full hash just taken, not the size + mtime fast path, decides: a file changed in place
    # since first use is refused, never recorded as the new truth
    bad = [
        BadFile(n, f"sha256:{h}", f"sha256:{manifest['files'].get(n, 'missing')}")
        for n, h in (lock.get("files") or {}).items()
        if manifest["files"].get(n) != h
    ]
    if bad:
        raise ChecksumError(src, bad, hint="the local model changed since its first use here")
    write_json(manifest_path, manifest)
    return manifest
