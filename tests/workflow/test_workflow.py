"""The Snakemake workflow without running stages: lint, dry runs of every preset, the Slurm
submission a 70B job turns into, and the precise rerun triggers of the per-stage config files."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from paper_repro.config import STAGES, list_presets, load_config

from .smk import (
    ROOT,
    SNAKEMAKE,
    config_arg,
    job_resources,
    job_shell,
    planned_jobs,
    repo_copy,
    snakemake,
)


def test_stage_rules_cover_every_stage():
    for stage in STAGES:
        text = (ROOT / "workflow" / "rules" / f"{stage}.smk").read_text()
        assert f"rule {stage}:" in text
        assert "run:" not in text  # thin shell calls only
        for directive in ("log:", "benchmark:", "resources:", "shell:"):
            assert directive in text, f"{stage}.smk lacks {directive}"


def test_lint_is_clean():
    import subprocess

    proc = subprocess.run(
        [str(SNAKEMAKE), "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


# tiny and the 70B preset in the default suite, the other presets in the slow one (~3 s each)
@pytest.mark.parametrize(
    "preset",
    [p if p in ("tiny", "llama3-70b-uf") else pytest.param(p, marks=pytest.mark.slow)
     for p in list_presets()],
)  # fmt: skip
def test_dry_run_of_all_for_every_preset(tmp_path, preset):
    out = snakemake(tmp_path, "-n", "all", *config_arg(preset=preset)).stdout
    jobs = planned_jobs(out)
    assert all(jobs.get(stage) == 1 for stage in STAGES), jobs
    assert jobs["stage_config"] == len(STAGES)
    # Every stage reads its own config file in results/<preset>/config/.
    assert f"paper-repro eval-rewardbench results/{preset}/config/eval_rewardbench.yaml" in out


def test_70b_dry_run_shows_cluster_resources(tmp_path):
    cfg = load_config("llama3-70b-uf")
    out = snakemake(
        tmp_path, "-n", "all", *config_arg(preset="llama3-70b-uf", gpu_type="h100")
    ).stdout
    train = job_resources(out, "train_rm")
    r = cfg.resources.train_rm
    assert r.nodes == 4 and r.gpus_per_node == 8  # the preset this test is about
    assert train["nodes"] == "4"
    assert train["gres"] == "gpu:h100:8"  # per node
    assert train["tasks"] == "4"  # one launcher per node
    assert train["procs_per_launcher"] == "8"  # one rank per GPU
    assert train["tasks_per_gpu"] == "0"  # no --ntasks-per-gpu (N GPUs != N copies)
    assert train["mpi"] == "srun"
    assert train["runtime"] == str(r.runtime_min)
    assert train["mem_mb"] == str(r.mem_gb * 1024)
    assert train["cpus_per_task"] == str(r.cpus_per_rank * 8)
    assert train["slurm_extra"] == "--signal=USR1@900"
    assert "launch.sh --launchers 4 --procs 8 -- paper-repro train-rm" in job_shell(out, "train_rm")
    ppo = job_resources(out, "ppo")
    assert (ppo["nodes"], ppo["gres"], ppo["tasks"]) == ("4", "gpu:h100:8", "4")
    ev = job_resources(out, "eval_rewardbench")
    assert ev["gres"] == "gpu:h100:4" and "mpi" not in ev


def _fake_job(resources: dict[str, str]):
    """A job object as the Slurm plugin's submit functions read it."""

    class Resources(dict):
        __getattr__ = dict.__getitem__

    values = {k: int(v) if v.isdigit() else v for k, v in resources.items()}
    return SimpleNamespace(resources=Resources(values), threads=1, name="train_rm")


