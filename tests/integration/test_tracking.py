"""MLflow tracking against real stores: embedded sqlite, and a real ``mlflow server`` on 127.0.0.1.

Covers (resume reattaches, unchanged params re-log cleanly, only
rank 0 logs, checkpoints not uploaded), the sqlite "database is locked" race with 8 processes, and
a tracking-server outage in the middle of a stage.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from paper_repro import tracking
from paper_repro.config import STAGES, config_hash, load_config, stage_hash
from paper_repro.provenance.io import sha256_file
from paper_repro.provenance.paths import RunPaths

MARKER = "hf_MARKERc0ffee5ecret"


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture
def paths(tmp_path):
    return RunPaths(tmp_path / "run")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _n_params(cfg, stage: str = "train_rm") -> int:
    return len(tracking.scrub(tracking.stage_params(cfg, stage)))


# --------------------------------------------------------------------------- pure helpers


def test_scrub_drops_secret_keys_and_redacts_secret_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", MARKER)
    out = tracking.scrub(
        {"hf_token": "x", "model.api_key": "y", "note": f"use {MARKER}", "lr": 1e-5}
    )
    assert out == {"note": "use ***", "lr": "1e-05"}


def test_metric_key_sanitises_names_mlflow_rejects():
    assert tracking.metric_key("acc@subset:mt-bench") == "acc_subset_mt-bench"
    assert tracking.metric_key("train/loss 1.0") == "train/loss 1.0"


def test_retry_locked_retries_only_database_locked():
    import sqlite3

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert tracking.runs.retry_locked(flaky) == "ok" and len(calls) == 3

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("no such table: runs")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        tracking.runs.retry_locked(broken)
    assert len(calls) == 1


# --------------------------------------------------------------------------- embedded sqlite


def test_parent_and_child_runs_with_params_metrics_tags_inputs(cfg, paths, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    data = tmp_path / "train.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"row": [0, 1, 2], "chosen_len": [5, 6, 7]}), data)
    big = tmp_path / "final.safetensors"
    big.write_bytes(os.urandom(4096))
    small = tmp_path / "summary.json"
    small.write_text('{"updates": 3}\n')

    with tracking.stage_run(cfg, paths, "train_rm") as tr:
        for step in range(4):
            tr.log_metrics({"loss": 1.0 / (step + 1), "accuracy": 0.5 + step / 10}, step=step)
        tr.log_dataset("train", data)
        tr.log_file_ref("final", big)
        tr.log_artifact(small)
        run_id = tr.run_id

    ids = tracking.recorded_run_ids(paths)
    assert ids["train_rm"] == run_id and "_parent" in ids
    c = _client(tracking.tracking_uri(cfg, paths))
    run = c.get_run(run_id)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == ids["_parent"]
    assert tags["stage"] == "train_rm" and tags["preset"] == "tiny"
    assert tags["config_hash"] == config_hash(cfg) and tags["slurm_job_id"] == "4242"
    assert tags["git_commit"] != "" and tags["stage_config_hash"]
    assert tags["file.final.sha256"] == sha256_file(big)  # by path + sha256 ...
    assert tags["file.final.path"] == str(big.resolve())
    arts = {a.path for a in c.list_artifacts(run_id)}
    assert arts == {"summary.json"}  # ... never uploaded
    assert run.info.status == "FINISHED"
    assert len(run.data.params) == _n_params(cfg)
    assert run.data.params["rm.lr"] == str(cfg.rm.lr)
    assert [m.value for m in c.get_metric_history(run_id, "loss")] == [1.0, 0.5, 1 / 3, 0.25]
    (ds,) = run.inputs.dataset_inputs
    assert ds.dataset.name == "train" and ds.dataset.digest == sha256_file(data)[:36]
    assert json.loads(ds.dataset.profile) == {"num_rows": 3}
    assert json.loads(ds.dataset.source)["sha256"] == sha256_file(data)
    parent = c.get_run(ids["_parent"])
    assert parent.data.tags["stage"] == "pipeline" and parent.info.run_name == "run"
    assert not tracking.pending_file(paths, "train_rm").exists()


def test_resumed_attempt_continues_its_run_without_repeating_a_step(cfg, paths, caplog):
    with pytest.raises(KeyboardInterrupt):  # an attempt killed after update 2
        with tracking.stage_run(cfg, paths, "train_rm") as tr:
            for step in range(3):
                tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            first = tr.run_id
            raise KeyboardInterrupt
    with caplog.at_level(logging.WARNING, logger="paper_repro.tracking"):
        with tracking.stage_run(cfg, paths, "train_rm", resume=True) as tr:
            assert tr.run_id == first
            run = _client(tr.uri).get_run(first)
            assert run.info.status == "RUNNING"  # reopened while the resumed job runs
            for step in range(1, 5):  # the checkpoint was at update 1: updates 1, 2 run again
                tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    ours = [r for r in caplog.records if r.name == "paper_repro.tracking"]
    assert ours == []  # unchanged params: nothing to complain about
    c = _client(tracking.tracking_uri(cfg, paths))
    assert [m.step for m in c.get_metric_history(first, "loss")] == [0, 1, 2, 3, 4]
    assert c.get_run(first).info.status == "FINISHED"
    runs = c.search_runs([c.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert len(runs) == 2  # one parent, one child: the resume created nothing new


def test_rerun_of_a_finished_stage_opens_a_new_run(cfg, paths):
    """--forcerun of a finished stage trains from update 0: a new run, never a second step 0."""
    for _ in range(2):
        with tracking.stage_run(cfg, paths, "train_rm", resume=True) as tr:
            tr.log_metrics({"loss": 1.0}, step=0)
    c = _client(tr.uri)
    runs = c.search_runs(
        [c.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        filter_string="tags.stage = 'train_rm'",
    )
    old, new = sorted(runs, key=lambda r: r.info.start_time)
    assert new.info.run_id == tr.run_id and "superseded" not in new.data.tags
    assert old.data.tags["superseded"] == "true" and old.data.tags["superseded_by"] == tr.run_id
    for run in (old, new):
        assert [m.step for m in c.get_metric_history(run.info.run_id, "loss")] == [0]


def test_new_identity_opens_a_new_run_with_the_new_params(cfg, paths, caplog):
    with tracking.stage_run(cfg, paths, "eval_rewardbench") as tr:
        tr.log_metrics({"score": 0.4})
        old = tr.run_id
    changed = load_config("tiny", ["eval.bootstrap_samples=7"])
    with caplog.at_level(logging.WARNING, logger="paper_repro.tracking"):
        with tracking.stage_run(changed, paths, "eval_rewardbench", resume=True) as tr:
            tr.log_metrics({"score": 0.5})
    assert not [r for r in caplog.records if r.name == "paper_repro.tracking"]
    c = _client(tr.uri)
    run, prev = c.get_run(tr.run_id), c.get_run(old)
    assert tr.run_id != old
    assert run.data.params["eval.bootstrap_samples"] == "7"
    assert run.data.tags["config_hash"] == config_hash(changed)
    assert run.data.tags["stage_config_hash"] == stage_hash(changed, "eval_rewardbench")
    assert "rm.lr" not in run.data.params  # only what the stage reads: never stale
    assert prev.data.params["eval.bootstrap_samples"] == str(cfg.eval.bootstrap_samples)
    assert (
        prev.data.tags["superseded"] == "true"
        and prev.data.tags["identity"] != run.data.tags["identity"]
    )
    assert run.data.metrics == {"score": 0.5} and run.info.status == "FINISHED"


def test_experiment_is_a_model_training_experiment_and_parent_gets_headlines(cfg, paths):
    with tracking.stage_run(cfg, paths, "report") as tr:
        tr.set_parent_tags({"preset": "tiny", "config_hash": config_hash(cfg)})
        tr.log_parent_metrics({"rewardbench.score": 0.7})
    with tracking.stage_run(cfg, paths, "report") as tr:
        tr.log_parent_metrics({"rewardbench.score": 0.8})
    c = _client(tr.uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = tracking.recorded_run_ids(paths)["_parent"]
    hist = c.get_metric_history(parent, "rewardbench.score")
    assert [(m.step, m.value) for m in hist] == [(0, 0.7), (1, 0.8)]
    assert c.get_run(parent).data.tags["config_hash"] == config_hash(cfg)


def test_offline_records_go_to_the_run_of_their_own_identity(cfg, tmp_path):
    """Two attempts of different identities while the store is down; replayed later, each
    record lands in its own run, and the first run is tagged superseded by the second."""
    port = _free_port()
    paths = RunPaths(tmp_path / "run")
    for bootstrap in (11, 12):
        down = load_config(
            "tiny", [f"tracking.uri=http://127.0.0.1:{port}", f"eval.bootstrap_samples={bootstrap}"]
        )
        with tracking.stage_run(down, paths, "eval_rewardbench") as tr:
            tr.log_metrics({"score": bootstrap / 100})
    up = load_config("tiny", [f"tracking.uri=sqlite:///{tmp_path / 'up.db'}"])
    assert tracking.sync(up, paths) == {"eval_rewardbench": True}
    c = _client(up.tracking.uri)
    runs = c.search_runs(
        [c.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        filter_string="tags.stage = 'eval_rewardbench'",
    )
    by_param = {r.data.params["eval.bootstrap_samples"]: r for r in runs}
    assert sorted(by_param) == ["11", "12"]
    assert by_param["11"].data.metrics == {"score": 0.11} and by_param["12"].data.metrics == {
        "score": 0.12
    }
    assert by_param["11"].data.tags["superseded_by"] == by_param["12"].info.run_id
    assert "superseded" not in by_param["12"].data.tags


def test_a_record_over_mlflow_batch_limits_arrives_whole(cfg, paths):
    """One call with more than a request may carry (100 params or tags, 1000 metrics): the
    writers leave the splitting to ``MlflowClient.log_batch``; nothing is dropped."""
    with tracking.stage_run(cfg, paths, "eval_reference") as tr:
        tr.log_params({f"extra.p{i}": i for i in range(150)})
        tr.set_tags({f"t{i}": i for i in range(150)})
        tr.log_metrics({f"m{i}": float(i) for i in range(1200)}, step=0)
    run = _client(tr.uri).get_run(tr.run_id)
    assert len(run.data.metrics) == 1200
    assert sum(k.startswith("extra.p") for k in run.data.params) == 150
    assert sum(k[0] == "t" and k[1:].isdigit() for k in run.data.tags) == 150


def test_only_rank_zero_logs(cfg, paths, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with tracking.stage_run(cfg, paths, "train_rm") as tr:
        assert isinstance(tr, tracking.NullTracker) and tr.run_id is None
        tr.log_metrics({"loss": 1.0}, step=0)
        tr.log_dataset("train", "/nonexistent")
    assert not paths.mlflow_db.exists() and not paths.tracking_dir.exists()


def test_failed_stage_marks_run_failed_and_propagates(cfg, paths):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.stage_run(cfg, paths, "ppo") as tr:
            raise RuntimeError("boom")
    assert _client(tr.uri).get_run(tr.run_id).info.status == "FAILED"


def test_report_stage_ends_the_parent_run(cfg, paths):
    with tracking.stage_run(cfg, paths, "train_rm"):
        pass
    c = _client(tracking.tracking_uri(cfg, paths))
    parent = tracking.recorded_run_ids(paths)["_parent"]
    assert c.get_run(parent).info.status == "RUNNING"
    with tracking.stage_run(cfg, paths, "report"):
        pass
    assert c.get_run(parent).info.status == "FINISHED"


def test_no_secret_reaches_mlflow(cfg, paths, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", MARKER)
    leaky = tmp_path / "leaky.txt"
    leaky.write_text(f"Authorization: Bearer {MARKER}\n")
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing to see\n")
    with tracking.stage_run(cfg, paths, "download_base") as tr:
        tr.log_params({"hf_token": MARKER, "hub.note": f"token {MARKER}"})
        tr.set_tags({"env.HF_TOKEN": MARKER, "cmd": f"huggingface-cli login --token {MARKER}"})
        tr.log_artifact(leaky)
        tr.log_artifact(clean)
    run = _client(tr.uri).get_run(tr.run_id)
    assert run.data.params["hub.note"] == "token ***" and "hf_token" not in run.data.params
    assert run.data.tags["cmd"].endswith("--token ***") and "env.HF_TOKEN" not in run.data.tags
    assert {a.path for a in _client(tr.uri).list_artifacts(tr.run_id)} == {"clean.txt"}
    # Nothing anywhere in the store: the database file and every artifact byte.
    stored = [paths.mlflow_db, *paths.mlflow_artifacts.rglob("*")]
    assert all(MARKER.encode() not in p.read_bytes() for p in stored if p.is_file())
    assert len([p for p in stored if p.is_file()]) >= 2


def test_unreachable_store_buffers_to_disk_then_replays_in_order(cfg, tmp_path, caplog):
    """A store that is down from the start: the stage runs, warns once, keeps every record in
    the JSONL buffer; ``sync`` later creates the runs and sends them all."""
    port = _free_port()  # nothing listens here
    down = load_config("tiny", [f"tracking.uri=http://127.0.0.1:{port}"])
    paths = RunPaths(tmp_path / "run")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="paper_repro.tracking"):
        with tracking.stage_run(down, paths, "train_rm") as tr:
            for step in range(200):
                tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            tr.set_tags({"note": "offline"})
    assert time.monotonic() - t0 < 20  # a dead server costs seconds, not minutes of retries
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "Connection refused" in warnings[0].getMessage()
    buf = tracking.pending_file(paths, "train_rm")
    ops = [json.loads(line) for line in buf.read_text().splitlines()]
    assert [o["op"] for o in ops] == ["params"] + ["metrics"] * 200 + ["tags", "status"]

    # The store is "back" (here: the embedded store at the same run dir, new URI).
    up = load_config("tiny", [f"tracking.uri=sqlite:///{tmp_path / 'up.db'}"])
    assert tracking.sync(up, paths) == {"train_rm": True}
    assert not buf.exists()
    c = _client(up.tracking.uri)
    run_id = tracking.recorded_run_ids(paths)["train_rm"]
    hist = c.get_metric_history(run_id, "loss")
    assert [m.step for m in hist] == list(range(200))
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["note"] == "offline"
    assert len(run.data.params) == _n_params(cfg)


# --------------------------------------------------------------------------- 8 processes, 1 sqlite

WORKER = textwrap.dedent(
    """
    import sys, time
    from paper_repro import tracking
    from paper_repro.config import load_config
    from paper_repro.provenance.paths import RunPaths

    stage, run_dir, steps, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    cfg = load_config("tiny")
    paths = RunPaths(run_dir)
    while time.time() < start_at:  # all processes hit the fresh store at the same moment
        time.sleep(0.005)
    with tracking.stage_run(cfg, paths, stage) as tr:
        for step in range(steps):
            tr.log_metrics({"loss": 1.0 / (step + 1), "acc": step / steps, "lr": 1e-5}, step=step)
            if step % 10 == 0:
                tr.set_tags({f"t{step}": step})
        tr.log_dataset(stage, __file__)
    """
)


@pytest.mark.slow
def test_eight_processes_share_one_sqlite_store_without_losing_anything(cfg, paths, tmp_path):
    steps = 60
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    start_at = time.time() + 12  # after every interpreter has imported mlflow
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), stage, str(paths.root), str(steps), str(start_at)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stage in STAGES
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
        assert "unavailable" not in err, err  # no record went to the offline buffer
    assert list(paths.tracking_dir.glob("*.pending.jsonl")) == []

    c = _client(tracking.tracking_uri(cfg, paths))
    exps = [e for e in c.search_experiments() if e.name == cfg.tracking.experiment]
    assert len(exps) == 1  # no duplicate experiment from the creation race
    runs = c.search_runs([exps[0].experiment_id], max_results=100)
    ids = tracking.recorded_run_ids(paths)
    assert len(runs) == len(STAGES) + 1 and len(ids) == len(STAGES) + 1  # one parent, 8 children
    for stage in STAGES:
        run = c.get_run(ids[stage])
        assert run.data.tags["mlflow.parentRunId"] == ids["_parent"]
        assert run.info.status == "FINISHED"
        assert len(run.data.params) == _n_params(cfg, stage)
        for key in ("loss", "acc", "lr"):
            assert [m.step for m in c.get_metric_history(ids[stage], key)] == list(range(steps))
        assert sum(k.startswith("t") and k[1:].isdigit() for k in run.data.tags) == steps // 10
        assert len(run.inputs.dataset_inputs) == 1


# --------------------------------------------------------------------------- a real server outage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = open(tmp_path / f"server-{time.time_ns()}.log", "w")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    _stop_server(proc)
    raise RuntimeError(f"mlflow server did not answer on port {port}")


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's process group: gunicorn/uvicorn too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_server_outage_during_training_loses_no_metric(tmp_path, caplog):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    cfg = load_config("tiny", [f"tracking.uri={uri}"])
    paths = RunPaths(tmp_path / "run")
    server = _start_server(tmp_path, port)
    try:
        with caplog.at_level(logging.WARNING, logger="paper_repro.tracking"):
            with tracking.stage_run(cfg, paths, "train_rm") as tr:
                tr.retry_interval = 0.5  # short, so the test sees the reconnect mid-stage
                art = tmp_path / "notes.txt"
                art.write_text("before the outage\n")
                tr.log_artifact(art)
                for step in range(0, 30):
                    tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
                _stop_server(server)  # the server dies mid-training
                t0 = time.monotonic()
                for step in range(30, 80):
                    tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
                assert time.monotonic() - t0 < 15  # training is not stalled by the dead server
                assert tracking.pending_file(paths, "train_rm").exists()
                server = _start_server(tmp_path, port)
                time.sleep(0.6)
                for step in range(80, 100):  # the first call after the interval flushes
                    tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
                assert not tracking.pending_file(paths, "train_rm").exists()
        assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
        c = _client(uri)
        hist = c.get_metric_history(tr.run_id, "loss")
        assert [m.step for m in hist] == list(range(100))
        assert [m.value for m in hist] == [1.0 / (s + 1) for s in range(100)]
        run = c.get_run(tr.run_id)
        assert run.info.status == "FINISHED"
        assert len(run.data.params) == _n_params(cfg)
        assert {a.path for a in c.list_artifacts(tr.run_id)} == {"notes.txt"}
    finally:
        _stop_server(server)


def test_a_broken_tracking_setup_never_fails_the_stage(tmp_path, caplog):
    cfg = load_config("tiny", ["tracking.uri=bogus-scheme://nowhere"])
    paths = RunPaths(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="paper_repro.tracking"):
        with tracking.stage_run(cfg, paths, "export_rm") as tr:
            tr.log_metrics({"max_abs_diff": 0.0})
            tr.log_metrics({"not_a_number": "abc"})  # dropped, with a warning
    msgs = [r.getMessage() for r in caplog.records if r.name == "paper_repro.tracking"]
    assert any("unavailable" in m and "bogus-scheme" in m for m in msgs)
    assert any("non-numeric value 'abc'" in m for m in msgs)
    lines = tracking.pending_file(paths, "export_rm").read_text().splitlines()
    ops = [json.loads(line)["op"] for line in lines]
    assert ops == ["params", "metrics", "status"]


def test_training_stages_get_system_metrics_and_others_do_not(cfg, paths, monkeypatch):
    """MLflow's system metrics sampler runs on the train_rm / ppo runs only."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    ids = {}
    for stage in ("train_rm", "eval_rewardbench"):
        with tracking.stage_run(cfg, paths, stage) as tr:
            tr.log_metrics({"x": 1.0}, step=0)
            time.sleep(1.5)  # several sampling intervals
            ids[stage] = tr.run_id
    c = _client(tracking.tracking_uri(cfg, paths))
    trained = c.get_run(ids["train_rm"]).data.metrics
    assert "system/cpu_utilization_percentage" in trained
    assert "system/system_memory_usage_megabytes" in trained
    assert not [k for k in c.get_run(ids["eval_rewardbench"]).data.metrics if "system/" in k]
