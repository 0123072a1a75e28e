"""How each buffered record is written to MLflow: ``WRITERS[op["op"]](client, rid, op, warn)``,
with ``rid(op)`` the MLflow id of the run the record names (``tracker.StageTracker._rid``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_BATCH_METRICS = 1000  # MLflow log_batch limits
MAX_BATCH_PARAMS = 100

Resolve = Callable[[dict[str, Any]], str]
Warn = Callable[[str, str], None]


def write_params(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    from mlflow.entities import Param

    run_id = rid(op)
    existing = client.get_run(run_id).data.params
    new = []
    for k, v in op["params"].items():
        if k not in existing:
            new.append(Param(k, v))
        elif existing[k] != v:  # MLflow forbids changing a param; keep the first, say so
            warn(
                f"param:{k}",
                f"param '{k}' changed from {existing[k]!r} to {v!r} on "
                "resume; MLflow keeps the first value (see the config_hash tag)",
            )
    for i in range(0, len(new), MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=new[i : i + MAX_BATCH_PARAMS])


def write_metrics(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    from mlflow.entities import Metric

    run_id = rid(op)
    rows = [Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]]
    for i in range(0, len(rows), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=rows[i : i + MAX_BATCH_METRICS])


def write_tags(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    from mlflow.entities import RunTag

    run_id = rid(op)
    tags = [RunTag(k, v) for k, v in op["tags"].items()]
    for i in range(0, len(tags), MAX_BATCH_PARAMS):
        client.log_batch(run_id, tags=tags[i : i + MAX_BATCH_PARAMS])


def write_artifact(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    path = Path(op["path"])
    if not path.exists():
        warn(f"artifact:{path}", f"buffered artifact {path} is gone; not uploaded")
        return
    if path.is_dir():
        client.log_artifacts(rid(op), str(path), op["subdir"])
    else:
        client.log_artifact(rid(op), str(path), op["subdir"])


def write_dataset(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    d = op["dataset"]
    ds = Dataset(
        name=d["name"],
        digest=d["digest"],
        source_type=d["source_type"],
        source=d["source"],
        schema=d["schema"],
        profile=d["profile"],
    )
    tags = [InputTag("mlflow.data.context", d["context"])]
    client.log_inputs(rid(op), datasets=[DatasetInput(ds, tags)])


def write_status(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    client.set_terminated(rid(op), op["status"], end_time=op["end_time"])


def write_reopen(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    client.update_run(rid(op), status="RUNNING")


def write_supersede(client, rid: Resolve, op: dict[str, Any], warn: Warn) -> None:
    """The replaced run keeps its data; tags say it is superseded and by which run."""
    from mlflow.entities import RunTag

    tags = [RunTag("superseded", "true"), RunTag("superseded_by", rid({"run": op["by"]}))]
    client.log_batch(rid(op), tags=tags)


WRITERS = {
    "params": write_params,
    "metrics": write_metrics,
    "tags": write_tags,
    "artifact": write_artifact,
    "dataset": write_dataset,
    "status": write_status,
    "reopen": write_reopen,
    "supersede": write_supersede,
}
