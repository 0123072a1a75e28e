"""Pinned, verified downloads from the Hugging Face hub (``huggingface_hub`` and ``datasets``).

Revisions: a pin is resolved once to its full 40-hex commit (``revisions.resolve_revision``: a
short sha through the hub's commit list, or the local cache offline); every file request uses that
commit, and the lock manifest records both the pin and the commit.

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

from .errors import HubError, hub_errors, is_offline
from .snapshot import MODEL_ALLOW, MODEL_IGNORE, fetch_model, fetch_snapshot, link_local_model
from .splits import (
    fetch_dataset_split,
    load_data_files,
    load_local_rows,
    split_patterns,
    write_jsonl,
)

__all__ = [
    "HubError",
    "MODEL_ALLOW",
    "MODEL_IGNORE",
    "fetch_dataset_split",
    "fetch_model",
    "fetch_snapshot",
    "hub_errors",
    "is_offline",
    "link_local_model",
    "load_data_files",
    "load_local_rows",
    "split_patterns",
    "write_jsonl",
]
