"""download_data: the three datasets at pinned revisions, as upstream-schema jsonl.

``data.source``: ``hub`` (``datasets.load_dataset(hub_id, split=..., revision=...)``), ``local``
(each DatasetRef's ``local_path``) or ``fixture`` (the shipped tiny files, including the fixture's
own held-out split as ``preference_heldout.jsonl``). Output: ``download_data/{preference,
rewardbench,ppo_prompts}.jsonl`` and ``manifest.json`` ({"files": {name: sha256}, "datasets":
{...}}), the lock file: a rerun re-fetches only files that are missing or whose hash is wrong.
"""

from __future__ import annotations

import shutil

from ..config import DatasetRef, ReproConfig
from ..hub import check_files, load_dataset_rows, write_jsonl, write_manifest
from ..io import read_json
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
            if _still_good(paths, name, refs[name]):
                continue
            ds = load_dataset_rows(
                ref.hub_id, ref.split, ref.revision, ref.local_path if d.source == "local" else None
            )
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
