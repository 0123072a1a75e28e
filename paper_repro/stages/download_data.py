"""download_data: the three datasets at pinned revisions, as upstream-schema jsonl.

``data.source``: ``hub``, ``local`` (each DatasetRef's ``local_path``) or ``fixture`` (the shipped
tiny files, including the fixture's own held-out split as ``preference_heldout.jsonl``).

``hub``: the split's data files are fetched like a model snapshot (``hub.fetch_dataset_split``):
pinned revision, every file checked against the hub's LFS sha256, linked into
``download_data/upstream/<name>/`` with the lock file ``upstream/<name>.manifest.json``; a bad
file stops the stage (offline) or is fetched again alone (online). Checked on every run, so a
corrupt cache never goes unnoticed. The verified files are then read with ``datasets``.

Output: ``download_data/{preference,rewardbench,ppo_prompts}.jsonl`` and ``manifest.json``
({"files": {name: sha256}, "datasets": {...}}), the lock file: a rerun rewrites only files that
are missing or whose hash is wrong.
"""

from __future__ import annotations

import shutil

from ..config import DatasetRef, ReproConfig
from ..hub import fetch_dataset_split, load_data_files, load_local_rows, write_jsonl
from ..io import read_json
from ..manifest import check_files, write_manifest
from ..paths import RunPaths
from ..tracking import stage_run

NAMES = ("preference", "rewardbench", "ppo_prompts")
FIXTURE_FILES = {
    "preference": "preference_train.jsonl",
    "preference_heldout": "preference_heldout.jsonl",
    "rewardbench": "rewardbench_filtered.jsonl",
    "ppo_prompts": "ppo_prompts.jsonl",
}


def _still_good(paths: RunPaths, name: str, ref: dict) -> bool:
    """True when the lock file lists this file for the same dataset ref and the hash matches."""
    if not paths.data_manifest.is_file():
        return False
    lock = read_json(paths.data_manifest)
    fname = paths.raw_data(name).name
    if lock.get("datasets", {}).get(name) != ref or fname not in lock.get("files", {}):
        return False
    folder = paths.data_manifest.parent
    return not check_files(folder, {fname: {"sha256": lock["files"][fname]}})


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    from ..tiny import FIXTURE_DIR

    d = cfg.data
    refs: dict[str, dict] = {}
    fetched = []
    if d.source == "fixture":
        for name, fname in FIXTURE_FILES.items():
            refs[name] = {"source": "fixture", "file": fname}
            if not _still_good(paths, name, refs[name]):
                paths.raw_data(name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(FIXTURE_DIR / fname, paths.raw_data(name))
                fetched.append(name)
    else:
        for name in NAMES:
            ref: DatasetRef = getattr(d, name)
            refs[name] = {
                "source": d.source,
                "hub_id": ref.hub_id,
                "split": ref.split,
                "revision": ref.revision,
                "local_path": ref.local_path,
            }
            files = []
            if d.source == "hub":
                upstream = paths.data_manifest.parent / "upstream"
                up, files = fetch_dataset_split(
                    ref.hub_id,
                    ref.split,
                    ref.revision,
                    upstream / name,
                    upstream / f"{name}.manifest.json",
                )
                refs[name]["commit"] = up["commit"]  # what the pin (or "main") resolved to
            elif not ref.local_path:
                raise ValueError(f"data.{name}.local_path is not set (data.source=local)")
            if _still_good(paths, name, refs[name]):
                continue
            ds = load_data_files(files) if files else load_local_rows(ref.split, ref.local_path)
            write_jsonl(paths.raw_data(name), ds)
            fetched.append(name)
    manifest = write_manifest(
        paths.data_manifest,
        paths.data_manifest.parent,
        [paths.raw_data(n).name for n in refs],
        datasets=refs,
    )
    print(f"download_data: fetched {fetched or 'nothing'}, verified {sorted(manifest['files'])}")
    with stage_run(cfg, paths, "download_data") as tr:
        tr.log_params({f"data.{n}.ref": str(r) for n, r in refs.items()})
        tr.log_metrics({"files_fetched": len(fetched)})
        tr.log_artifact(paths.data_manifest)
    return 0
