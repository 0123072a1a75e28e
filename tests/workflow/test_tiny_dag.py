"""The real tiny DAG on CPU (`snakemake --cores 2 all`, as `make run`), for the `tiny` preset and
for `tiny-llama3-vocab` (the real Llama 3 tokenizer and vocabulary): every stage's output, the
exported folder read with transformers 4.51.0 / 4.57.6, Snakemake's --report; on `tiny` also an
interrupted training job resumed with --rerun-incomplete, and a changed training setting that
retrains from scratch. Several minutes: marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .smk import ROOT, SNAKEMAKE, config_arg, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def read(path: Path):
    return json.loads(path.read_text())


@dataclass
class Dag:
    workdir: Path
    preset: str
    output: str

    @property
    def run(self) -> Path:
        return self.workdir / "results" / self.preset

    def snakemake(self, *args: str, **kw):
        return snakemake(self.workdir, *args, *config_arg(preset=self.preset), **kw)


@pytest.fixture(scope="module", params=["tiny", "tiny-llama3-vocab"])
def tiny_dag(request, tmp_path_factory):
    dag = Dag(tmp_path_factory.mktemp(f"dag-{request.param}"), request.param, "")
    start = time.time()
    proc = dag.snakemake("--cores", "2", "all", timeout=1800)
    print(f"\n{dag.preset} DAG, --cores 2: {time.time() - start:.0f} s")
    dag.output = proc.stdout + proc.stderr
    return dag


def test_all_ends_with_the_report_path(tiny_dag):
    report = tiny_dag.run / "report" / "report.md"
    assert report.is_file()
    assert f"Report of run '{tiny_dag.preset}': {report}" in tiny_dag.output
    for stage in ("download_base", "train_rm", "eval_rewardbench", "ppo", "report"):
        assert (tiny_dag.run / "benchmarks" / f"{stage}.tsv").is_file()
    assert "Nothing to be done" in tiny_dag.snakemake("-n", "all").stdout


def test_every_stage_output(tiny_dag):
    """What each stage wrote, checked against the preset: the tokenizer and vocabulary the data
    was made with, the kept pairs and update count, the verified export (a clean folder: no
    Snakemake marker, no local path), the RewardBench pairs, the PPO steps, the report."""
    from paper_repro.config import derived, load_config
    from paper_repro.manifest import verify_manifest
    from paper_repro.paths import RunPaths

    cfg, paths = load_config(tiny_dag.preset), RunPaths(tiny_dag.run)
    llama3 = cfg.model.tiny.tokenizer == "llama3"
    verify_manifest(paths.base_model, paths.base_manifest)
    fp = read(paths.fingerprint)
    ids = (fp["bos_token_id"], fp["eos_token_id"], fp["pad_token_id"], fp["vocab_size"])
    assert ids == ((128000, 128001, 128255, 128256) if llama3 else (0, 1, 511, 512))
    data = read(paths.data_report)
    kept = data["train"]["kept"]
    assert kept + data["preference"]["dropped"] == data["preference"]["total"] == 2400
    if llama3:  # max_length 64 counted in Llama 3 tokens drops the longest fixture pairs
        assert data["preference"]["dropped_by_reason"]["too_long"] > 0
    summary = read(paths.train_summary)
    assert summary["updates"] == derived(cfg, kept).est_updates
    ver = read(paths.export_verification)
    assert ver["passed"] and ver["vocab_size"] == fp["vocab_size"]
    files = sorted(p.name for p in paths.rm_model.iterdir())
    assert files == sorted(ver["files"]) and not [f for f in files if f.startswith(".")]
    verify_manifest(paths.rm_model, paths.manifest("export_rm"))
    assert str(tiny_dag.workdir) not in (paths.rm_model / "README.md").read_text()
    scores = read(paths.eval_scores)
    assert scores["n_pairs"] == data["rewardbench"]["kept"] > 0
    assert read(paths.ppo_summary)["steps"] == cfg.ppo.max_steps
    assert paths.report_md.is_file() and paths.report_provenance.is_file()


def test_export_reads_the_same_in_transformers_4x(tiny_dag):
    """The exported folder with transformers 4.51.0 (reward-bench 0.1.4) and 4.57.6 (reward-bench
    main) in side environments: same tokenizer behaviour and fp32 rewards within 1e-5 of this
    environment's on the export's verification pairs; recorded in export_rm/crosscheck.json."""
    from paper_repro.export.crosscheck import crosscheck
    from paper_repro.paths import RunPaths

    paths = RunPaths(tiny_dag.run)
    record = crosscheck(paths, ["4.51.0", "4.57.6"])
    for version, c in record["checked"].items():
        print(
            f"\n{tiny_dag.preset}: transformers {version} vs {record['reference']['transformers']}"
            f": reward max |diff| {c['reward_max_abs_diff']:.3g}, differs {c['differs']}"
        )
        assert c["versions"]["transformers"] == version
        assert c["passed"] and c["reward_max_abs_diff"] <= 1e-5, c
    assert record["passed"] and read(paths.export_crosscheck) == record
    assert record["pairs"] == read(paths.export_verification)["verify_pairs"]


def test_snakemake_report_html_has_the_figures(tiny_dag):
    html = tiny_dag.workdir / "snakemake-report.html"
    tiny_dag.snakemake("--report", str(html))
    text = html.read_text(errors="replace")
    figures = sorted(p.name for p in (tiny_dag.run / "report" / "figures").glob("*.png"))
    assert figures and all(name in text for name in figures)


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
def test_interrupted_training_resumes_with_rerun_incomplete(tiny_dag):
    workdir = tiny_dag.workdir
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


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
def test_changed_training_setting_retrains_from_scratch(tiny_dag):
    workdir = tiny_dag.workdir
    run = workdir / "results" / "tiny"
    assert (run / "checkpoints" / "train_rm" / "latest").is_file()
    snakemake(
        workdir, "--cores", "2", "train_rm", *config_arg(overrides=["rm.lr=0.002"]), timeout=600
    )
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] is None  # not the old config's checkpoint
    assert (run / "checkpoints" / "train_rm.stale" / "latest").is_file()
