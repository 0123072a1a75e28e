"""The rank-0 tracker of one stage: records go to MLflow when it answers, else to a JSONL buffer
on disk that is replayed in order later; ranks other than 0 get a ``NullTracker``. Which run a
record belongs to is decided locally (``runs.py``): every record names its run's local key.

A record is a JSON-able dict ``{"op": kind, "run": key, ...}``; ``runs.StageStore.write`` sends
it (the only place that calls MLflow for run data). MLflow's own async logging (``synchronous=False``) is not used for this: its queue
lives in memory and a batch that fails is logged and dropped, so an outage, or the process ending
during one, would lose records; the buffer here is on disk and retried."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from ..provenance.io import sha256_file, sha256_tree
from ..provenance.paths import RunPaths
from .redact import file_has_secret, public_uri, scrub, secret_values
from .runs import PARENT, RunBook, StageStore, flock, is_locked, parent_book

log = logging.getLogger(__package__)  # one logger for the whole tracking package

RETRY_INTERVAL_S = 30.0  # while the store is unreachable, try to reconnect at most this often
PARAM_MAX_CHARS = 6000
_KEY_OK = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(key: str) -> str:
    """MLflow accepts letters, digits, ``_ - . /`` and space in metric names."""
    return _KEY_OK.sub("_", key)


def pending_file(paths: RunPaths, stage: str) -> Path:
    return paths.tracking_dir / f"{stage}.pending.jsonl"


def reason(exc: BaseException, width: int = 160) -> str:
    """One line; long HTTP errors keep their head (the call) and tail (the socket error)."""
    text = " ".join(str(exc).split())
    if len(text) > 2 * width:
        text = f"{text[:width]} ... {text[-width:]}"
    return f"{type(exc).__name__}: {text}"


def is_permanent(exc: BaseException) -> bool:
    """Errors that a retry cannot fix (bad input); everything else is treated as an outage."""
    code = getattr(exc, "error_code", "")
    return code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE") and not is_locked(
        exc
    )


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
        self.store: StageStore | None = None
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
        if clean := {k: v[:PARAM_MAX_CHARS] for k, v in scrub(params, self._secrets).items()}:
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
        if clean := scrub(tags, self._secrets):
            self._submit({"op": "tags", "tags": clean, "parent": True})

    def _rows(self, metrics: dict[str, float], step_of) -> list[list[Any]]:
        ts = int(time.time() * 1000)
        rows = []
        for k, v in metrics.items():
            try:
                rows.append([metric_key(k), float(v), ts, step_of(metric_key(k))])
            except (TypeError, ValueError):
                self.warn(f"metric:{k}", f"metric '{k}' has non-numeric value {v!r}; not logged")
        return rows

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        path = Path(path).resolve()
        if not path.exists():
            self.warn(f"artifact:{path}", f"artifact {path} does not exist; not logged")
            return
        if file_has_secret(path, self._secrets):
            self.warn(f"secret:{path}", f"artifact {path} contains a credential; not uploaded")
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
        if clean := scrub(tags, self._secrets):
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
            self.warn("internal", f"buffered records not sent: {reason(exc)}")
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

    def finish(self, status: str, end_parent: bool = False) -> None:
        """End this attempt's run (and with ``end_parent``, the pipeline's parent run), then
        send what is buffered. A FINISHED run is never continued: a later attempt opens a new
        one."""
        end = int(time.time() * 1000)
        self._submit({"op": "status", "status": status, "end_time": end})
        if status == "FINISHED":
            book = RunBook.load(self.paths, self.stage)
            book.runs[self.key].finished = True
            book.save()
        if end_parent:
            self._submit({"op": "status", "status": status, "end_time": end, "parent": True})
        if not self.flush():
            self.warn(
                "left",
                f"MLflow unreachable at the end of {self.stage}; records kept in {self.pending} "
                "(sent by the next stage run or tracking.sync())",
            )

    def warn(self, kind: str, msg: str) -> None:
        """Log ``msg`` once per ``kind`` (a dead store must not flood the stage log)."""
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("[tracking:%s] %s", self.stage, msg)

    # ---------------------------------------------------------------- internals

    def _connect(self) -> None:
        """Client and experiment (``StageStore.connect``); runs are created on first use."""
        if self.store is None:
            self.store = StageStore.connect(
                self.uri, self.paths, self.stage, self.experiment, self.warn
            )
            self.client = self.store.client

    def _send(self, op: dict[str, Any]) -> None:
        """Write one record; a record MLflow rejects (bad input) is dropped with a warning, any
        other error (an outage) propagates."""
        self._connect()
        try:
            self.store.write(op)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            self.warn(f"drop:{op['op']}", f"MLflow rejected a {op['op']} record: {exc}")

    def _submit(self, op: dict[str, Any]) -> None:
        """Send ``op`` now when the store answers and nothing older waits on disk, else buffer
        it (order is kept: once anything is buffered, everything goes through the buffer)."""
        if not op.get("parent"):
            op.setdefault("run", self.key)
        try:
            if not self.pending.exists() and time.monotonic() >= self._next_try:
                try:
                    return self._send(op)
                except Exception as exc:
                    self._offline(exc)
            self._append(op)
            if time.monotonic() >= self._next_try:
                self._flush()
        except Exception as exc:  # never fail the stage because of tracking
            self.warn("internal", f"tracking record lost: {reason(exc)}")

    def _offline(self, exc: BaseException) -> None:
        self._next_try = time.monotonic() + self.retry_interval
        self.warn(
            "offline",
            f"MLflow at {public_uri(self.uri)} unavailable ({reason(exc)}); buffering records in "
            f"{self.pending} and retrying every {self.retry_interval:g} s",
        )

    def _append(self, op: dict[str, Any]) -> None:
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with flock(self.pending.with_suffix(".lock")), open(self.pending, "a") as fh:
            fh.write(json.dumps(op) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # a record the stage was told is kept survives a crash

    def _flush(self) -> bool:
        """Replay the buffer in order; what the store did not take stays on disk."""
        if not self.pending.exists():
            return True
        with flock(self.pending.with_suffix(".lock")):
            ops = []
            for line in filter(str.strip, self.pending.read_text().splitlines()):
                try:
                    ops.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash mid-write: skip it
                    self.warn("corrupt", f"skipped an unreadable line in {self.pending}")
            sent = 0
            try:
                for op in ops:
                    self._send(op)
                    sent += 1
            except Exception as exc:
                self._offline(exc)
            if rest := ops[sent:]:
                tmp = self.pending.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(op) + "\n" for op in rest))
                os.replace(tmp, self.pending)
                return False
            self.pending.unlink()
            self._next_try = 0.0
            log.info("[tracking:%s] sent %d buffered records", self.stage, sent)
            return True
