"""The rank-0 tracker of one stage: records go to MLflow when it answers, else to a JSONL buffer
on disk that is replayed in order later; ranks other than 0 get a ``NullTracker``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from ..io import read_json, sha256_file, sha256_tree, write_json
from ..paths import RunPaths
from .redact import is_secret_key, public_uri, redact, scrub, secret_values
from .store import flock, is_permanent, lock_file, pending_file, reason, retry_locked, run_id_file

log = logging.getLogger(__package__)  # one logger for the whole tracking package

RETRY_INTERVAL_S = 30.0  # while the store is unreachable, try to reconnect at most this often
MAX_BATCH_METRICS = 1000  # MLflow log_batch limits
MAX_BATCH_PARAMS = 100
PARAM_MAX_CHARS = 6000
_KEY_OK = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(key: str) -> str:
    """MLflow accepts letters, digits, ``_ - . /`` and space in metric names."""
    return _KEY_OK.sub("_", key)


# --------------------------------------------------------------------------- trackers


class NullTracker:
    """What ranks != 0 get: every call does nothing."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_file_ref(self, name: str, path: str | Path, sha256: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_dataset(
        self,
        name: str,
        path: str | Path,
        digest: str | None = None,
        context: str = "training",
        profile: dict[str, Any] | None = None,
    ) -> None: ...
    def flush(self) -> bool:
        return True


