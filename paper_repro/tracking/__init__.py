"""MLflow records: one parent run per pipeline run, one child run per stage, rank 0 only.

Files under ``results/<run>/`` are the record; MLflow mirrors them. Stages use::

    with stage_run(cfg, paths, "train_rm") as tr:
        tr.log_metrics({"loss": 0.6}, step=3)
        tr.log_dataset("train", paths.prepared("train"))
        tr.log_file_ref("final", paths.trained_state)   # big file: path + sha256, not uploaded

Guarantees (peer_pitfalls.md section 5; tests in tests/integration/test_tracking.py):

- Ranks other than 0 get a ``NullTracker`` (pitfall: every rank creating its own run).
- Run ids live in ``results/<run>/tracking/<stage>.json`` (never a Snakemake output), so a
  resumed job continues the same MLflow run; re-logging unchanged params is a no-op.
- MLflow never fails a stage. Every record is sent at once when the store answers; otherwise it is
  appended to ``tracking/<stage>.pending.jsonl`` and sent, in order, when the store is back (the
  next log call after ``RETRY_INTERVAL_S``, the end of the stage, a resumed job, or ``sync()``).
  The first failure of each kind is logged once as a warning with its reason.
- Many stage processes can share one sqlite store: store initialisation (schema creation and
  migrations), experiment creation and parent-run creation happen under an ``fcntl.flock`` next to
  the database, and writes that still meet "database is locked" are retried with backoff.
- Credentials never reach MLflow: keys that look like secrets are dropped and the values of
  secret-looking environment variables are redacted from params and tags; a text artifact that
  contains one is not uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import ReproConfig, config_hash, flatten, stage_hash
from ..paths import RunPaths
from .redact import public_uri, redact, scrub, secret_values
from .store import HTTP_ENV_DEFAULTS, pending_file, reason, recorded_run_ids
from .tracker import NullTracker, StageTracker, metric_key

__all__ = [
    "NullTracker",
    "StageTracker",
    "git_commit",
    "metric_key",
    "pending_file",
    "public_uri",
    "recorded_run_ids",
    "redact",
    "scrub",
    "secret_values",
    "stage_run",
    "sync",
    "tracking_uri",
]

log = logging.getLogger(__package__)  # one logger for the whole tracking package


# --------------------------------------------------------------------------- small helpers


def tracking_uri(cfg: ReproConfig, paths: RunPaths) -> str:
    return (
        cfg.tracking.uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{paths.mlflow_db.resolve()}"
    )


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def git_commit() -> str:
    """HEAD of the checkout the package runs from, with ``-dirty`` when it has local changes."""
    import subprocess

    cwd = Path(__file__).parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, timeout=10
        ).stdout.strip()
        if not head:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- entry points


def _common_tags(cfg: ReproConfig, paths: RunPaths) -> dict[str, str]:
    from .. import __version__

    tags = {
        "preset": cfg.preset,
        "git_commit": git_commit(),
        "config_hash": config_hash(cfg),
        "run_dir": str(paths.root.resolve()),
        "package_version": __version__,
    }
    return tags


def _make_tracker(cfg: ReproConfig, paths: RunPaths, stage: str) -> StageTracker:
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(cfg, paths)
    common = _common_tags(cfg, paths)
    tags = {**common, "stage": stage, "stage_config_hash": stage_hash(cfg, stage)}
    if job := os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = job
    if world := os.environ.get("WORLD_SIZE"):
        tags["world_size"] = world
    return StageTracker(
        uri, paths, stage, experiment=cfg.tracking.experiment, run_tags=tags, parent_tags=common
    )


@contextlib.contextmanager
def stage_run(cfg: ReproConfig, paths: RunPaths, stage: str) -> Iterator[NullTracker]:
    """The MLflow child run of ``stage`` (rank 0) or a NullTracker (other ranks).

    The run ends FINISHED, or FAILED when the body raises (the exception propagates). The report
    stage, the last of the DAG, also ends the parent run."""
    if not is_rank_zero():
        yield NullTracker()
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    try:
        tracker = _make_tracker(cfg, paths, stage)
    except Exception as exc:  # tracking must never fail a stage; say why once
        log.warning("[tracking:%s] disabled: %s", stage, reason(exc))
        yield NullTracker()
        return
    tracker.start()
    tracker.log_params(flatten(cfg))
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        end = int(time.time() * 1000)
        tracker._submit({"op": "status", "status": status, "end_time": end})
        if stage == "report" and status == "FINISHED":
            tracker._submit({"op": "status", "status": status, "end_time": end, "parent": True})
        if not tracker.flush():
            tracker._warn(
                "left",
                f"MLflow unreachable at the end of {stage}; records kept in "
                f"{tracker.pending} (sent by the next stage run or tracking.sync())",
            )


def sync(cfg: ReproConfig, paths: RunPaths) -> dict[str, bool]:
    """Send every stage's buffered records (e.g. after a tracking-server outage).

    Returns {stage: True when its buffer is now empty}."""
    out = {}
    for f in sorted(paths.tracking_dir.glob("*.pending.jsonl")):
        stage = f.name.removesuffix(".pending.jsonl")
        try:
            out[stage] = _make_tracker(cfg, paths, stage).flush()
        except Exception as exc:
            log.warning("[tracking:%s] buffered records not sent: %s", stage, reason(exc))
            out[stage] = False
    return out
