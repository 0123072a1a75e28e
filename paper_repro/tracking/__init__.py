"""MLflow records: one parent run per pipeline run, one child run per (stage, stage identity,
attempt), rank 0 only.

Files under ``results/<run>/`` are the record; MLflow mirrors them. Stages use::

    with stage_run(cfg, paths, "train_rm", resume=start > 0) as tr:
        tr.log_metrics({"loss": 0.6}, step=3)
        tr.log_dataset("train", paths.prepared("train"))
        tr.log_file_ref("final", paths.trained_state)   # big file: path + sha256, not uploaded

Modules: this file (entry points: ``stage_run``, ``sync``, params and tags, system metrics),
``tracker.py`` (what a record holds, and the offline buffer), ``runs.py`` (the MLflow side: which
run a record belongs to, creating it under locks, writing it), ``redact.py`` (credentials),
``models.py`` + ``rm_pyfunc.py`` (the reward model as a logged, registered model).

What is kept, where, and why (tests in tests/integration/test_tracking.py):

- Rank 0 only (here): other ranks get a ``NullTracker`` (pitfall: every rank creating its own run).
- One run per (stage, identity, attempt) (``runs.py``): an attempt that resumes from a checkpoint
  of the same identity (``identity.py``) continues its run, any other opens a new one and tags the
  previous ``superseded``. Chosen locally (``results/<run>/tracking/<stage>.json``, never a
  Snakemake output) because the choice must hold while the store is down; MLflow's
  ``start_run(run_id=...)`` needs a live store and knows nothing of identities.
- No repeated metric step on resume (``runs.RunBook.fresh_steps``): MLflow appends a repeated
  step instead of replacing it. Params are the config sections the stage reads
  (``stage_params``), so they always equal what produced the files.
- Outage-safe buffering, replayed in order (``tracker.py``): a record that the store does not take
  is appended (fsynced) to ``tracking/<stage>.pending.jsonl`` and replayed, in order, on the next
  log call after ``RETRY_INTERVAL_S``, at the end of the stage, in a resumed job or ``sync()``.
  MLflow never fails a stage; the first failure of each kind is warned once with its reason.
  Not MLflow's async logging (``synchronous=False``): its queue is in memory and a failed batch
  is logged and dropped, so an outage or a process exit during one loses records.
- Short HTTP retries (``HTTP_ENV_DEFAULTS`` here): MLflow's own client retries and timeouts,
  configured through its ``MLFLOW_HTTP_REQUEST_*`` variables (set only when unset). Its defaults
  (7 retries, 120 s timeout) stall training for minutes per call on a dead server.
- Batching: ``MlflowClient.log_batch``, which splits into MLflow's batch limits itself.
- sqlite concurrency (``runs.py``): store, experiment and parent-run creation under an
  ``fcntl.flock`` next to the database, writes retried on "database is locked". MLflow sets a
  busy_timeout but does not serialise its schema migration, and retries only Postgres deadlocks.
- System metrics: MLflow's own sampler (``SystemMetricsMonitor``) on the ``SYSTEM_METRICS_STAGES``
  runs (CPU, memory, disk, network, GPU where there is one; ``system/*`` every
  MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds, default 10) while the store answers; sampled
  live, not buffered during an outage.
- Redaction (``redact.py``): secret-looking keys are dropped and secret environment values
  redacted from params and tags; a text artifact that contains one is not uploaded. The parent
  run carries the preset, the config hash and (from the report) the headline results; the
  experiment is tagged as a model-training experiment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import STAGE_SECTIONS, ReproConfig, config_hash, flatten, to_dict
from ..provenance.identity import StageIdentity, stage_identity
from ..provenance.paths import RunPaths
from .redact import public_uri, redact, scrub, secret_values
from .runs import recorded_run_ids
from .tracker import NullTracker, StageTracker, metric_key, pending_file, reason

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
    "stage_params",
    "stage_run",
    "sync",
    "tracking_uri",
]

log = logging.getLogger(__package__)  # one logger for the whole tracking package

# A dead tracking server must not stall training: MLflow's HTTP defaults are 7 retries with
# exponential backoff and a 120 s timeout per request (minutes per call). Applied with setdefault,
# so a user's own settings win.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


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


def stage_params(cfg: ReproConfig, stage: str) -> dict[str, Any]:
    """The MLflow params of a stage's run: the config sections it reads (what its stage hash
    covers) and its own resources, flattened. Other sections would go stale in a run that an
    unrelated override leaves alone."""
    d = to_dict(cfg)
    chosen = {k: d[k] for k in STAGE_SECTIONS[stage]}
    chosen["resources"] = {stage: d["resources"][stage]}
    return flatten(chosen)


def _make_tracker(
    cfg: ReproConfig, paths: RunPaths, stage: str, identity: StageIdentity | None = None
) -> StageTracker:
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(cfg, paths)
    common = _common_tags(cfg, paths)
    tags = {**common, "stage": stage}
    if identity is not None:
        tags.update(
            {
                "stage_config_hash": identity.config,
                "identity": identity.digest,
                "identity.code": identity.code,
                **{f"identity.upstream.{k}": str(v) for k, v in identity.upstream.items()},
            }
        )
        if identity.world:
            tags["identity.world"] = identity.world
    if job := os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = job
    if world := os.environ.get("WORLD_SIZE"):
        tags["world_size"] = world
    return StageTracker(
        uri,
        paths,
        stage,
        experiment=cfg.tracking.experiment,
        run_tags=tags,
        parent_tags=common,
        identity=identity.digest if identity is not None else "",
    )


# Stages long enough for utilisation to matter: their runs get MLflow system metrics.
SYSTEM_METRICS_STAGES = ("train_rm", "ppo")


def _system_metrics(tracker: StageTracker, resume: bool):
    """MLflow's system-metrics sampler on this attempt's run (a daemon thread), or None when the
    store does not answer or psutil is missing (warned once: it never fails the stage)."""
    run_id = tracker.run_id
    if run_id is None or tracker.pending.exists():  # offline: nothing live to attach it to
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=resume, tracking_uri=tracker.uri)
        monitor.start()
        return monitor
    except Exception as exc:
        tracker.warn("system", f"no system metrics: {reason(exc)}")
        return None


@contextlib.contextmanager
def stage_run(
    cfg: ReproConfig, paths: RunPaths, stage: str, resume: bool = False
) -> Iterator[NullTracker]:
    """The MLflow child run of ``stage`` (rank 0) or a NullTracker (other ranks). ``resume``:
    this attempt continues from a checkpoint of the same stage identity, so it continues that
    attempt's run; otherwise a new run.

    The run ends FINISHED, or FAILED when the body raises (the exception propagates). The report
    stage, the last of the DAG, also ends the parent run."""
    if not is_rank_zero():
        yield NullTracker()
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    try:
        tracker = _make_tracker(cfg, paths, stage, stage_identity(cfg, paths, stage))
        tracker.start(resume)
    except Exception as exc:  # tracking must never fail a stage; say why once
        log.warning("[tracking:%s] disabled: %s", stage, reason(exc))
        yield NullTracker()
        return
    tracker.log_params(stage_params(cfg, stage))
    monitor = _system_metrics(tracker, resume) if stage in SYSTEM_METRICS_STAGES else None
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if monitor is not None:
            monitor.finish()  # its last samples go in while the run is still RUNNING
        tracker.finish(status, end_parent=stage == "report" and status == "FINISHED")


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
