"""MLflow records: one parent run per pipeline run, one child run per stage, rank 0 only.

Files under ``results/<run>/`` are the record; MLflow mirrors them. Stages use::

    with stage_run(cfg, paths, "train_rm") as tr:
        tr.log_metrics({"loss": 0.6}, step=3)

Ranks other than 0 get a ``NullTracker`` (peer pitfall: every rank creating its own run).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ReproConfig, config_hash, flatten, stage_hash
from .io import read_json, sha256_file, write_json
from .paths import RunPaths

SECRET_MARKERS = ("token", "secret", "password", "api_key")


def tracking_uri(cfg: ReproConfig, paths: RunPaths) -> str:
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlflow_db.resolve()}"


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def scrub(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a credential before it reaches MLflow."""
    return {k: v for k, v in params.items() if not any(m in k.lower() for m in SECRET_MARKERS)}


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_file_ref(self, name: str, path: str | Path) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...


class StageTracker(NullTracker):
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in scrub(params).items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    def log_file_ref(self, name: str, path: str | Path) -> None:
        """Big files (checkpoints, models) by path and sha256, never uploaded."""
        path = Path(path)
        self.set_tags({f"file.{name}.path": str(path.resolve()), f"file.{name}.sha256": sha256_file(path)})

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _experiment_id(client, cfg: ReproConfig, paths: RunPaths) -> str:
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(cfg.tracking.experiment,
                                    artifact_location=paths.mlflow_artifacts.resolve().as_uri())


def _run_id_file(paths: RunPaths, stage: str) -> Path:
    return paths.tracking_dir / f"{stage}.json"


def _get_or_create(client, exp_id: str, paths: RunPaths, key: str, name: str, tags: dict[str, str]) -> str:
    """Reuse the run recorded in results/<run>/tracking/<key>.json (a resumed job continues it)."""
    f = _run_id_file(paths, key)
    if f.is_file():
        run_id = read_json(f)["run_id"]
        with contextlib.suppress(Exception):
            client.get_run(run_id)
            return run_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    write_json(f, {"run_id": run.info.run_id})
    return run.info.run_id


@contextlib.contextmanager
def stage_run(cfg: ReproConfig, paths: RunPaths, stage: str) -> Iterator[NullTracker]:
    if not is_rank_zero():
        yield NullTracker()
        return
    from mlflow.tracking import MlflowClient

    paths.root.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri(cfg, paths))
    exp_id = _experiment_id(client, cfg, paths)
    common = {"preset": cfg.preset, "git_commit": _git_commit(), "config_hash": config_hash(cfg),
              "run_dir": str(paths.root)}
    parent = _get_or_create(client, exp_id, paths, "_parent", paths.root.name, {**common, "stage": "pipeline"})
    tags = {**common, "stage": stage, "stage_config_hash": stage_hash(cfg, stage), "mlflow.parentRunId": parent}
    if job := os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = job
    run_id = _get_or_create(client, exp_id, paths, stage, stage, tags)
    tracker = StageTracker(client, run_id)
    tracker.log_params(flatten(cfg))
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
