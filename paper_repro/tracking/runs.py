"""The MLflow side of a record: which run it belongs to, creating that run safely in a shared
store, and writing the record there (``StageStore``; ``WRITERS``, one small function per kind).

A child run belongs to one (pipeline run, stage, stage identity, attempt): ``RunBook.open`` picks
it locally, before MLflow is even reachable, from ``results/<run>/tracking/<stage>.json``:

- an interrupted attempt of the same identity that resumes from its checkpoint (``resume=True``)
  continues its own run;
- anything else (a new identity, ``--forcerun``, a rerun of a stage that starts from scratch) opens
  a new run, and the previous one is tagged ``superseded`` (kept, with a link to its successor), so
  the params and tags of a run always describe the files its attempt produced and no metric step
  repeats within a run.

Each run has a local key; every buffered record names it, so records written while the store was
down go to the run they belong to even when a newer run exists by the time they are replayed. The
MLflow run itself is created on first use (``StageStore.run_id``), with the tags recorded in the book.
The parent run (one per pipeline run, ``tracking/_parent.json``) is shared by every stage.

The book also keeps, per run and metric, the highest step submitted: a resumed attempt re-runs the
updates after its checkpoint, and their metrics are dropped instead of logged twice (MLflow appends
a repeated step rather than replacing it).

Several stage processes may share one sqlite store. MLflow sets sqlite's busy_timeout but neither
serialises its schema creation/migration nor retries "database is locked" (it retries only
Postgres deadlocks), so store and experiment creation run under ``flock`` and every write goes
through ``retry_locked``.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..provenance.io import read_json, write_json
from ..provenance.paths import RunPaths
from .redact import public_uri

PARENT = "_parent"
# Tag that makes MLflow 3's UI list the experiment under "Machine learning" (model training), not
# under "GenAI apps & agents": the ExperimentKind enum of the bundled UI (mlflow/server/js,
# CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"); mlflow/demo/generators/traces.py sets
# the same key to "genai_development" for GenAI demos.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
LOCK_RETRIES = 12  # "database is locked" retries (backoff 0.05 s doubling to 2 s, ~15 s total)


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_file(uri: str, paths: RunPaths) -> Path:
    """Next to the sqlite file when the store is one (several runs may share it), else per run."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + ".lock")
    return paths.tracking_dir / ".lock"


def is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


