"""The real tiny DAG on CPU (`snakemake --cores 2 all`, as `make run`), Snakemake's --report, an
interrupted training job resumed with --rerun-incomplete, and a changed training setting that
retrains from scratch. Several minutes: marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from .smk import ROOT, SNAKEMAKE, config_arg, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def tiny_dag(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny-dag")
    start = time.time()
    proc = snakemake(workdir, "--cores", "2", "all", timeout=1200)
    print(f"\ntiny DAG, --cores 2: {time.time() - start:.0f} s")
    return workdir, proc.stdout + proc.stderr


def test_all_ends_with_the_report_path(tiny_dag):
    workdir, out = tiny_dag
    report = workdir / "results" / "tiny" / "report" / "report.md"
    assert report.is_file()
    assert f"Report of run 'tiny': {report}" in out
    for stage in ("download_base", "train_rm", "eval_rewardbench", "ppo", "report"):
        assert (workdir / "results" / "tiny" / "benchmarks" / f"{stage}.tsv").is_file()
    assert "Nothing to be done" in snakemake(workdir, "-n", "all").stdout


def test_snakemake_report_html_has_the_figures(tiny_dag):
    workdir, _ = tiny_dag
    html = workdir / "snakemake-report.html"
    snakemake(workdir, "--report", str(html))
    text = html.read_text(errors="replace")
    figures = sorted(p.name for p in (workdir / "results/tiny/report/figures").glob("*.png"))
    assert figures and all(name in text for name in figures)


def test_interrupted_training_resumes_with_rerun_incomplete(tiny_dag):
    workdir, _ = tiny_dag
    run = workdir / "results" / "tiny"
    ckpt = run / "checkpoints" / "train_rm"
    subprocess.run(["rm", "-rf", str(ckpt)], check=True)  # retrain from scratch
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(ROOT / "config/config.yaml"), "--cores", "2",
           "--forcerun", "train_rm", "train_rm"]  # fmt: skip
    first = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (ckpt / "latest").is_file() and time.time() < deadline:
            time.sleep(0.5)
        assert (ckpt / "latest").is_file(), "no checkpoint within 300 s"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash: Snakemake leaves an incomplete marker
        first.wait(timeout=30)
    saved = (ckpt / "latest").read_text().strip()
    assert ckpt.is_dir() and not (run / "train_rm" / "summary.json").exists()

    # What Snakemake asks for after a crash: release the stale lock, rerun the incomplete job.
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete", "train_rm", timeout=600)
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] is not None
    assert summary["resumed_from_update"] >= int(saved.split("-")[-1]) > 0


def test_changed_training_setting_retrains_from_scratch(tiny_dag):
    workdir, _ = tiny_dag
    run = workdir / "results" / "tiny"
    assert (run / "checkpoints" / "train_rm" / "latest").is_file()
    snakemake(
        workdir, "--cores", "2", "train_rm", *config_arg(overrides=["rm.lr=0.002"]), timeout=600
    )
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] is None  # not the old config's checkpoint
    assert (run / "checkpoints" / "train_rm.stale" / "latest").is_file()
