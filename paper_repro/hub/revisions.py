"""Pinned revisions as the hub accepts them: a full 40-hex commit id.

``huggingface_hub`` treats only 40-hex strings as commits (``file_download.REGEX_COMMIT_HASH``) and
its download guide asks for the full hash; what the server does with a 7-character prefix is not
documented. A short pin (the form the hub's web pages show) or a branch is therefore resolved once
here, to the one full commit it names, and every file request of the run uses that commit. The
lock manifest records both (``requested_revision`` and ``commit``), so a rerun never asks again.

Online the commits come from the hub's API (``list_repo_refs`` + ``list_repo_commits`` of every
branch); offline (``HF_HUB_OFFLINE=1``) from the snapshot folders and refs of the local cache.
No match, or a prefix shared by several commits, is a one-line ``HubError`` naming repo and pin.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import HubError, hub_errors, is_offline

FULL_SHA = re.compile(r"[0-9a-f]{40}")
SHA_PREFIX = re.compile(r"[0-9a-f]{7,39}")


def is_full_sha(revision: str | None) -> bool:
    return revision is not None and FULL_SHA.fullmatch(revision) is not None


def _match(repo: str, pin: str, commits: set[str], where: str) -> str:
    hits = sorted(c for c in commits if c.startswith(pin))
    if not hits:
        raise HubError(
            f"{repo}: revision {pin!r} matches none of the {len(commits)} commits {where}"
        )
    if len(hits) > 1:
        raise HubError(
            f"{repo}: revision {pin!r} is ambiguous ({len(hits)} commits {where} start with it: "
            f"{', '.join(hits)}); pin the full 40-character sha"
        )
    return hits[0]


def _resolve_online(
    repo_id: str, revision: str, repo_type: str, endpoint: str | None, what: str
) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    with hub_errors(repo_id, revision, repo_type):
        refs = api.list_repo_refs(repo_id, repo_type=repo_type)
        named = {r.name: r.target_commit for r in [*refs.branches, *refs.tags]}
        if not SHA_PREFIX.fullmatch(revision):
            if revision not in named:
                raise HubError(
                    f"{what}: revision {revision!r} is neither a commit sha nor a branch or tag "
                    f"(branches and tags: {', '.join(sorted(named)) or 'none'})"
                )
            return named[revision]
        commits = {
            c.commit_id
            for b in refs.branches
            for c in api.list_repo_commits(repo_id, repo_type=repo_type, revision=b.name)
        }
    branches = ", ".join(sorted(b.name for b in refs.branches))
    return _match(what, revision, commits, f"on the hub (branches: {branches})")


def _resolve_cached(repo_id: str, revision: str, repo_type: str, cache_dir, what: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    repo = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(
        repo_id=repo_id, repo_type=repo_type
    )
    ref = repo / "refs" / revision
    if ref.is_file():  # a branch the cache has seen
        return ref.read_text().strip()
    snapshots = repo / "snapshots"
    commits = {p.name for p in snapshots.iterdir()} if snapshots.is_dir() else set()
    if not commits or not SHA_PREFIX.fullmatch(revision):
        raise HubError(
            f"{what} is not in the local Hugging Face cache ({repo}) and the hub cannot be "
            "asked (HF_HUB_OFFLINE=1); pre-populate the cache or pin the full commit sha"
        )
    return _match(what, revision, commits, f"in the local cache ({repo})")


def resolve_revision(
    repo_id: str,
    revision: str | None,
    *,
    repo_type: str = "model",
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """The full commit sha that ``revision`` (a full sha, a 7-39 hex prefix, or a branch or tag;
    None = ``main``) names in ``repo_id``. A full sha is returned as given, without a request."""
    revision = revision or "main"
    if is_full_sha(revision):
        return revision
    what = f"{repo_type} {repo_id}"
    if is_offline():
        return _resolve_cached(repo_id, revision, repo_type, cache_dir, what)
    return _resolve_online(repo_id, revision, repo_type, endpoint, what)
