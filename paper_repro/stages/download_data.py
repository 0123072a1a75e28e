"""download_data: the three datasets at pinned revisions, as upstream-schema jsonl.

``data.source``: ``hub``, ``local`` (each DatasetRef's ``local_path``: a jsonl/parquet file or a
folder laid out as the hub repo) or ``fixture`` (the shipped tiny files, including the fixture's
own held-out split as ``preference_heldout.jsonl``).

``hub``: the split's data files are fetched like a model snapshot (``hub.fetch_dataset_split``):
pinned revision, every file checked against the hub's LFS sha256, linked into
``download_data/upstream/<name>/`` with the lock file ``upstream/<name>.manifest.json``; a bad
file stops the stage (offline) or is fetched again alone (online). Checked on every run, so a
corrupt cache never goes unnoticed.

Every source is then copied row for row (``hub.copy_rows``: jsonl byte for byte, parquet one JSON
line per row) through a temporary name; nothing is parsed here, so one hostile row cannot stop
the stage: prepare_data validates and counts every row the same way for every source. Row counts
are enforced where they are known: the shipped fixtures (``fixtures.FIXTURE_ROWS``) and hub
splits in ``KNOWN_ROWS``; anything else is written with its count recorded.

Output: ``download_data/{preference,rewardbench,ppo_prompts}.jsonl`` and ``manifest.json``
({"files": {name: sha256}, "datasets": {...}}), the lock file: a rerun rewrites only files that
are missing or whose hash is wrong.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, DatasetRef, ReproConfig
from ..hub import copy_rows, fetch_dataset_split, local_data_files
from ..provenance.io import read_json
from ..provenance.manifest import check_files, write_manifest
from ..provenance.paths import RunPaths
from ..tracking import stage_run

NAMES = ("preference", "rewardbench", "ppo_prompts")
FIXTURE_FILES = {
    "preference": "preference_train.jsonl",
    "preference_heldout": "preference_heldout.jsonl",
    "rewardbench": "rewardbench_filtered.jsonl",
    "ppo_prompts": "ppo_prompts.jsonl",
}
# Rows of hub splits whose size is documented: reward-bench `filtered` (the 2,985 pairs the
# leaderboard scores) and its unfiltered `train` split (reward-bench dataset card).
KNOWN_ROWS = {("allenai/reward-bench", "filtered"): 2985, ("allenai/reward-bench", "train"): 5123}


def _still_good(paths: RunPaths, name: str, ref: dict) -> bool:
    """True when the lock file lists this file for the same dataset ref and the hash matches."""
    if not paths.data_manifest.is_file():
        return False
    lock = read_json(paths.data_manifest)
    fname = paths.raw_data(name).name
    if lock.get("datasets", {}).get(name) != ref or fname not in lock.get("files", {}):
        return False
    # hashed in full: the manifest written next hashes what is on disk, so the size + mtime
    # fast path must not decide that a file changed in place is still the fetched one
    return not check_files(paths.data_manifest.parent, {fname: {"sha256": lock["files"][fname]}})


def _sources(cfg: ReproConfig, paths: RunPaths) -> dict[str, tuple[dict, list[Path], int | None]]:
    """{name: (dataset ref recorded in the lock, data files, expected rows or None)}."""
    from ..fixtures import FIXTURE_ROWS
    from ..fixtures.tiny import FIXTURE_DIR

    d = cfg.data
    if d.source == "fixture":
        return {
            name: ({"source": "fixture", "file": f}, [FIXTURE_DIR / f], FIXTURE_ROWS[f])
            for name, f in FIXTURE_FILES.items()
        }
    out = {}
    for name in NAMES:
        ref: DatasetRef = getattr(d, name)
        rec = {
            "source": d.source,
            "hub_id": ref.hub_id,
            "split": ref.split,
            "revision": ref.revision,
            "local_path": ref.local_path,
        }
        if d.source == "hub":
            upstream = paths.stage_dir("download_data") / "upstream"
            up, files = fetch_dataset_split(
                ref.hub_id,
                ref.split,
                ref.revision,
                upstream / name,
                upstream / f"{name}.manifest.json",
            )
            rec["commit"] = up["commit"]  # what the pin (or "main") resolved to
            out[name] = (rec, files, KNOWN_ROWS.get((ref.hub_id, ref.split)))
        elif not ref.local_path:
            raise ConfigError(f"data.{name}.local_path", "not set (data.source=local)")
        else:
            out[name] = (rec, local_data_files(ref.split, ref.local_path), None)
    return out


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    refs: dict[str, dict] = {}
    fetched, counts = [], {}
    for name, (ref, files, expected) in _sources(cfg, paths).items():
        refs[name] = {**ref, "expected_rows": expected}
        if _still_good(paths, name, refs[name]):
            continue
        counts[name] = copy_rows(files, paths.raw_data(name), expected)
        fetched.append(name)
    for name in FIXTURE_FILES.keys() - refs.keys():  # an earlier source's file: not this data
        paths.raw_data(name).unlink(missing_ok=True)
    manifest = write_manifest(
        paths.data_manifest,
        paths.data_manifest.parent,
        [paths.raw_data(n).name for n in refs],
        datasets=refs,
    )
    unchecked = [n for n in counts if refs[n]["expected_rows"] is None]
    rows = ", ".join(f"{n} {c}" for n, c in counts.items())
    print(
        f"download_data: fetched {fetched or 'nothing'}{f' (rows: {rows})' if rows else ''}, "
        f"verified {sorted(manifest['files'])}"
        + (f"; row count not checked (no known size) for {unchecked}" if unchecked else "")
    )
    with stage_run(cfg, paths, "download_data") as tr:
        tr.log_params({f"data.{n}.ref": str(r) for n, r in refs.items()})
        tr.log_metrics(
            {"files_fetched": len(fetched), **{f"rows.{n}": c for n, c in counts.items()}}
        )
        tr.log_artifact(paths.data_manifest)
    return 0
