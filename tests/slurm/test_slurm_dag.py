"""The tiny DAG through real Slurm with the repository's own profile (`--profile slurm`, only the
site keys overridden), train_rm as a 2-task step with 2 DeepSpeed ranks over gloo; then a training
job cancelled mid-run and the same command again, which resumes from the checkpoint.

Every Snakemake call is bounded by `timeout -s KILL` (a status-check hang would otherwise never
end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paper_repro.config import STAGES

ROOT = Path(__file__).resolve().parents[2]
# The whole DAG through Slurm takes 10 to 15 minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(2400)]

OVERRIDES = [
    "rm.backend=deepspeed",
    "resources.train_rm.ranks_per_node=2",
    "rm.epochs=1",  # 75 updates instead of 150: enough for checkpoints every 20
    # Requests that fit a small CI machine (the tiny stages use well under 2 GB each).
    *(f"resources.{s}.mem_gb=2" for s in STAGES),
]


def snakemake_cmd(workdir: Path, *targets: str, limit_s: int) -> list[str]:
    """The literal `snakemake --profile slurm ...` typed in the repository root, results elsewhere."""
    return [
        "timeout", "-s", "KILL", str(limit_s),
        str(Path(sys.executable).parent / "snakemake"), *targets, "--profile", "slurm",
        "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
        "--configfile", str(ROOT / "config" / "config.yaml"),
        "--config", f"overrides={json.dumps(OVERRIDES)}",
        # The site key of profiles/slurm/config.yaml: this cluster's partition (no account).
        "--default-resources", "slurm_partition=debug",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-dag")
    start = time.time()
    proc = subprocess.run(snakemake_cmd(workdir, "all", limit_s=1500), cwd=ROOT, env=env(),
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.time() - start
    (workdir / "snakemake.out").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (
        f"rc {proc.returncode} after {seconds:.0f} s:\n{proc.stderr[-6000:]}"
    )
    print(f"\ntiny DAG through Slurm: {seconds:.0f} s")
    return workdir, proc.stdout + proc.stderr


def test_tiny_dag_runs_through_slurm(slurm_run):
    workdir, out = slurm_run
    run = workdir / "results" / "tiny"
    assert (run / "report" / "report.md").is_file()
    assert f"Report of run 'tiny': {run / 'report' / 'report.md'}" in out
    assert "Submitted job" in out or "submitted" in out.lower()
    # The profile's stable log folder, one folder per rule, kept after success.
    for rule in ("download_base", "train_rm", "eval_rewardbench", "ppo", "report"):
        assert list((workdir / "logs" / "slurm" / f"rule_{rule}").glob("*.log")), rule


def test_training_was_one_two_rank_deepspeed_step(slurm_run):
    workdir, _ = slurm_run
    run = workdir / "results" / "tiny"
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["backend"] == "deepspeed"
    log = (run / "logs" / "train_rm.log").read_text()
    assert "world size 2 (2 launcher(s) x 1 rank(s))" in log
    assert log.count("launch.sh: world size 2") == 3  # the batch step + one per task


def _squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "|".join(fields)], capture_output=True, text=True, check=True
    )
    return [line.split("|") for line in out.stdout.splitlines() if line]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_cancelled_training_resumes_from_its_checkpoint(slurm_run):
    """`scancel` mid-training: the profile's retries resubmit the job, which resumes from the
    checkpoint instead of starting over; the same command again then has nothing left to do."""
    workdir, _ = slurm_run
    run = workdir / "results" / "tiny"
    ckpt = run / "checkpoints" / "train_rm"
    # Retrain from scratch: drop the finished run's checkpoints and force train_rm.
    subprocess.run(["rm", "-rf", str(ckpt)], check=True)
    cmd = snakemake_cmd(workdir, "train_rm", limit_s=1200)
    logs_before = set((workdir / "logs/slurm/rule_train_rm").glob("*.log"))
    first = subprocess.Popen([*cmd, "--forcerun", "train_rm"], cwd=ROOT, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        _wait(lambda: (ckpt / "latest").is_file(), 600, "the first train_rm checkpoint")
        jobs = [job for job, comment in _squeue("%i", "%k") if comment == "rule_train_rm"]
        assert len(jobs) == 1, jobs
        saved = (ckpt / "latest").read_text().strip()
        subprocess.run(["scancel", jobs[0]], check=True)
        out, _ = first.communicate(timeout=1200)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
    assert first.returncode == 0, out[-6000:]
    # Two Slurm jobs for train_rm in this test: the cancelled one and its resubmission.
    new_logs = set((workdir / "logs/slurm/rule_train_rm").glob("*.log")) - logs_before
    assert len(new_logs) == 2, sorted(new_logs)
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    resumed = summary["resumed_from_update"]
    assert resumed is not None and resumed >= int(saved.split("-")[-1]) > 0, (saved, summary)
    assert summary["world_size"] == 2
    log = (run / "logs" / "train_rm.log").read_text()
    assert any("resumed from" in line and "update-" in line for line in log.splitlines()), log[
        -3000:
    ]

    again = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr
