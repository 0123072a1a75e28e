"""``paper-repro push-to-hub RUN_DIR REPO_ID [--private] [--revision BRANCH]``: upload a run's
exported reward model (``export_rm/model/``, with its card) to the Hugging Face hub. Opt-in only:
nothing in the pipeline pushes, and there is no default repository.

Before anything is sent, the export is checked against its manifest (a corrupt or half-written
export is never published). The repository is created when missing (``--private`` applies then);
a ``--revision`` branch is created from ``main`` when missing. The token is huggingface_hub's own
(``HF_TOKEN``, else the stored ``hf auth login``); it is never printed or logged. ``HF_ENDPOINT``
selects a hub mirror, read at call time.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ..errors import ReproError
from ..provenance.manifest import verify_manifest
from ..provenance.paths import RunPaths

# huggingface_hub's repo id rule: "namespace/name", letters, digits, "-", "_", "." (no "--"/"..")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


class PushError(ReproError):
    """The export cannot be pushed as asked (one line)."""


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise PushError(
            f"repo id {repo_id!r} is not NAMESPACE/NAME (e.g. your-user/llama-3-tulu-2-uf-rm)"
        )
    return repo_id


def push(
    paths: RunPaths, repo_id: str, *, private: bool = False, revision: str | None = None
) -> str:
    """Upload ``paths.rm_model`` to ``repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)
    folder = paths.rm_model
    if not folder.is_dir():
        raise PushError(f"{folder}: no exported model (run export_rm first)")
    verify_manifest(folder, paths.manifest("export_rm"))  # ChecksumError names a bad file
    if get_token() is None:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=f"paper-repro: reward model of run {paths.root.name}",
        )
    # HfHubHTTPError, e.g. 401/403: a token without write access to repo_id; ValueError: the
    # hub's check of the card's metadata (huggingface_hub raises it for a 400 on validate-yaml)
    except (HfHubHTTPError, ValueError) as exc:
        why = "; ".join(ln.strip("- ").strip() for ln in str(exc).splitlines() if ln.strip())
        why = why or type(exc).__name__
        raise PushError(f"{repo_id}: the hub refused the upload ({why})") from None
    return str(commit.commit_url)


def run_cli(args: argparse.Namespace) -> int:
    paths = RunPaths(Path(args.run_dir))
    url = push(paths, args.repo_id, private=args.private, revision=args.revision)
    print(f"pushed {paths.rm_model} to {args.repo_id}: {url}")
    return 0
