"""The results layout of one pipeline run: the single source of truth for file names.

The Snakemake rules (workflow/rules/common.smk) import this module, so a path is spelled once.
Checkpoints live in ``checkpoints/<stage>/``, which is never a Snakemake output: a rerun after a
preemption finds them and resumes (Snakemake deletes declared outputs before rerunning a job).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# The name of a run folder (results/<run>/): one path component, no "..", no spaces. The same
# pattern guards `run` in workflow/schemas/config.schema.yaml (a test keeps them equal).
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cache_root() -> Path:
    """Per-user cache of things built once and reused by every run (the Llama 3 tokenizer, the
    side environments of the export cross-check): ``$PAPER_REPRO_CACHE``, else
    ``$XDG_CACHE_HOME/paper-repro``, else ``~/.cache/paper-repro``."""
    if root := os.environ.get("PAPER_REPRO_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paper-repro"


@dataclass(frozen=True)
class EvalFiles:
    """What one RewardBench evaluation writes (the stages eval_rewardbench and eval_reference, and
    ``paper-repro eval-rewardbench --model``): the same five files in one folder."""

    folder: Path

    @property
    def pairs(self) -> Path:
        """Per-pair rewards: id, subset, reward_chosen, reward_rejected, correct."""
        return self.folder / "pairs.parquet"

    @property
    def scores(self) -> Path:
        return self.folder / "scores.json"

    @property
    def comparison(self) -> Path:
        return self.folder / "comparison.json"

    @property
    def comparison_md(self) -> Path:
        return self.folder / "comparison.md"

    @property
    def leaderboard(self) -> Path:
        """Flat per-subset accuracies in reward-bench's results layout (submit as is)."""
        return self.folder / "leaderboard.json"

    def all(self) -> tuple[Path, ...]:
        return (self.pairs, self.scores, self.comparison, self.comparison_md, self.leaderboard)


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # config ---------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def stage_config(self, stage: str) -> Path:
        return self.root / "config" / f"{stage}.yaml"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def manifest(self, stage: str) -> Path:
        """``<stage>/manifest.json``: sha256 of the files a stage produced (``paper_repro.provenance.manifest``)."""
        return self.root / stage / "manifest.json"

    def identity(self, stage: str) -> Path:
        """``<stage>/identity.json``: what produced the stage's files (``paper_repro.provenance.identity``)."""
        return self.root / stage / "identity.json"

    def log(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.log"

    def benchmark(self, stage: str) -> Path:
        return self.root / "benchmarks" / f"{stage}.tsv"

    # download_base -----------------------------------------------------------
    @property
    def base_model(self) -> Path:
        return self.root / "download_base" / "model"

    @property
    def base_manifest(self) -> Path:
        return self.manifest("download_base")

    # download_data -----------------------------------------------------------
    def raw_data(self, name: str) -> Path:
        """name: preference | rewardbench | ppo_prompts (upstream schema, jsonl)."""
        return self.root / "download_data" / f"{name}.jsonl"

    @property
    def data_manifest(self) -> Path:
        return self.manifest("download_data")

    # prepare_data ------------------------------------------------------------
    def prepared(self, name: str) -> Path:
        """name: train | heldout | rewardbench | ppo_prompts (tokenized parquet)."""
        return self.root / "prepare_data" / f"{name}.parquet"

    @property
    def fingerprint(self) -> Path:
        return self.root / "prepare_data" / "fingerprint.json"

    @property
    def data_report(self) -> Path:
        return self.root / "prepare_data" / "data_report.json"

    # train_rm / export_rm -------------------------------------------------------
    @property
    def train_metrics(self) -> Path:
        return self.root / "train_rm" / "metrics.jsonl"

    @property
    def train_summary(self) -> Path:
        return self.root / "train_rm" / "summary.json"

    @property
    def trained_state(self) -> Path:
        """Final consolidated fp32 weights of the trained RM (safetensors)."""
        return self.root / "train_rm" / "final.safetensors"

    @property
    def rm_model(self) -> Path:
        return self.root / "export_rm" / "model"

    @property
    def export_verification(self) -> Path:
        return self.root / "export_rm" / "verification.json"

    @property
    def export_crosscheck(self) -> Path:
        """The folder read with other transformers versions (``export.crosscheck``; on demand)."""
        return self.root / "export_rm" / "crosscheck.json"

    # eval_rewardbench ------------------------------------------------------------

    # eval_rewardbench / eval_reference -------------------------------------------------
    def eval_files(self, stage: str = "eval_rewardbench") -> EvalFiles:
        return EvalFiles(self.stage_dir(stage))

    @property
    def eval_pairs(self) -> Path:
        return self.eval_files().pairs

    @property
    def eval_scores(self) -> Path:
        return self.eval_files().scores

    @property
    def eval_comparison(self) -> Path:
        return self.eval_files().comparison

    @property
    def reference_model(self) -> Path:
        """The published RM (linked from the hub cache) or the tiny stand-in that eval_reference
        scores; kept across reruns like checkpoints, never a rule output."""
        return self.root / "reference_model" / "model"

    @property
    def reference_model_manifest(self) -> Path:
        return self.root / "reference_model" / "manifest.json"

    # ppo ---------------------------------------------------------------------
    @property
    def ppo_metrics(self) -> Path:
        return self.root / "ppo" / "metrics.jsonl"

    @property
    def ppo_summary(self) -> Path:
        return self.root / "ppo" / "summary.json"

    @property
    def ppo_policy(self) -> Path:
        return self.root / "ppo" / "policy"

    @property
    def ppo_policy_base(self) -> Path:
        """The PPO policy's own SFT checkpoint when ``ppo.policy_hub_id`` differs from the RM's
        base (verified download, kept across reruns like checkpoints; never a rule output)."""
        return self.root / "ppo_policy_base" / "model"

    @property
    def ppo_policy_base_manifest(self) -> Path:
        return self.root / "ppo_policy_base" / "manifest.json"

    # eval_downstream -----------------------------------------------------------
    @property
    def downstream_results(self) -> Path:
        """Per task x model metrics, CIs, paired deltas, tasks not run, settings."""
        return self.root / "eval_downstream" / "results.json"

    @property
    def downstream_data(self) -> Path:
        """Pinned, verified task data and the lm-eval task overrides pointing at it; kept across
        reruns like checkpoints, never a rule output."""
        return self.root / "downstream_data"

    # report ------------------------------------------------------------------
    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report_md(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def report_tex(self) -> Path:
        return self.report_dir / "report.tex"

    @property
    def report_bib(self) -> Path:
        return self.report_dir / "references.bib"

    @property
    def report_provenance(self) -> Path:
        return self.report_dir / "provenance.json"

    @property
    def report_figures(self) -> Path:
        """figures/<name>.png and .pdf (Snakemake's --report picks up the PNGs)."""
        return self.report_dir / "figures"

    # tracking ------------------------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def tracking_dir(self) -> Path:
        """Run ids (parent and per stage) and the offline metric buffer; never a rule output."""
        return self.root / "tracking"
