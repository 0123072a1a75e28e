# Shared by every rule: the resolved config, the run's paths and per-stage resources.
#
# File names come from paper_repro.provenance.paths.RunPaths (spelled once, shared with the stages); the
# config schema and per-stage sections from paper_repro.config. Nothing here runs a stage.

import shlex
import sys
from pathlib import Path

from paper_repro.provenance.codeversion import code_version
from paper_repro.config import STAGES, ConfigError, load_config, stage_hash, to_dict
from paper_repro.provenance.paths import RUN_NAME as RUN_NAME_PATTERN
from paper_repro.provenance.paths import RunPaths
from paper_repro.stages import UPSTREAM, reads

# Every shell command starts with this prefix (also inside Slurm jobs, where this file is parsed
# again): `paper-repro` and `torchrun` come from the Python that runs Snakemake (the project's
# .venv), and MLflow's URI from config/config.yaml. An environment variable, not a config override,
# so that pointing at a tracking server never changes a stage hash or reruns a job; the stages read
# MLFLOW_TRACKING_URI when the config names no URI.
PREFIX = f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"; '

try:
    CFG = load_config(config["preset"], list(config["overrides"]))
except ConfigError as exc:
    raise WorkflowError(
        f"config/config.yaml: preset '{config['preset']}' with overrides "
        f"{list(config['overrides'])}: {exc}"
    ) from None

RUN_NAME = config["run"] or Path(CFG.preset).stem
if not RUN_NAME_PATTERN.fullmatch(RUN_NAME):
    raise WorkflowError(f"run name {RUN_NAME!r} must match {RUN_NAME_PATTERN.pattern}")
RUN = RunPaths(Path("results") / RUN_NAME)

if config["tracking_uri"]:
    PREFIX += f"export MLFLOW_TRACKING_URI={shlex.quote(config['tracking_uri'])}; "
# The preset and overrides reach the stage_config jobs as shell variables, not params; the params
# trigger must see only the stage hash, or any override would rewrite every stage's config.
PREFIX += f"repro_preset={shlex.quote(str(config['preset']))}; "
PREFIX += f"repro_overrides=({shlex.join(str(o) for o in config['overrides'])}); "
shell.prefix(PREFIX)

# The code version of every stage (paper_repro/provenance/codeversion.py: an AST hash of the package modules
# the stage imports, docstrings and comments left out; ~0.3 s for all stages). It is part of what a
# stage's config job depends on (stage_config_params), so Snakemake's params trigger reruns a stage
# whose code changed, and everything downstream; a docstring, comment or test edit reruns nothing,
# a report-only edit only `report`.
CODE = {stage: code_version(stage) for stage in STAGES}

# Absolute, so that the workflow also runs with another working directory (--directory).
LAUNCHER = Path(workflow.basedir) / "workflow" / "scripts" / "launch.sh"

# The stages whose ranks are started by workflow/scripts/launch.sh (torchrun, one launcher per node).
DISTRIBUTED = ("train_rm", "ppo")


def stage_outputs(stage):
    """The only outputs a stage job declares: its manifest (written last, listing every file the
    stage made) and its identity. Snakemake removes the declared outputs of a failed job, also of
    one the stage lock refused while another process runs the stage: it can then delete nothing
    but these two records, never the running holder's data (metrics.jsonl, weights). Consumers
    depend on the manifest, which pins every file they read."""
    return {"manifest": RUN.manifest(stage), "identity": RUN.identity(stage)}


def upstream_manifests(stage, upstream=None):
    """The manifests a stage verifies before reading (paper_repro.provenance.integrity.verify_inputs; by
    default for every stage in UPSTREAM[stage]): inputs, so that the stage reruns when one
    changes and a manifest moved to quarantine makes Snakemake rebuild its stage."""
    return [RUN.manifest(up) for up in upstream or UPSTREAM[stage]]


