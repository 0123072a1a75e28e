"""Task data: pinned, verified, then handed to lm-eval as local files.

Hub tasks: ``downstream.datasets.<task>`` pins the dataset an lm-eval task (or every subtask of a
group) reads to a commit; ``hub.fetch_snapshot`` downloads it, checks every file's sha256 and
writes a lock manifest, exactly like the other downloads. lm-eval then reads the local copy: for
every lm-eval task config that reads that hub dataset, a one-line override YAML (``include:`` the
original, ``dataset_path:`` the local folder) goes into a run-local task folder that takes
precedence over lm-eval's own (``TaskManager(include_path=...)``). Nothing else of the task
(prompts, shots, filters, metrics) changes.

The tiny task ships in the package (``tasks/tiny_arithmetic.{yaml,jsonl}``, made from
``fixtures/arithmetic.py``) with a sha256 lock; a copy whose bytes differ is refused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..config import ReproConfig
from ..errors import ReproError
from ..fixtures import arithmetic
from ..provenance.io import read_json, sha256_file, write_json, write_text

PACKAGE_TASKS = Path(__file__).parent / "tasks"
TINY_TASK = "tiny_arithmetic"
TINY_DATA = PACKAGE_TASKS / f"{TINY_TASK}.jsonl"
TINY_LOCK = PACKAGE_TASKS / f"{TINY_TASK}.lock.json"


class TaskDataError(ReproError, ValueError):
    """Task data that is unpinned, missing or not the pinned bytes."""


def tiny_rows() -> list[dict[str, str]]:
    """The tiny task's documents: every single-digit sum, its gold answer and target number."""
    return [
        {
            "question": arithmetic.question(a, b),
            "answer": arithmetic.answer(a, b, a + b),
            "target": str(a + b),
        }
        for a, b in arithmetic.problems()
    ]


def tiny_jsonl() -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in tiny_rows())


def write_tiny_fixture() -> None:
    """Regenerate the shipped tiny task data and its lock (``python -m
    paper_repro.downstream.taskdata``)."""
    write_text(TINY_DATA, tiny_jsonl())
    write_json(TINY_LOCK, {"files": {TINY_DATA.name: sha256_file(TINY_DATA)}})


def verified_copy(src: Path, lock: Path, dest_dir: Path) -> Path:
    """``src`` copied into ``dest_dir``; the copy (what lm-eval reads) must have the sha256 that
    ``lock`` pins, else it is removed and refused."""
    expected = read_json(lock)["files"][src.name]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copyfile(src, dest)
    actual = sha256_file(dest)
    if actual != expected:
        dest.unlink()
        raise TaskDataError(
            f"{src}: sha256 {actual[:12]}... is not the pinned {expected[:12]}... ({lock}); "
            "the task data was altered"
        )
    return dest


def pinned_hub_tasks(cfg: ReproConfig, tasks: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{task: (hub_id, revision)} for the requested hub tasks; every one must be pinned."""
    out = {}
    for task in tasks:
        if task == TINY_TASK:
            continue
        pin = cfg.downstream.datasets.get(task)
        if pin is None or not pin.revision:
            raise TaskDataError(
                f"downstream.datasets.{task}.revision: the task's hub dataset "
                f"({pin.hub_id if pin else 'not configured'}) has no pinned commit; set one "
                "(lm-eval would otherwise read whatever the hub serves today)"
            )
        out[task] = (pin.hub_id, pin.revision)
    return out


def fetch_task_data(hub_id: str, revision: str, dest: Path, **hub: Any) -> Path:
    """The pinned dataset snapshot in ``dest/data`` (lock: ``dest/manifest.json``). ``hub``:
    ``cache_dir`` / ``endpoint`` of ``hub.fetch_snapshot``."""
    from ..hub.snapshot import fetch_snapshot

    fetch_snapshot(
        hub_id,
        revision,
        dest / "data",
        dest / "manifest.json",
        allow=["*.parquet", "*.json", "*.jsonl", "*.csv", "README.md"],  # data only, no scripts
        repo_type="dataset",
        **hub,
    )
    return dest / "data"


def override_yaml(original: Path, local: dict[str, object]) -> str:
    """An lm-eval task YAML that is ``original`` with ``local``'s keys replaced."""
    return yaml.safe_dump({"include": str(original), **local}, sort_keys=False)


def write_overrides(task_index, hub_to_local: dict[str, Path], out_dir: Path) -> list[str]:
    """For every lm-eval task reading one of ``hub_to_local``'s datasets, an override YAML in
    ``out_dir`` pointing it at the local copy. Returns the overridden task names."""
    done = []
    for name, entry in sorted(task_index.items()):
        cfg = entry.cfg or {}
        local = hub_to_local.get(cfg.get("dataset_path"))
        if local is None or entry.yaml_path is None or "task" not in cfg:
            continue
        body = override_yaml(entry.yaml_path, {"task": name, "dataset_path": str(local)})
        write_text(out_dir / f"{name}.yaml", body)
        done.append(name)
    return done


def tiny_override(data: Path, out_dir: Path) -> Path:
    """The shipped tiny task pointed at the verified copy of its data."""
    body = override_yaml(
        PACKAGE_TASKS / f"{TINY_TASK}.yaml",
        {"task": TINY_TASK, "dataset_kwargs": {"data_files": {"test": str(data)}}},
    )
    path = out_dir / f"{TINY_TASK}.yaml"
    write_text(path, body)
    return path


if __name__ == "__main__":
    write_tiny_fixture()