def retry_locked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """sqlite writers that collide get SQLITE_BUSY even with MLflow's 20 s busy_timeout when a
    read transaction must upgrade to a write; back off and try again."""
    delay = 0.05
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_locked(exc) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(delay * (1.0 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- run books


@dataclass
class RunEntry:
    identity: str  # StageIdentity.digest ("" for the parent)
    tags: dict[str, str]  # creation tags
    run_id: str | None = None  # set once MLflow created it
    finished: bool = False  # the attempt ended FINISHED: a later attempt opens a new run
    superseded_by: str | None = None  # key of the run that replaced it
    # highest step submitted per metric (our stages log each metric at increasing steps)
    steps: dict[str, int] = field(default_factory=dict)


@dataclass
class RunBook:
    """``tracking/<stage>.json``: the stage's runs by local key, and the current one."""

    path: Path
    current: str | None = None
    runs: dict[str, RunEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: RunPaths, stage: str) -> RunBook:
        path = paths.tracking_dir / f"{stage}.json"  # the parent's: _parent.json
        book = cls(path)
        if not path.is_file():
            return book
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            body = read_json(path)
            if "runs" not in body:  # a run-id file of an older version: one run, identity unknown
                legacy = {"identity": "", "tags": {}, "run_id": body["run_id"]}
                body = {"current": "legacy", "runs": {"legacy": legacy}}
            book.current = body["current"]
            book.runs = {k: RunEntry(**v) for k, v in body["runs"].items()}
        return book

    def save(self) -> None:
        runs = {k: asdict(v) for k, v in self.runs.items()}
        write_json(self.path, {"current": self.current, "runs": runs})

    @property
    def entry(self) -> RunEntry | None:
        return self.runs.get(self.current) if self.current else None

    def open(self, identity: str, tags: dict[str, str], resume: bool) -> tuple[str, str | None]:
        """(key of the run this attempt logs to, key of the run it supersedes or None)."""
        old = self.entry
        if resume and old is not None and old.identity == identity and not old.finished:
            old.tags.update(tags)
            self.save()
            return self.current, None
        key = uuid.uuid4().hex[:12]
        superseded = None
        if old is not None:
            old.superseded_by, superseded = key, self.current
        self.runs[key] = RunEntry(identity=identity, tags=dict(tags))
        self.current = key
        self.save()
        return key, superseded

    def fresh_steps(self, key: str, rows: list[list[Any]]) -> list[list[Any]]:
        """The metric rows ``[name, value, timestamp, step]`` whose step is new for that run;
        records the new highest steps."""
        entry = self.runs[key]
        out = []
        for row in rows:
            name, step = row[0], row[3]
            if step > entry.steps.get(name, -1):
                entry.steps[name] = step
                out.append(row)
        if out:
            self.save()
        return out


# --------------------------------------------------------------------------- MLflow side


def experiment_id(client, name: str, paths: RunPaths, uri: str) -> str:
    """The experiment (created when missing, tagged as a model-training experiment)."""
    from mlflow.exceptions import MlflowException

    kind_key, kind = EXPERIMENT_KIND
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # a server proxies artifacts; the embedded store keeps them next to the run
        location = paths.mlflow_artifacts.resolve().as_uri() if uri.startswith("sqlite:") else None
        try:
            return client.create_experiment(name, artifact_location=location, tags={kind_key: kind})
        except MlflowException as exc:  # another machine created it first (server store)
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if kind_key not in exp.tags:  # an experiment created before the tag existed
        client.set_experiment_tag(exp.experiment_id, kind_key, kind)
    return exp.experiment_id


def recorded_run_ids(paths: RunPaths) -> dict[str, str]:
    """{"_parent" | stage: MLflow id of its current run} as recorded under results/<run>/tracking/."""
    out = {}
    for f in sorted(paths.tracking_dir.glob("*.json")):
        entry = RunBook.load(paths, f.stem).entry
        if entry is not None and entry.run_id:
            out[f.stem] = entry.run_id
    return out


class StageStore:
    """The MLflow store as one stage sees it: local keys -> MLflow run ids (runs, and the parent,
    are created on first use) and ``write``, which sends one record to its run."""

    def __init__(self, client, experiment_id: str, paths: RunPaths, uri: str, stage: str, warn):
        self.client, self.experiment_id, self.paths, self.uri = client, experiment_id, paths, uri
        self.stage, self.warn = stage, warn
        self._checked: set[tuple[str, str]] = set()

    @classmethod
    def connect(cls, uri: str, paths: RunPaths, stage: str, experiment: str, warn) -> StageStore:
        """Client and experiment; store creation (schema, migrations) and experiment creation
        under the store's file lock. Raises when the store does not answer."""
        from mlflow.tracking import MlflowClient

        with flock(lock_file(uri, paths)):
            client = MlflowClient(uri)
            exp_id = retry_locked(experiment_id, client, experiment, paths, uri)
        return cls(client, exp_id, paths, uri, stage, warn)

    def write(self, op: dict[str, Any]) -> None:
        """Send one record (``WRITERS[op["op"]]``), retried while sqlite says it is locked."""
        retry_locked(WRITERS[op["op"]], self, op)

    def run_id_of(self, op: dict[str, Any]) -> str:
        """The MLflow run of a record: the parent, the run its key names, or (records of an
        older version without a key) the stage's current run."""
        if op.get("parent"):
            return self.run_id(PARENT)
        return self.run_id(
            self.stage, op.get("run") or RunBook.load(self.paths, self.stage).current
        )

    def run_id(self, stage: str, key: str | None = None) -> str:
        """The MLflow id of run ``key`` of ``stage`` (the parent: its only run)."""
        if stage == PARENT:
            with flock(self.paths.tracking_dir / ".parent.lock"):  # stages share the parent
                return self._resolve(PARENT, key)
        return self._resolve(stage, key)

    def _resolve(self, stage: str, key: str | None) -> str:
        from mlflow.exceptions import MlflowException

        book = RunBook.load(self.paths, stage)
        key = key if stage != PARENT else book.current
        entry = book.runs[key]
        if entry.run_id and (stage, key) not in self._checked:
            try:
                self.client.get_run(entry.run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                self.warn(
                    "lost-run",
                    f"run {entry.run_id} of {stage} is not in {public_uri(self.uri)}; "
                    "starting a new one",
                )
                entry.run_id = None
        if not entry.run_id:
            tags = dict(entry.tags)
            if stage != PARENT:
                tags["mlflow.parentRunId"] = self.run_id(PARENT)
            name = self.paths.root.name if stage == PARENT else stage
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            entry.run_id = run.info.run_id
            book.save()
        self._checked.add((stage, key))
        return entry.run_id


def parent_book(paths: RunPaths, tags: dict[str, str]) -> RunBook:
    """The parent's book, created with ``tags`` the first time any stage runs."""
    paths.tracking_dir.mkdir(parents=True, exist_ok=True)
    with flock(paths.tracking_dir / ".parent.lock"):
        book = RunBook.load(paths, PARENT)
        if book.entry is None:
            book.current = PARENT
            book.runs[PARENT] = RunEntry(identity="", tags={**tags, "stage": "pipeline"})
            book.save()
    return book


# --------------------------------------------------------------------------- writers
# One small function per record kind: ``WRITERS[op["op"]](store, op)`` sends the record to the
# run ``store.run_id_of(op)`` names. MlflowClient.log_batch splits into MLflow's batch limits itself.


def _write_params(st: StageStore, op: dict[str, Any]) -> None:
    from mlflow.entities import Param

    run_id = st.run_id_of(op)
    existing = st.client.get_run(run_id).data.params
    new = []
    for k, v in op["params"].items():
        if k not in existing:
            new.append(Param(k, v))
        elif existing[k] != v:  # MLflow forbids changing a param; keep the first, say so
            st.warn(
                f"param:{k}",
                f"param '{k}' changed from {existing[k]!r} to {v!r} on resume; MLflow keeps the "
                "first value (see the config_hash tag)",
            )
    if new:
        st.client.log_batch(run_id, params=new)


def _write_metrics(st: StageStore, op: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    rows = [Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]]
    st.client.log_batch(st.run_id_of(op), metrics=rows)


def _write_tags(st: StageStore, op: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    st.client.log_batch(st.run_id_of(op), tags=[RunTag(k, v) for k, v in op["tags"].items()])


def _write_artifact(st: StageStore, op: dict[str, Any]) -> None:
    path = Path(op["path"])
    if not path.exists():
        st.warn(f"artifact:{path}", f"buffered artifact {path} is gone; not uploaded")
    elif path.is_dir():
        st.client.log_artifacts(st.run_id_of(op), str(path), op["subdir"])
    else:
        st.client.log_artifact(st.run_id_of(op), str(path), op["subdir"])


def _write_dataset(st: StageStore, op: dict[str, Any]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    d = dict(op["dataset"])
    tags = [InputTag("mlflow.data.context", d.pop("context"))]
    st.client.log_inputs(st.run_id_of(op), datasets=[DatasetInput(Dataset(**d), tags)])


def _write_supersede(st: StageStore, op: dict[str, Any]) -> None:
    """The replaced run keeps its data; tags say it is superseded and by which run."""
    from mlflow.entities import RunTag

    tags = [RunTag("superseded", "true"), RunTag("superseded_by", st.run_id_of({"run": op["by"]}))]
    st.client.log_batch(st.run_id_of(op), tags=tags)


WRITERS = {
    "params": _write_params,
    "metrics": _write_metrics,
    "tags": _write_tags,
    "artifact": _write_artifact,
    "dataset": _write_dataset,
    "status": lambda st, op: st.client.set_terminated(
        st.run_id_of(op), op["status"], end_time=op["end_time"]
    ),
    "reopen": lambda st, op: st.client.update_run(st.run_id_of(op), status="RUNNING"),
    "supersede": _write_supersede,
}
