"""One split of a hub dataset: its data files fetched and verified like a model snapshot, then
read with ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_path
from ..progress import progress
from .errors import HubError
from .snapshot import _wanted, fetch_snapshot

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
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in progress(rows, desc=Path(path).stem, unit="row", leave=False):
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n