@pytest.mark.parametrize(
    "preset, nodes, tasks", [("llama3-70b-uf", 4, 4), ("llama3-8b-uf", 1, None)]
)
def test_sbatch_of_a_gpu_training_job(tmp_path, preset, nodes, tasks):
    """The pinned plugin's own sbatch builder on our resources: one task per node seeing all 8
    GPUs of the node, never `--ntasks-per-gpu`."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    out = snakemake(tmp_path, "-n", "train_rm", *config_arg(preset=preset)).stdout
    job = _fake_job(job_resources(out, "train_rm"))
    params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "",
              "partition": "", "workdir": str(tmp_path)}  # fmt: skip
    call = get_submit_command(job, params) + set_gres_string(job)
    assert "--ntasks-per-gpu" not in call
    assert " --gres=gpu:8" in call
    assert f"--nodes={nodes}" in call
    if tasks:
        assert f"--ntasks={tasks}" in call
    else:
        assert "--ntasks" not in call  # one task: the launcher (torchrun) starts the 8 ranks
    assert "--cpus-per-task=64" in call
    assert "--signal=USR1@900" in call


def test_bad_config_is_rejected_with_the_key(tmp_path):
    proc = snakemake(tmp_path, "-n", "all", "--config", "presett=tiny", check=False)
    assert proc.returncode != 0 and "presett" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, "-n", "all", *config_arg(overrides=["rm.lrr=1"]), check=False)
    assert proc.returncode != 0 and "rm.lrr" in proc.stdout + proc.stderr


def _complete_run_without_stages(workdir, root=ROOT):
    """Real per-stage config files (stage_config jobs run), stage outputs faked and marked up to
    date with --touch: the state after a finished run, in seconds."""
    targets = [f"results/tiny/config/{stage}.yaml" for stage in STAGES]
    snakemake(workdir, "--cores", "2", *targets, root=root)
    out = snakemake(workdir, "-n", "all", root=root).stdout
    for line in out.splitlines():
        if line.startswith("    output: "):
            for name in line.removeprefix("    output: ").split(", "):
                path = workdir / name
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                else:  # the report's directory() output figures/
                    path.mkdir(parents=True, exist_ok=True)
    snakemake(workdir, "--cores", "1", "--touch", "all", root=root)
    assert "Nothing to be done" in snakemake(workdir, "-n", "all", root=root).stdout


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    _complete_run_without_stages(workdir)
    return workdir


def test_eval_only_change_reruns_eval_and_report_not_training(finished_run):
    out = snakemake(
        finished_run, "-n", "all", *config_arg(overrides=["eval.bootstrap_samples=123"])
    ).stdout
    jobs = planned_jobs(out)
    # eval_reference evaluates with the same eval settings, so it reruns too
    assert jobs == {
        "stage_config": 3,
        "eval_rewardbench": 1,
        "eval_reference": 1,
        "report": 1,
        "all": 1,
    }
    assert "results/tiny/config/eval_rewardbench.yaml" in out
    assert "results/tiny/config/train_rm.yaml" not in out


def test_rm_change_reruns_training_and_everything_after(finished_run):
    jobs = planned_jobs(
        snakemake(finished_run, "-n", "all", *config_arg(overrides=["rm.lr=0.002"])).stdout
    )
    assert {"train_rm", "export_rm", "eval_rewardbench", "ppo", "report"} <= set(jobs)
    assert not {"download_base", "download_data", "prepare_data"} & set(jobs)
    assert "eval_reference" in jobs  # the tiny stand-in is trained with the rm recipe


def test_tracking_uri_and_other_stages_resources_rerun_nothing(finished_run):
    out = snakemake(
        finished_run, "-n", "all", *config_arg(tracking_uri="http://127.0.0.1:1")
    ).stdout
    assert "Nothing to be done" in out
    # A stage's own resources (its world size) are part of its trigger; nobody else's.
    jobs = planned_jobs(snakemake(
        finished_run, "-n", "all", *config_arg(overrides=["resources.ppo.mem_gb=2"])).stdout)  # fmt: skip
    assert jobs == {"stage_config": 1, "ppo": 1, "eval_downstream": 1, "report": 1, "all": 1}


def test_downstream_change_reruns_only_eval_downstream_and_report(finished_run):
    """A new task (or any downstream.* setting) reruns the downstream stage, never a model."""
    out = snakemake(finished_run, "-n", "all", *config_arg(overrides=["downstream.bon.n=2"])).stdout
    assert planned_jobs(out) == {"stage_config": 1, "eval_downstream": 1, "report": 1, "all": 1}
    assert "results/tiny/config/eval_downstream.yaml" in out
    # another published RM: it is re-scored and selects again
    jobs = planned_jobs(snakemake(
        finished_run, "-n", "all", *config_arg(overrides=["reference.standin_seed=5"])).stdout)  # fmt: skip
    assert {"eval_reference", "eval_downstream", "report"} == set(jobs) - {"stage_config", "all"}


def test_settings_that_change_no_result_rerun_nothing(finished_run):
    overrides = ["rm.checkpoint_every=3", "export.verify_pairs=5", "ppo.checkpoint_every=2"]
    out = snakemake(finished_run, "-n", "all", *config_arg(overrides=overrides)).stdout
    assert "Nothing to be done" in out
    # a new max_length refilters the data; it does not download it again
    jobs = planned_jobs(
        snakemake(finished_run, "-n", "all", *config_arg(overrides=["data.max_length=200"])).stdout
    )
    assert "prepare_data" in jobs and "download_data" not in jobs


@pytest.fixture(scope="module")
def editable_run(tmp_path_factory):
    """A finished run of a copy of the repository whose code the tests below edit."""
    root = repo_copy(tmp_path_factory.mktemp("repo"))
    workdir = tmp_path_factory.mktemp("finished-copy")
    _complete_run_without_stages(workdir, root)
    return root, workdir


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow  # a copy of the repository and a finished run of it (~30 s), then ~4 s an edit
@pytest.mark.parametrize(
    "module, old, new, expect",
    [
        # a stage's own module: that stage and everything downstream of it
        ("stages/eval_rewardbench.py", 'STAGE = "eval_rewardbench"',
         'STAGE = "eval_rewardbench"\nX = 1', {"eval_rewardbench", "report"}),
        # the training loop: train_rm, the tiny reference stand-in trained with it, and after
        ("training/engine.py", "from .schedule import LRSchedule",
         "from .schedule import LRSchedule\nX = 1",
         {"train_rm", "export_rm", "eval_rewardbench", "eval_reference", "ppo", "eval_downstream",
          "report"}),
        # report code: only the report
        ("reporting/tables.py", "from __future__ import annotations",
         "from __future__ import annotations\nX = 1", {"report"}),
        # a docstring or a comment: nothing
        ("stages/ppo.py", '"""ppo: train a policy', '"""ppo (edited docstring): train a policy', set()),
        ("training/batching.py", "from __future__ import annotations",
         "from __future__ import annotations  # a new comment", set()),
    ],
)  # fmt: skip
def test_code_edit_reruns_exactly_the_stages_that_run_it(editable_run, module, old, new, expect):
    root, workdir = editable_run
    path = root / "paper_repro" / module
    original = path.read_text()
    _edit(path, old, new)
    try:
        out = snakemake(workdir, "-n", "all", root=root).stdout
    finally:
        path.write_text(original)
    jobs = set(planned_jobs(out)) - {"stage_config", "all"} if expect else set()
    if expect:
        assert jobs == expect, out
        assert "Params have changed since last execution" in out  # the code version param
    else:
        assert "Nothing to be done" in out, out
    assert "Nothing to be done" in snakemake(workdir, "-n", "all", root=root).stdout


def test_stage_config_file_is_the_full_resolved_config(finished_run):
    from paper_repro.config import stage_hash, to_dict

    cfg = load_config(finished_run / "results/tiny/config/eval_rewardbench.yaml")
    assert to_dict(cfg) == to_dict(load_config("tiny"))
    assert stage_hash(cfg, "train_rm") == stage_hash(load_config("tiny"), "train_rm")


def test_checkpoints_and_tracking_are_never_outputs(tmp_path):
    out = snakemake(tmp_path, "-n", "all").stdout
    outputs = [ln for ln in out.splitlines() if ln.startswith("    output: ")]
    assert outputs and not any("checkpoints" in ln or "/tracking" in ln for ln in outputs)


@pytest.mark.hardening("3", "a failed or refused stage job: Snakemake may remove only its records")
def test_stage_jobs_declare_only_their_manifest_and_identity(tmp_path):
    """Snakemake removes the declared outputs of a failed job, also of one refused by the stage
    lock while another process runs the stage: only the two records the running stage removed
    itself when it started, never its data."""
    out = snakemake(tmp_path, "-n", "all").stdout
    seen = set()
    for block in re.split(r"^rule ", out, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        if rule in STAGES and rule != "report":
            outputs = re.search(r"^    output: (.*)$", block, re.M)[1].split(", ")
            want = [f"results/tiny/{rule}/{n}" for n in ("identity.json", "manifest.json")]
            assert sorted(outputs) == want, rule
            seen.add(rule)
    assert seen == set(STAGES) - {"report"}


def test_slurm_profile_without_slurm_stops_with_one_line_before_submitting(tmp_path):
    """`snakemake --profile slurm all` where sbatch/squeue are not on PATH: exit 1 with one line
    naming them, no job submitted, no lock left behind."""
    import shutil
    import subprocess

    tools = tmp_path / "bin"  # the basics Snakemake calls, and no Slurm command
    tools.mkdir()
    for name in ("which", "bash", "sh", "env", "uname", "git"):
        if found := shutil.which(name):
            (tools / name).symlink_to(found)
    work = tmp_path / "work"
    cmd = [str(SNAKEMAKE), "all", "--profile", "slurm", "-d", str(work),
           "--configfile", str(ROOT / "config" / "config.yaml")]  # fmt: skip
    proc = subprocess.run(
        cmd,
        cwd=ROOT,  # the bare profile name is looked up here
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{SNAKEMAKE.parent}:{tools}", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("--executor slurm (profile slurm): sbatch, squeue, scontrol not found")
    assert "Traceback" not in proc.stderr and "sacct" not in proc.stderr
    assert not (work / "results").exists() and not (work / ".snakemake" / "locks").exists()