class StageTracker(NullTracker):
    """The rank-0 tracker of one stage. Records go to MLflow when it answers, else to a JSONL
    buffer on disk (``tracking/<stage>.pending.jsonl``) that is replayed in order later."""

    def __init__(
        self,
        uri: str,
        paths: RunPaths,
        stage: str,
        *,
        experiment: str,
        run_tags: dict[str, str],
        parent_tags: dict[str, str],
        retry_interval: float = RETRY_INTERVAL_S,
    ):
        self.uri, self.paths, self.stage, self.experiment = uri, paths, stage, experiment
        self.run_tags, self.parent_tags = run_tags, parent_tags
        self.retry_interval = retry_interval
        self.pending = pending_file(paths, stage)
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.client = None
        self._next_try = 0.0
        self._warned: set[str] = set()
        self._secrets = secret_values()

    # ---------------------------------------------------------------- public API
    def log_params(self, params: dict[str, Any]) -> None:
        clean = {k: v[:PARAM_MAX_CHARS] for k, v in scrub(params).items()}
        if clean:
            self._submit({"op": "params", "params": clean})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        rows = []
        for k, v in metrics.items():
            try:
                rows.append([metric_key(k), float(v), ts, int(step or 0)])
            except (TypeError, ValueError):
                self._warn(f"metric:{k}", f"metric '{k}' has non-numeric value {v!r}; not logged")
        if rows:
            self._submit({"op": "metrics", "metrics": rows})

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        path = Path(path).resolve()
        if not path.exists():
            self._warn(f"artifact:{path}", f"artifact {path} does not exist; not logged")
            return
        if self._contains_secret(path):
            self._warn(f"secret:{path}", f"artifact {path} contains a credential; not uploaded")
            return
        self._submit({"op": "artifact", "path": str(path), "subdir": subdir})

    def log_file_ref(self, name: str, path: str | Path, sha256: str | None = None) -> None:
        """Big files (checkpoints, models) by path and sha256, never uploaded. A folder gets the
        sha256 of its sorted {file: sha256} manifest; pass ``sha256`` when it is already known."""
        path = Path(path).resolve()
        if sha256 is None:
            if path.is_dir():
                manifest = json.dumps(sha256_tree(path), sort_keys=True).encode()
                sha256 = hashlib.sha256(manifest).hexdigest()
            else:
                sha256 = sha256_file(path)
        self.set_tags({f"file.{name}.path": str(path), f"file.{name}.sha256": sha256})

    def set_tags(self, tags: dict[str, Any]) -> None:
        clean = {k: redact(str(v), self._secrets) for k, v in tags.items() if not is_secret_key(k)}
        if clean:
            self._submit({"op": "tags", "tags": clean})

    def log_dataset(
        self,
        name: str,
        path: str | Path,
        digest: str | None = None,
        context: str = "training",
        profile: dict[str, Any] | None = None,
    ) -> None:
        """An MLflow dataset input (``Run.inputs``): name, digest, file source (uri + sha256),
        and for parquet files the Arrow schema and row count."""
        path = Path(path).resolve()
        sha = sha256_file(path) if path.is_file() else None
        schema, prof = None, dict(profile or {})
        if path.suffix == ".parquet" and path.is_file():
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
            prof.setdefault("num_rows", meta.num_rows)
            schema = json.dumps(
                {"arrow": [f"{f.name}: {f.type}" for f in meta.schema.to_arrow_schema()]}
            )
        dataset = {
            "name": name,
            "digest": (digest or sha or "unknown")[:36],  # MLflow's digest column is 36 chars
            "source_type": "local",
            "source": json.dumps({"uri": path.as_uri(), "sha256": sha}),
            "schema": schema,
            "profile": json.dumps(prof) if prof else None,
            "context": context,
        }
        self._submit({"op": "dataset", "dataset": dataset})

    def flush(self) -> bool:
        """Send buffered records now; True when nothing is left on disk."""
        self._next_try = 0.0
        try:
            return self._flush()
        except Exception as exc:  # e.g. the buffer's disk is full: never fail the stage
            self._warn("internal", f"buffered records not sent: {reason(exc)}")
            return False

    def start(self) -> None:
        """Connect (or go offline with a warning) and replay what a previous attempt buffered."""
        try:
            self._connect()
        except Exception as exc:
            self._offline(exc)
            return
        self._flush()

    # ---------------------------------------------------------------- internals
    def _warn(self, kind: str, msg: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("[tracking:%s] %s", self.stage, msg)

    def _contains_secret(self, path: Path) -> bool:
        if not self._secrets:
            return False
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            if f.stat().st_size > 50 << 20:
                continue
            data = f.read_bytes()
            if any(s.encode() in data for s in self._secrets):
                return True
        return False

    def _connect(self) -> None:
        """Client, experiment, parent run and stage run; store creation under the file lock."""
        if self.client is not None and self.run_id is not None:
            return
        from mlflow.tracking import MlflowClient

        with flock(lock_file(self.uri, self.paths)):
            client = MlflowClient(self.uri)
            exp_id = retry_locked(self._experiment_id, client)
            self.parent_run_id = retry_locked(
                self._get_or_create,
                client,
                exp_id,
                "_parent",
                self.paths.root.name,
                {**self.parent_tags, "stage": "pipeline"},
            )
        tags = {**self.run_tags, "mlflow.parentRunId": self.parent_run_id}
        self.run_id = retry_locked(
            self._get_or_create, client, exp_id, self.stage, self.stage, tags
        )
        self.client = client

    def _experiment_id(self, client) -> str:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = (
                self.paths.mlflow_artifacts.resolve().as_uri()
                if self.uri.startswith("sqlite:")
                else None
            )  # a server proxies artifacts
            try:
                return client.create_experiment(self.experiment, artifact_location=location)
            except MlflowException as exc:  # another machine created it first (server store)
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise
                exp = client.get_experiment_by_name(self.experiment)
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

    def _get_or_create(self, client, exp_id: str, key: str, name: str, tags: dict[str, str]) -> str:
        """Reuse the run recorded in tracking/<key>.json (a resumed job continues it); create a
        new one only when the store says that run does not exist."""
        from mlflow.exceptions import MlflowException

        f = run_id_file(self.paths, key)
        if f.is_file():
            run_id = read_json(f)["run_id"]
            try:
                run = client.get_run(run_id)
                if run.info.status != "RUNNING" and key != "_parent":
                    client.update_run(run_id, status="RUNNING")
                return run_id
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                self._warn(
                    "lost-run",
                    f"run {run_id} of {key} is not in {public_uri(self.uri)}; starting a new one",
                )
        run = client.create_run(exp_id, run_name=name, tags=tags)
        write_json(
            f, {"run_id": run.info.run_id, "experiment_id": exp_id, "uri": public_uri(self.uri)}
        )
        return run.info.run_id

    def _submit(self, op: dict[str, Any]) -> None:
        try:
            if not self.pending.exists() and time.monotonic() >= self._next_try:
                try:
                    self._connect()
                    self._apply([op])
                    return
                except Exception as exc:
                    if is_permanent(exc):
                        self._warn(
                            f"drop:{op['op']}", f"MLflow rejected a {op['op']} record: {exc}"
                        )
                        return
                    self._offline(exc)
            self._append(op)
            if time.monotonic() >= self._next_try:
                self._flush()
        except Exception as exc:  # never fail the stage because of tracking
            self._warn("internal", f"tracking record lost: {type(exc).__name__}: {exc}")

    def _offline(self, exc: BaseException) -> None:
        self._next_try = time.monotonic() + self.retry_interval
        self._warn(
            "offline",
            f"MLflow at {public_uri(self.uri)} unavailable ({reason(exc)}); buffering records in "
            f"{self.pending} and "
            f"retrying every {self.retry_interval:g} s",
        )

    def _append(self, op: dict[str, Any]) -> None:
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with flock(self.pending.with_suffix(".lock")), open(self.pending, "a") as fh:
            fh.write(json.dumps(op) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _flush(self) -> bool:
        if not self.pending.exists():
            return True
        with flock(self.pending.with_suffix(".lock")):
            lines = [ln for ln in self.pending.read_text().splitlines() if ln.strip()]
            ops = []
            for ln in lines:
                try:
                    ops.append(json.loads(ln))
                except json.JSONDecodeError:  # a line cut by a crash mid-write: skip it
                    self._warn("corrupt", f"skipped an unreadable line in {self.pending}")
            sent = 0
            try:
                self._connect()
                for op in ops:
                    try:
                        self._apply([op])
                    except Exception as exc:
                        if not is_permanent(exc):
                            raise
                        self._warn(
                            f"drop:{op['op']}", f"MLflow rejected a {op['op']} record: {exc}"
                        )
                    sent += 1
            except Exception as exc:
                self._offline(exc)
            rest = ops[sent:]
            if rest:
                tmp = self.pending.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(op) + "\n" for op in rest))
                os.replace(tmp, self.pending)
                return False
            self.pending.unlink()
            self._next_try = 0.0
            log.info(
                "[tracking:%s] sent %d buffered records to %s",
                self.stage,
                sent,
                public_uri(self.uri),
            )
            return True

    def _apply(self, ops: list[dict[str, Any]]) -> None:
        for op in ops:
            retry_locked(getattr(self, f"_apply_{op['op']}"), op)

    def _apply_params(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = []
        for k, v in op["params"].items():
            if k not in existing:
                new.append(Param(k, v))
            elif existing[k] != v:  # MLflow forbids changing a param; keep the first, say so
                self._warn(
                    f"param:{k}",
                    f"param '{k}' changed from {existing[k]!r} to {v!r} on "
                    "resume; MLflow keeps the first value (see the config_hash tag)",
                )
        for i in range(0, len(new), MAX_BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=new[i : i + MAX_BATCH_PARAMS])

    def _apply_metrics(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        rows = [Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]]
        for i in range(0, len(rows), MAX_BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=rows[i : i + MAX_BATCH_METRICS])

    def _apply_tags(self, op: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in op["tags"].items()]
        for i in range(0, len(tags), MAX_BATCH_PARAMS):
            self.client.log_batch(self.run_id, tags=tags[i : i + MAX_BATCH_PARAMS])

    def _apply_artifact(self, op: dict[str, Any]) -> None:
        path = Path(op["path"])
        if not path.exists():
            self._warn(f"artifact:{path}", f"buffered artifact {path} is gone; not uploaded")
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), op["subdir"])
        else:
            self.client.log_artifact(self.run_id, str(path), op["subdir"])

    def _apply_dataset(self, op: dict[str, Any]) -> None:
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
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(ds, tags)])

    def _apply_status(self, op: dict[str, Any]) -> None:
        run_id = self.parent_run_id if op.get("parent") else self.run_id
        self.client.set_terminated(run_id, op["status"], end_time=op["end_time"])
