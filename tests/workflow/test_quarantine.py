"""A corrupt upstream output found by a stage is never silently accepted by the next Snakemake
run: the stage moves it and its manifest aside (the manifest is an input of every consumer, and
Snakemake removes the failed job's outputs), so `snakemake all` reruns that stage and everything
after it instead of saying "Nothing to be done". Real stages up to prepare_data, the rest marked
done with --touch; a few minutes: slow."""

from __future__ import annotations

import os

import pytest

from .smk import config_arg, planned_jobs, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
CONFIG = config_arg(overrides=["model.tiny.sft_steps=20", "rm.epochs=2"])


@pytest.mark.hardening("2", "truncated download_data/preference.jsonl: next `snakemake all` reruns")
def test_truncated_download_is_rebuilt_by_the_next_snakemake_run(tmp_path):
    snakemake(tmp_path, "--cores", "2", "prepare_data", *CONFIG, timeout=900)
    for line in snakemake(tmp_path, "-n", "all", *CONFIG).stdout.splitlines():
        if line.startswith("    output: "):  # later stages: outputs faked, then marked done
            for name in line.removeprefix("    output: ").split(", "):
                path = tmp_path / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch() if path.suffix else path.mkdir(exist_ok=True)
    snakemake(tmp_path, "--cores", "1", "--touch", "all", *CONFIG)
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "all", *CONFIG).stdout

    run = tmp_path / "results" / "tiny"
    raw = run / "download_data" / "preference.jsonl"
    st = raw.stat()
    raw.write_bytes(raw.read_bytes()[: st.st_size // 4])
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns))  # invisible to Snakemake's mtime check
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "all", *CONFIG).stdout

    # A stage job that reads the file finds it (here forced; in practice any rerun of a consumer).
    failed = snakemake(
        tmp_path, "--cores", "1", "prepare_data", "--forcerun", "prepare_data", *CONFIG, check=False
    )
    assert failed.returncode != 0
    log = (run / "logs" / "prepare_data.log").read_text().strip().splitlines()
    assert "preference.jsonl expected sha256:" in log[-1]
    rel = "results/tiny"  # the jobs run in the workflow's directory
    assert f"`paper-repro download-data {rel}/config/download_data.yaml --run-dir {rel}`" in log[-1]
    jobs = planned_jobs(snakemake(tmp_path, "-n", "all", *CONFIG).stdout)
    assert {"download_data", "prepare_data", "train_rm", "eval_rewardbench", "report"} <= set(jobs)
    assert "download_base" not in jobs

    snakemake(tmp_path, "--cores", "2", "prepare_data", *CONFIG, timeout=900)
    assert raw.read_bytes().count(b"\n") == 3888  # recreated whole
