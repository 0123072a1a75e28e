"""The real tiny DAG on CPU (`snakemake --cores 2 all`, as `make run`), for the `tiny` preset and
for `tiny-llama3-vocab` (the real Llama 3 tokenizer and vocabulary): every stage's output and
identity, the same files as the reference commit's code (a move of code changes no result), the
exported folder read with transformers 4.51.0 / 4.57.6, Snakemake's --report. On
`tiny`, what happens after a finished run (in file order, on one run folder): a forced rerun
trains from update 0, a killed Snakemake leaves no orphan trainer and the rerun resumes bitwise,
an upstream override restarts PPO against the new reward model, and an eval-only override gets
its own MLflow run. Several minutes: marked slow."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from run_outputs import differences

from paper_repro.config import STAGES, config_hash, load_config
from paper_repro.provenance.paths import RunPaths
from paper_repro.reporting.tables import parse_markdown_table, rows_where

from .smk import ROOT, SNAKEMAKE, config_arg, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
RM_LR = "rm.lr=0.002"


def read(path: Path):
    return json.loads(path.read_text())


@dataclass
class Dag:
    workdir: Path
    preset: str
    output: str
    fresh_weights: bytes = b""  # train_rm/final.safetensors of the first, uninterrupted run

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
    dag.fresh_weights = (dag.run / "train_rm" / "final.safetensors").read_bytes()
    return dag


def test_all_ends_with_the_report_path(tiny_dag):
    report = tiny_dag.run / "report" / "report.md"
    assert report.is_file()
    assert f"Report of run '{tiny_dag.preset}': {report}" in tiny_dag.output
    for stage in ("download_base", "train_rm", "eval_rewardbench", "ppo", "report"):
        assert (tiny_dag.run / "benchmarks" / f"{stage}.tsv").is_file()
    prov = read(tiny_dag.run / "report" / "provenance.json")
    assert set(prov["stage_identities"]) == set(STAGES) - {"report"}
    for stage in STAGES:
        assert read(tiny_dag.run / stage / "identity.json")["stage"] == stage
    assert "Nothing to be done" in tiny_dag.snakemake("-n", "all").stdout


def test_every_stage_output(tiny_dag):
    """What each stage wrote, checked against the preset: the tokenizer and vocabulary the data
    was made with, the kept pairs and update count, the verified export (a clean folder: no
    Snakemake marker, no local path), the RewardBench pairs, the PPO steps, the report."""
    from paper_repro.config import derived, load_config
    from paper_repro.provenance.manifest import verify_manifest
    from paper_repro.provenance.paths import RunPaths

    cfg, paths = load_config(tiny_dag.preset), RunPaths(tiny_dag.run)
    llama3 = cfg.model.tiny.tokenizer == "llama3"
    verify_manifest(paths.base_model, paths.base_manifest)
    fp = read(paths.fingerprint)
    ids = (fp["bos_token_id"], fp["eos_token_id"], fp["pad_token_id"], fp["vocab_size"])
    assert ids == ((128000, 128001, 128255, 128256) if llama3 else (0, 1, 511, 512))
    data = read(paths.data_report)
    kept = data["train"]["kept"]
    assert kept + data["preference"]["dropped"] == data["preference"]["total"] == 3888
    if llama3:  # max_length 64 counted in Llama 3 tokens drops the longest fixture pairs
        assert data["preference"]["dropped_by_reason"]["too_long"] > 0
    summary = read(paths.train_summary)
    assert summary["updates"] == derived(cfg, kept).est_updates
    ver = read(paths.export_verification)
    assert ver["passed"] and ver["vocab_size"] == fp["vocab_size"]
    files = sorted(p.name for p in paths.rm_model.iterdir())
    # the card (README.md) is rewritten by eval_rewardbench, so verification leaves it out
    assert files == sorted([*ver["files"], "README.md"])
    assert not [f for f in files if f.startswith(".")]
    verify_manifest(paths.rm_model, paths.manifest("export_rm"))
    assert str(tiny_dag.workdir) not in (paths.rm_model / "README.md").read_text()
    scores = read(paths.eval_scores)
    assert scores["n_pairs"] == data["rewardbench"]["kept"] > 0
    assert read(paths.ppo_summary)["steps"] == cfg.ppo.max_steps
    verify_manifest(paths.stage_dir("ppo"), paths.manifest("ppo"))
    assert not [
        f for f in paths.ppo_policy.iterdir() if f.name.startswith(".")
    ]  # a clean HF folder
    assert paths.report_md.is_file() and paths.report_provenance.is_file()
    # the DAG ends with the downstream table: five rows on the tiny task, numbers from lm-eval
    down = read(paths.downstream_results)
    assert set(down["models"]) == {"sft", "sft_sample", "ppo", "bon_ours", "bon_published"}
    assert {(d["a"], d["b"]) for d in down["deltas"]} >= {("bon_ours", "sft_sample")}
    assert all(m["tiny_arithmetic"]["docs"] == 100 for m in down["models"].values())
    assert down["not_run"]["AlpacaEval 2"] == "not run: no judge configured"
    verify_manifest(paths.stage_dir("eval_downstream"), paths.manifest("eval_downstream"))
    md = paths.report_md.read_text()
    assert "## Downstream evaluation" in md and "| Arithmetic (tiny) (0-shot) | SFT |" in md
    assert "## Downstream" in (paths.rm_model / "README.md").read_text()


# The last commit that changed an output of the tiny DAG on purpose (the report's prose refers to
# the downstream table). A change meant to change results (new fixtures, a fixed bug, new report
# text) moves this to that change's own commit, once its outputs are reviewed.
REFERENCE_COMMIT = "a363b9308cf9d6b4931d0e50a7c6f0dccc4ea04f"


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
def test_same_outputs_as_the_reference_commit(tiny_dag, tmp_path):
    """Moving code changes no result: the tiny DAG of the reference commit's code and this
    checkout's write the same files with the same contents (timings, dates, code versions and
    the run folder's path aside; tests/run_outputs.py). Runs before any test here edits the run."""
    code = tmp_path / "code"
    code.mkdir()
    tree = ("Snakefile", "workflow", "config", "paper_repro", "environment.yml", "llama_3_license.txt",
            "NOTICE", "CITATION.bib")  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", REFERENCE_COMMIT, *tree],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    reference = Dag(tmp_path / "work", "tiny", "")
    snakemake(reference.workdir, "--cores", "2", "all", *config_arg(preset="tiny"), root=code,
              timeout=1800)  # fmt: skip
    assert differences(reference.run, tiny_dag.run) == []


