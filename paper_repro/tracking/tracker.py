"""The rank-0 tracker of one stage: records go to MLflow when it answers, else to a JSONL buffer
on disk that is replayed in order later; ranks other than 0 get a ``NullTracker``. Which run a
record belongs to is decided locally (``runs.py``): every record names its run's local key."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from ..io import sha256_file, sha256_tree
from ..paths import RunPaths
from .redact import is_secret_key, public_uri, redact, scrub, secret_values
from .runs import PARENT, RunBook, RunResolver, experiment_id, parent_book
from .store import flock, is_permanent, lock_file, pending_file, reason, retry_locked
from .writers import WRITERS

log = logging.getLogger(__package__)  # one logger for the whole tracking package

RETRY_INTERVAL_S = 30.0  # while the store is unreachable, try to reconnect at most this often
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
    def set_parent_tags(self, tags: dict[str, Any]) -> None: ...
    def log_parent_metrics(self, metrics: dict[str, float]) -> None: ...
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
        identity: str = "",
        retry_interval: float = RETRY_INTERVAL_S,
    ):
        self.uri, self.paths, self.stage, self.experiment = uri, paths, stage, experiment
        self.run_tags, self.parent_tags, self.identity = run_tags, parent_tags, identity
        self.retry_interval = retry_interval
        self.pending = pending_file(paths, stage)
        self.key: str | None = None  # local key of this attempt's run (runs.RunBook)
        self.client = None
        self.resolver: RunResolver | None = None
        self._next_try = 0.0
        self._warned: set[str] = set()
        self._secrets = secret_values()

    @property
    def run_id(self) -> str | None:
        """The MLflow id of this attempt's run, once created."""
        entry = RunBook.load(self.paths, self.stage).runs.get(self.key or "")
        return entry.run_id if entry else None

    # ---------------------------------------------------------------- public API
    def log_params(self, params: dict[str, Any]) -> None:
        clean = {k: v[:PARAM_MAX_CHARS] for k, v in scrub(params).items()}
        if clean:
            self._submit({"op": "params", "params": clean})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics at ``step``; a step this run already has for a metric is dropped (a resumed
        attempt re-runs the updates after its checkpoint)."""
        rows = self._rows(metrics, lambda name: int(step or 0))
        rows = RunBook.load(self.paths, self.stage).fresh_steps(self.key, rows)
        if rows:
            self._submit({"op": "metrics", "metrics": rows})

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        """Pipeline-level results on the parent run (sortable in the MLflow UI), each at the step
        after its last one: a rerun of the report adds a point, never repeats a step."""
        with flock(self.paths.tracking_dir / ".parent.lock"):
            book = RunBook.load(self.paths, PARENT)
            steps = book.entry.steps
            rows = book.fresh_steps(
                book.current, self._rows(metrics, lambda k: steps.get(k, -1) + 1)
            )
        if rows:
            self._submit({"op": "metrics", "metrics": rows, "parent": True})

    def set_parent_tags(self, tags: dict[str, Any]) -> None:
        clean = {k: redact(str(v), self._secrets) for k, v in tags.items() if not is_secret_key(k)}
        if clean:
            self._submit({"op": "tags", "tags": clean, "parent": True})

    def _rows(self, metrics: dict[str, float], step_of) -> list[list[Any]]:
        ts = int(time.time() * 1000)
        rows = []
        for k, v in metrics.items():
            try:
                rows.append([metric_key(k), float(v), ts, step_of(metric_key(k))])
            except (TypeError, ValueError):
                self._warn(f"metric:{k}", f"metric '{k}' has non-numeric value {v!r}; not logged")
        return rows

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

    def start(self, resume: bool = False) -> None:
        """Choose this attempt's run (locally: ``RunBook.open``), connect (or go offline with a
        warning) and replay what a previous attempt buffered."""
        parent_book(self.paths, self.parent_tags)
        book = RunBook.load(self.paths, self.stage)
        before = book.current
        self.key, superseded = book.open(self.identity, self.run_tags, resume)
        if superseded is not None:
            self._submit({"op": "supersede", "run": superseded, "by": self.key})
        if self.key == before:  # the same run again: running, with this attempt's tags (job id)
            self._submit({"op": "reopen"})
            self._submit({"op": "tags", "tags": self.run_tags})
        try:
            self._connect()
        except Exception as exc:
            self._offline(exc)
            return
        self._flush()

    def finish(self, status: str) -> None:
        """End this attempt's run; a FINISHED run is never continued (a later attempt opens a
        new one)."""
        self._submit({"op": "status", "status": status, "end_time": int(time.time() * 1000)})
        if status == "FINISHED":
            book = RunBook.load(self.paths, self.stage)
            book.runs[self.key].finished = True
            book.save()

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
        """Client and experiment (store creation and migrations under the file lock); runs are
        created on first use (``runs.RunResolver``)."""
        if self.resolver is not None:
            return
        from mlflow.tracking import MlflowClient

        with flock(lock_file(self.uri, self.paths)):
            client = MlflowClient(self.uri)
            exp_id = retry_locked(experiment_id, client, self.experiment, self.paths, self.uri)
        self.resolver = RunResolver(client, exp_id, self.paths, self.uri, self._warn)
        self.client = client

    def _rid(self, op: dict[str, Any]) -> str:
        """The MLflow run of a record: the parent, the run its key names, or (records of an
        older version without a key) the stage's current run."""
        if op.get("parent"):
            return self.resolver.run_id(PARENT)
        key = op.get("run") or RunBook.load(self.paths, self.stage).current
        return self.resolver.run_id(self.stage, key)

    def _submit(self, op: dict[str, Any]) -> None:
        if not op.get("parent"):
            op.setdefault("run", self.key)
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
            retry_locked(WRITERS[op["op"]], self.client, self._rid, op, self._warn)
