"""The real tiny DAG on CPU (`snakemake --cores 2 all`, as `make run`), Snakemake's --report, and
what happens after a finished run: a forced rerun trains from update 0, a killed Snakemake leaves
no orphan trainer and the rerun resumes bitwise, an upstream override restarts PPO against the new
reward model, and an eval-only override gets its own MLflow run. The tests run in file order on
one run folder. Several minutes: marked slow."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from paper_repro.config import STAGES, config_hash, load_config
from paper_repro.paths import RunPaths
from paper_repro.reporting.tables import parse_markdown_table, rows_where

from .smk import ROOT, SNAKEMAKE, config_arg, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
RM_LR = "rm.lr=0.002"


@pytest.fixture(scope="module")
def tiny_dag(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny-dag")
    start = time.time()
    proc = snakemake(workdir, "--cores", "2", "all", timeout=1800)
    print(f"\ntiny DAG, --cores 2: {time.time() - start:.0f} s")
    run = workdir / "results" / "tiny"
    fresh = {"weights": (run / "train_rm" / "final.safetensors").read_bytes()}
    return workdir, proc.stdout + proc.stderr, fresh


def log(workdir: Path, stage: str) -> str:
    return (workdir / "results" / "tiny" / "logs" / f"{stage}.log").read_text()


def test_all_ends_with_the_report_path(tiny_dag):
    workdir, out, _ = tiny_dag
    run = workdir / "results" / "tiny"
    report = run / "report" / "report.md"
    assert report.is_file()
    assert f"Report of run 'tiny': {report}" in out
    for stage in ("download_base", "train_rm", "eval_rewardbench", "ppo", "report"):
        assert (run / "benchmarks" / f"{stage}.tsv").is_file()
    prov = json.loads((run / "report" / "provenance.json").read_text())
    assert set(prov["stage_identities"]) == set(STAGES) - {"report"}
    for stage in STAGES:
        assert json.loads((run / stage / "identity.json").read_text())["stage"] == stage
    assert "Nothing to be done" in snakemake(workdir, "-n", "all").stdout


def test_snakemake_report_html_has_the_figures(tiny_dag):
    workdir, _, _ = tiny_dag
    html = workdir / "snakemake-report.html"
    snakemake(workdir, "--report", str(html))
    text = html.read_text(errors="replace")
    figures = sorted(p.name for p in (workdir / "results/tiny/report/figures").glob("*.png"))
    assert figures and all(name in text for name in figures)


def test_forcerun_of_a_finished_stage_trains_from_update_0(tiny_dag):
    """`--forcerun train_rm` reran only the last 10 of 150 updates before (the completed run's
    checkpoint): now update 0, and bitwise the fresh run's weights."""
    workdir, _, fresh = tiny_dag
    run = workdir / "results" / "tiny"
    snakemake(workdir, "--cores", "2", "--forcerun", "train_rm", "train_rm", timeout=900)
    text = log(workdir, "train_rm")
    assert "belong to a run that completed" in text and "resumed from" not in text
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] is None
    assert len((run / "train_rm" / "metrics.jsonl").read_text().splitlines()) == 150
    assert (run / "train_rm" / "final.safetensors").read_bytes() == fresh["weights"]
    assert list((run / "checkpoints").glob("train_rm.completed-*/update-*"))  # kept, named


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has exited


def test_killed_snakemake_leaves_no_orphan_and_the_rerun_resumes_bitwise(tiny_dag):
    """SIGKILL of Snakemake alone (not its process group) at a random moment after the first
    checkpoint: the trainer, its direct child, gets SIGTERM from the kernel, checkpoints and
    exits; the lock is free; `--rerun-incomplete` resumes and ends bitwise equal to a fresh run."""
    workdir, _, fresh = tiny_dag
    run = workdir / "results" / "tiny"
    ckpt = run / "checkpoints" / "train_rm"
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(ROOT / "config/config.yaml"), "--cores", "2",
           "--forcerun", "train_rm", "train_rm"]  # fmt: skip
    smk = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    lock = run / "train_rm" / ".lock"
    done_before = len(list(ckpt.parent.glob("train_rm.completed-*")))
    try:  # the finished run's checkpoints are set aside first, then the first new one appears
        _wait(
            lambda: (
                len(list(ckpt.parent.glob("train_rm.completed-*"))) > done_before
                and list(ckpt.glob("update-*"))
            ),
            600,
            "the first checkpoint",
        )
        time.sleep(random.Random(os.getpid()).uniform(0, 3))
        trainer = json.loads(lock.read_text())["pid"]
        ppid = int(Path(f"/proc/{trainer}/status").read_text().split("PPid:\t")[1].split()[0])
        assert ppid == smk.pid  # the job's shell exec'd the stage: Snakemake is its parent
        os.kill(smk.pid, signal.SIGKILL)
        smk.wait(timeout=30)
        _wait(lambda: not _alive(trainer), 300, f"trainer {trainer} to exit after its parent")
    finally:
        if smk.poll() is None:
            os.killpg(smk.pid, signal.SIGKILL)
    assert "preempted: checkpoint" in log(workdir, "train_rm")  # SIGTERM -> checkpoint -> 75
    saved = max(int(p.name.split("-")[1]) for p in ckpt.glob("update-*"))
    assert not (run / "train_rm" / "summary.json").exists()

    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete", "train_rm", timeout=900)
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] == saved > 0
    assert (run / "train_rm" / "final.safetensors").read_bytes() == fresh["weights"]