def test_export_reads_the_same_in_transformers_4x(tiny_dag):
    """The exported folder with transformers 4.51.0 (reward-bench 0.1.4) and 4.57.6 (reward-bench
    main) in side environments: same tokenizer behaviour and fp32 rewards within 1e-5 of this
    environment's on the export's verification pairs; recorded in export_rm/crosscheck.json."""
    from paper_repro.export.crosscheck import crosscheck
    from paper_repro.provenance.paths import RunPaths

    paths = RunPaths(tiny_dag.run)
    # reward-bench's CLI on the Llama 3 vocabulary export (the released model's tokenizer); the
    # tiny tokenizer's export meets it in test_export_rm.py, with its breakages.
    cli = tiny_dag.preset == "tiny-llama3-vocab"
    record = crosscheck(paths, ["4.51.0", "4.57.6"], rewardbench=cli)
    if cli:
        rb = record["rewardbench_cli"]
        print(f"\n{tiny_dag.preset}: reward-bench CLI vs ours: {rb}")
        assert rb["passed"] and rb["reward_max_abs_diff"] <= 1e-4, rb
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


def log(workdir: Path, stage: str) -> str:
    return (workdir / "results" / "tiny" / "logs" / f"{stage}.log").read_text()


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
def test_forcerun_of_a_finished_stage_trains_from_update_0(tiny_dag):
    """`--forcerun train_rm` reran only the last updates before (the completed run's
    checkpoint): now update 0, and bitwise the fresh run's weights."""
    workdir = tiny_dag.workdir
    run = workdir / "results" / "tiny"
    # the target before --forcerun, which takes every name after it (and would target `all`)
    snakemake(workdir, "--cores", "2", "train_rm", "--forcerun", "train_rm", timeout=900)
    text = log(workdir, "train_rm")
    assert "belong to a run that completed" in text and "resumed from" not in text
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] is None
    assert len((run / "train_rm" / "metrics.jsonl").read_text().splitlines()) == 484
    assert (run / "train_rm" / "final.safetensors").read_bytes() == tiny_dag.fresh_weights
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


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
@pytest.mark.hardening(
    "3", "Snakemake SIGKILLed mid-training: no orphan trainer, the rerun resumes"
)
def test_killed_snakemake_leaves_no_orphan_and_the_rerun_resumes_bitwise(tiny_dag):
    """SIGKILL of Snakemake alone (not its process group) at a random moment after the first
    checkpoint: the trainer, its direct child, gets SIGTERM from the kernel, checkpoints and
    exits; the lock is free; `--rerun-incomplete` resumes and ends bitwise equal to a fresh run."""
    workdir = tiny_dag.workdir
    run = workdir / "results" / "tiny"
    ckpt = run / "checkpoints" / "train_rm"
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(ROOT / "config/config.yaml"), "--cores", "2",
           "train_rm", "--forcerun", "train_rm"]  # fmt: skip
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
    # the stage removed its manifest first: nothing vouches for the finished run's files any more
    assert not (run / "train_rm" / "manifest.json").exists()

    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete", "train_rm", timeout=900)
    summary = json.loads((run / "train_rm" / "summary.json").read_text())
    assert summary["resumed_from_update"] == saved > 0
    assert (run / "train_rm" / "final.safetensors").read_bytes() == tiny_dag.fresh_weights


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
def test_upstream_override_restarts_ppo_against_the_new_reward_model(tiny_dag, tmp_path):
    """Before: `rm.lr=...` retrained the RM but PPO resumed its old checkpoint (a policy trained
    against the old RM finished against the new one; the report's pre-PPO reward was the old
    RM's). Now PPO starts at step 0 and equals a fresh PPO run on the new reward model."""
    workdir = tiny_dag.workdir
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
    rows = parse_markdown_table(
        re.split(r"\*\*Table \d+: PPO with the trained reward model", md, maxsplit=1)[1]
    )
    assert rows_where(rows, Quantity="held-out reward before PPO")["Value"] == (
        f"{want['eval_reward_before']:.4f}"
    )


@pytest.mark.parametrize("tiny_dag", ["tiny"], indirect=True)
def test_eval_only_override_gets_its_own_mlflow_run(tiny_dag):
    """Before: the eval run kept bootstrap_samples 200 and the old config_hash after a 300
    override, and a second attempt appended to the first one's history."""
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import recorded_run_ids

    workdir = tiny_dag.workdir
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