def stage_resources(stage):
    """Snakemake resources of a stage's job from the preset's resources.<stage> section.

    Cluster jobs get: nodes, memory per node, runtime, CPUs per task, GPUs per node as
    `gres=gpu[:type]:N` (per node) and `tasks`. Two traps of the Slurm executor plugin are avoided
    (snakemake-executor-plugin-slurm 1.x): a GPU job with `tasks` gets `--ntasks-per-gpu=<tasks>` (N GPUs
    become N one-GPU copies) unless `tasks_per_gpu=0`; and a rule without the `mpi` resource runs
    inside the executor's `srun -n1` step, where Slurm's --signal would also hit the Snakemake
    process of the job. So distributed stages always carry `mpi`: "srun" for several launchers,
    "" (no MPI task checks in the plugin) for one; launch.sh then starts its own step.
    """
    r = getattr(CFG.resources, stage)
    if stage in DISTRIBUTED:
        # GPU nodes: one launcher per node with one rank per GPU. CPU: one launcher per rank, so
        # Slurm gives every rank its own cpus_per_rank cores.
        launchers = r.nodes if r.gpus_per_node else r.world_size
    else:
        launchers = 1
    procs = r.world_size // launchers if stage in DISTRIBUTED else 1
    res = {
        "nodes": r.nodes,
        "tasks": launchers,
        "cpus_per_task": r.cpus_per_rank * procs,
        "mem_mb": r.mem_gb * 1024,
        "runtime": r.runtime_min,
        "procs_per_launcher": procs,
    }
    if r.gpus_per_node:
        gpu_type = f"{config['gpu_type']}:" if config["gpu_type"] else ""
        res.update(gres=f"gpu:{gpu_type}{r.gpus_per_node}", tasks_per_gpu=0)
    if stage in DISTRIBUTED:
        res["mpi"] = "srun" if launchers > 1 else ""
        res["slurm_extra"] = f"--signal=USR1@{signal_seconds(r.runtime_min)}"
    return res


def signal_seconds(runtime_min):
    """Seconds before the time limit at which Slurm sends USR1 (the trainer checkpoints and
    exits): 5% of the limit, at least 2 and at most 15 minutes (a 70B ZeRO-3 save takes minutes)."""
    return max(120, min(900, runtime_min * 60 // 20))


def stage_threads(stage):
    """Local scheduling weight (Snakemake caps it at --cores)."""
    res = stage_resources(stage)
    return res["cpus_per_task"] * res["tasks"]


def stage_config_params(stage):
    """What a stage's config file, and so the stage, depends on: the config sections the stage
    reads (STAGE_SECTIONS) less the keys that change none of its results (IDENTITY_NEUTRAL:
    checkpoint cadence, verification sizes, estimates), its own resources (world size) and its
    code version. A change elsewhere leaves the file, and the stage, alone."""
    return {
        "hash": stage_hash(CFG, stage),
        "resources": to_dict(getattr(CFG.resources, stage)),
        "code": CODE[stage],
    }


def stage_shell(stage):
    """The shell command of a stage job: `paper-repro <stage> <its config> --run-dir <run>`,
    through the per-node launcher for distributed stages, output to the job's log. `exec`: the
    stage (or its launcher) replaces the job's shell, so its parent is Snakemake itself and it
    dies with it (paper_repro/provenance/lock.py die_with_parent): no orphan trainer after a killed
    Snakemake."""
    command = f"paper-repro {stage.replace('_', '-')} {{input.config:q}} --run-dir {{params.run_dir:q}}"
    if stage in DISTRIBUTED:
        launcher = f"bash {shlex.quote(str(LAUNCHER))}"
        command = f"{launcher} --launchers {{resources.tasks}} --procs {{resources.procs_per_launcher}} -- {command}"
    return f"exec {command} > {{log:q}} 2>&1"


def eval_reference_inputs(wildcards):
    """The configured reference's inputs: the manifests of what it reads (download_data's raw
    RewardBench pairs, plus download_base and prepare_data for the tiny stand-in)."""
    return {
        "config": RUN.stage_config("eval_reference"),
        "manifests": upstream_manifests("eval_reference", reads("eval_reference", CFG)),
    }


# Commands the Slurm executor plugin runs: without them it would fail at submission and retry
# status checks (sacct, squeue) over and over. Checked before anything is submitted.
SLURM_COMMANDS = ("sbatch", "squeue", "scontrol")


def check_slurm_commands(executor):
    """One line and a stop when the Slurm executor is chosen on a machine without Slurm."""
    import shutil

    if executor != "slurm":
        return
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        print(
            f"--executor slurm (profile slurm): {', '.join(missing)} not found on PATH; run on "
            "a Slurm login node, or drop --profile slurm to run locally (--cores N)",
            file=sys.stderr,
        )
        sys.exit(1)


# Used with `--sdm conda` only (e.g. a cluster without the .venv); relative to workflow/rules/.
CONDA_ENV = "../../environment.yml"