def test_upstream_override_restarts_ppo_against_the_new_reward_model(tiny_dag, tmp_path):
    """Before: `rm.lr=...` retrained the RM but PPO resumed its old checkpoint (a policy trained
    against the old RM finished against the new one; the report's pre-PPO reward was the old
    RM's). Now PPO starts at step 0 and equals a fresh PPO run on the new reward model."""
    workdir, _, _ = tiny_dag
    run = workdir / "results" / "tiny"
    snakemake(workdir, "--cores", "2", "all", *config_arg(overrides=[RM_LR]), timeout=1800)
    assert "another identity (config changed)" in log(workdir, "train_rm")
    text = log(workdir, "ppo")
    assert "another identity (upstream export_rm changed)" in text, text
    assert "starting at step 0/" in text and "resumed from" not in text

    fresh = tmp_path / "fresh"  # a fresh PPO run on the same inputs, outside the DAG
    for stage in ("download_base", "prepare_data", "export_rm"):
        shutil.copytree(run / stage, fresh / stage)
    proc = subprocess.run(
        [str(SNAKEMAKE.parent / "paper-repro"), "ppo", str(run / "config" / "ppo.yaml"),
         "--run-dir", str(fresh)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    want = json.loads((fresh / "ppo" / "summary.json").read_text())
    got = json.loads((run / "ppo" / "summary.json").read_text())
    for key in ("eval_reward_before", "eval_reward_after", "kl_final"):
        assert got[key] == want[key], key
    md = (run / "report" / "report.md").read_text()
    rows = parse_markdown_table(md.split("**PPO with the trained reward model", 1)[1])
    assert rows_where(rows, Quantity="held-out reward before PPO")["Value"] == (
        f"{want['eval_reward_before']:.4f}"
    )


def test_eval_only_override_gets_its_own_mlflow_run(tiny_dag):
    """Before: the eval run kept bootstrap_samples 200 and the old config_hash after a 300
    override, and a second attempt appended to the first one's history."""
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import recorded_run_ids

    workdir, _, _ = tiny_dag
    run = workdir / "results" / "tiny"
    overrides = [RM_LR, "eval.bootstrap_samples=300"]
    out = snakemake(workdir, "--cores", "2", "all", *config_arg(overrides=overrides), timeout=900)
    assert "rule train_rm:" not in out.stdout + out.stderr  # only eval_rewardbench and report
    cfg = load_config("tiny", overrides)
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    ids = recorded_run_ids(RunPaths(run))
    current = client.get_run(ids["eval_rewardbench"])
    assert current.data.params["eval.bootstrap_samples"] == "300"
    assert current.data.tags["config_hash"] == config_hash(cfg)
    assert "superseded" not in current.data.tags
    evals = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'eval_rewardbench'")
    old = [r for r in evals if r.data.tags.get("superseded") == "true"]
    assert any(r.data.params["eval.bootstrap_samples"] == "200" for r in old)
    for r in client.search_runs([exp.experiment_id], max_results=500):
        for key in r.data.metrics:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(steps) == len(set(steps)), (r.data.tags.get("stage"), key, steps)
    parent = client.get_run(ids["_parent"])
    assert parent.data.tags["config_hash"] == config_hash(cfg)
    scores = json.loads(RunPaths(run).eval_scores.read_text())
    assert parent.data.metrics["rewardbench.score"] == scores["score"]["score"]
