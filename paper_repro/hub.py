"""Pinned, verified downloads from the Hugging Face hub (``huggingface_hub`` and ``datasets``).

Models: ``fetch_model`` runs ``snapshot_download`` at a pinned commit with only safetensors,
JSON, tokenizer, template and license files (pickled weights are never fetched), then checks every
file against a manifest:

* a lock file (``manifest.json`` next to the files) when one exists from an earlier run;
* otherwise the hub's own metadata when online (``model_info(files_metadata=True)``: LFS sha256,
  git blob sha1 for small files);
* otherwise, offline, the cache's content addressing (an LFS blob is named by its sha256, a git
  file by its blob sha1).

Bad files are named with expected and actual hash; online, only those files are downloaded again
(``hf_hub_download(force_download=True)``). The verified file list is written as the lock file,
and the run folder gets symlinks into the cache (no 140 GB copy).

The HF token is never read here: ``huggingface_hub`` takes it from ``HF_TOKEN`` or its cache.
Messages name repo and revision only. ``HF_HUB_OFFLINE=1`` works from a pre-populated cache.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import atomic_path, read_json, sha256_file, write_json

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


class HubError(RuntimeError):
    """A download problem, in one line that says what to do."""


@dataclass
class BadFile:
    name: str
    expected: str
    actual: str


class ChecksumError(HubError):
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


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in ("1", "ON", "YES", "TRUE")


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None, repo_type: str = "model") -> Iterator[None]:
    """Turn huggingface_hub / datasets / network exceptions into one clear HubError."""
    from huggingface_hub import errors as e

    what = f"{repo_type} {repo_id}@{revision or 'main'}"
    try:
        yield
    except e.GatedRepoError:
        raise HubError(
            f"{what} is gated: accept its license on huggingface.co and provide a token "
            "(HF_TOKEN in the environment or `hf auth login`)"
        ) from None
    except e.RevisionNotFoundError:
        raise HubError(
            f"{what}: revision {revision!r} does not exist (check the pinned sha)"
        ) from None
    except e.RepositoryNotFoundError:
        raise HubError(
            f"{what}: repository not found (typo in the id, or private without a valid token)"
        ) from None
    except e.RemoteEntryNotFoundError as exc:
        raise HubError(f"{what}: file not found on the hub ({exc.__class__.__name__})") from None
    except (e.LocalEntryNotFoundError, e.OfflineModeIsEnabled):
        raise HubError(
            f"{what} is not in the local Hugging Face cache and the hub cannot be reached "
            "(no network or HF_HUB_OFFLINE=1); pre-populate HF_HOME/HF_HUB_CACHE or use a "
            "local_path"
        ) from None
    except Exception as exc:
        if _is_network_error(exc):
            raise HubError(
                f"{what}: cannot reach the Hugging Face hub ({type(exc).__name__}); check the "
                "network or run offline from a populated cache (HF_HUB_OFFLINE=1)"
            ) from None
        if type(exc).__name__ == "DatasetNotFoundError":
            raise HubError(f"{what}: dataset or revision not found ({exc})") from None
        raise


def _is_network_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(
        names
        & {
            "ConnectError",
            "ConnectTimeout",
            "TimeoutException",
            "NetworkError",
            "ConnectionError",
            "ReadTimeout",
            "ProxyError",
        }
    )


# --------------------------------------------------------------------------- hashing


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


def check_files(folder: Path, expected: dict[str, dict[str, str]]) -> list[BadFile]:
    from tqdm.auto import tqdm

    bad = []
    for name, want in tqdm(
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


# --------------------------------------------------------------------------- manifests


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
        raise HubError(f"{manifest_path}: manifest missing; rerun the download stage")
    manifest = read_json(manifest_path)
    bad = check_files(folder, {n: {"sha256": h} for n, h in manifest["files"].items()})
    if bad:
        raise ChecksumError(folder, bad)
    return manifest


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

    with hub_errors(repo_id, revision, repo_type):
        snapshot = Path(
            snapshot_download(
                repo_id,
                repo_type=repo_type,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=allow,
                ignore_patterns=ignore,
                local_files_only=offline,
                endpoint=endpoint,
            )
        )
        commit = snapshot.name
        if lock:
            expected, source = {n: {"sha256": h} for n, h in lock["files"].items()}, "lock file"
        elif not offline:
            commit, expected = expected_from_hub(
                repo_id, revision, allow, ignore, repo_type=repo_type, endpoint=endpoint
            )
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
                    revision=revision,
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
    if manifest_path.is_file() and read_json(manifest_path).get("local_path") == str(src):
        verify_manifest(src, manifest_path)
    _link_tree(src, names, Path(dest))
    return write_manifest(
        manifest_path,
        dest,
        names,
        local_path=str(src),
        expected_from="first use of the local folder",
    )


# --------------------------------------------------------------------------- datasets

# Data-file formats of the upstream repos: tulu-2.5-preference-data and tulu-2.5-prompts ship
# ``data/<split>-00000-of-00001.jsonl``, reward-bench ``data/<split>-*.parquet``.
DATA_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def split_patterns(split: str) -> list[str]:
    """The hub file layouts of one split (sharded ``<split>-00000-of-00001.*`` under ``data/``
    or at the top, or a single ``<split>.*``). The shard patterns start with a digit so that
    split ``a`` never picks up split ``a-b``."""
    return [f"data/{split}-[0-9]*", f"{split}-[0-9]*", f"{split}.*", f"data/{split}.*"]


def fetch_dataset_split(
    repo_id: str,
    split: str,
    revision: str | None,
    dest: str | Path,
    manifest_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """The data files of one split of a dataset repo (and its README, the dataset card), fetched,
    verified and locked exactly like a model snapshot. Returns (manifest, data files in
    ``dest``), the files sorted so shards load in order."""
    data = split_patterns(split)
    manifest = fetch_snapshot(
        repo_id,
        revision,
        dest,
        manifest_path,
        allow=[*data, "README.md"],
        repo_type="dataset",
        require=(data, f"no data file for split {split!r}"),
        cache_dir=cache_dir,
        endpoint=endpoint,
        split=split,
    )
    files = [Path(dest) / n for n in sorted(manifest["files"]) if _wanted(n, data, [])]
    return manifest, files


def load_data_files(files: list[Path]):
    """A ``datasets.Dataset`` from verified local data files of one format (json or parquet)."""
    import datasets

    kinds = {DATA_BUILDERS.get(f.suffix) for f in files}
    if None in kinds or len(kinds) != 1:
        raise HubError(
            f"data files {[str(f) for f in files]}: need one format among {sorted(DATA_BUILDERS)}"
        )
    return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")


def load_local_rows(split: str, local_path: str):
    """A ``datasets.Dataset`` from ``local_path``: a json/jsonl/parquet file or a saved folder."""
    p = Path(local_path)
    if p.is_file():
        return load_data_files([p])
    if p.is_dir():
        import datasets

        return datasets.load_dataset(str(p), split=split)
    raise HubError(f"local_path {p} does not exist")


def write_jsonl(path: str | Path, rows) -> int:
    from tqdm.auto import tqdm

    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in tqdm(rows, desc=Path(path).stem, unit="row", leave=False):
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n
