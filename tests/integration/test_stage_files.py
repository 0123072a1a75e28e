"""A stage's files are its own while it runs: a second process refused by the stage lock, and the
cleanup that follows its failure (Snakemake's "Removing output files of failed job"), cannot leave
the running trainer with record files that its manifest hashes cut short or missing. The trainer
writes them whole from memory at the end and checks them before its manifest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paper_repro.config import STAGES
from paper_repro.provenance.integrity import verify_inputs
from paper_repro.provenance.io import read_json, sha256_file
from paper_repro.provenance.paths import RunPaths

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.tiny.sft_steps=60", "rm.epochs=2"]  # = tests/conftest.py TINY_TEST_OVERRIDES


def train_rm(root: Path) -> list[str]:
    return [sys.executable, "-m", "paper_repro.cli", "train-rm", "tiny", *TINY, "--run-dir",
            str(root)]  # fmt: skip


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def stopped_mid_training(root: Path, paths: RunPaths, env: dict[str, str]) -> subprocess.Popen:
    """A CLI train_rm on ``root``, stopped (SIGSTOP) once training is under way: it holds the
    stage lock while another job comes and goes. The caller resumes and reaps it."""
    holder = subprocess.Popen(train_rm(root), env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while lines(paths.train_metrics) < 2:  # training is under way
            assert holder.poll() is None, holder.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    except BaseException:
        holder.kill()
        holder.wait()
        raise
    holder.send_signal(signal.SIGSTOP)
    return holder


@pytest.mark.slow  # two stage processes and a whole tiny training
@pytest.mark.hardening(
    "3", "refused second train-rm, then the holder's outputs deleted mid-run: rewritten whole"
)
def test_a_refused_run_and_its_cleanup_cannot_cut_the_holders_records(tiny_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    paths = RunPaths(root)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    holder = stopped_mid_training(root, paths, env)
    try:
        second = subprocess.run(
            train_rm(root), env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 2 and f"in use by PID {holder.pid}" in second.stderr
        written = lines(paths.train_metrics)
        # what Snakemake does next for the failed job: remove every declared output
        for out in (paths.train_metrics, paths.train_summary, paths.trained_state):
            out.unlink(missing_ok=True)
        holder.send_signal(signal.SIGCONT)
        assert holder.wait(timeout=600) == 0, holder.stderr.read()
    finally:
        holder.kill()
        holder.wait()
    summary = read_json(paths.train_summary)
    assert lines(paths.train_metrics) == summary["updates"] > written  # every update, whole
    manifest = read_json(paths.manifest("train_rm"))
    assert manifest["files"]["metrics.jsonl"] == sha256_file(paths.train_metrics)
    verify_inputs(paths, "export_rm")  # what the next stage checks: all there, all matching


def snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
           "-d", str(workdir), "--configfile", str(REPO / "config" / "config.yaml"),
           "--config", f"overrides={json.dumps(TINY)}", *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def holder_files(paths: RunPaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths.stage_dir("train_rm").iterdir() if p.is_file()}


@pytest.mark.slow  # Snakemake, a stage process and a whole tiny training
@pytest.mark.hardening(
    "3",
    "`snakemake --forcerun train_rm` refused while a CLI train-rm runs: deletes none of its files",
)
def test_a_refused_snakemake_job_deletes_none_of_the_holders_files(tiny_run, tmp_path):
    """The job's rule declares only the stage's manifest and identity, which the running holder
    removed when it started: Snakemake's "Removing output files of failed job" finds nothing of
    the holder's to delete, and the holder's manifest lists its files as they end."""
    root = tmp_path / "results" / "tiny"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    paths = RunPaths(root)
    # real config files, and the upstream stages marked done (their files are the tiny run's)
    configs = [str(paths.stage_config(s).relative_to(tmp_path)) for s in STAGES[:4]]
    assert snakemake(tmp_path, "--cores", "2", *configs).returncode == 0
    for line in snakemake(tmp_path, "-n", "train_rm").stdout.splitlines():
        if line.startswith("    output: "):
            for path in (tmp_path / n for n in line.removeprefix("    output: ").split(", ")):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch(exist_ok=True)
    touched = snakemake(tmp_path, "--cores", "1", "--touch", "train_rm")
    assert touched.returncode == 0, touched.stderr
    holder = stopped_mid_training(
        root, paths, {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    )
    try:
        before = holder_files(paths)
        refused = snakemake(tmp_path, "--cores", "1", "train_rm", "--forcerun", "train_rm")
        assert refused.returncode != 0
        log = paths.log("train_rm").read_text()
        assert f"in use by PID {holder.pid}" in log, log
        assert holder_files(paths) == before  # nothing of the holder's deleted or changed
        holder.send_signal(signal.SIGCONT)
        assert holder.wait(timeout=600) == 0, holder.stderr.read()
    finally:
        holder.kill()
        holder.wait()
    summary = read_json(paths.train_summary)
    assert lines(paths.train_metrics) == summary["updates"]  # every update, whole
    manifest = read_json(paths.manifest("train_rm"))
    for name, sha in manifest["files"].items():
        assert sha256_file(paths.stage_dir("train_rm") / name) == sha, name
    verify_inputs(paths, "export_rm")
