"""eval_rewardbench: score every RewardBench pair with the exported reward model.

Reads ``export_rm/model`` (HF ``LlamaForSequenceClassification``, safetensors only) and, by
``eval.input_mode``, ``prepare_data/rewardbench.parquet`` (training format) or
``download_data/rewardbench.jsonl`` (tokenizer template); see ``paper_repro.rewardbench``.

Writes ``eval_rewardbench/``: ``pairs.parquet`` (id, subset, reward_chosen, reward_rejected,
correct), ``scores.json`` (subsets, sections and Score with bootstrap CIs, the historical
variants), ``comparison.json`` / ``comparison.md`` (the cards' numbers next to ours) and
``leaderboard.json`` (reward-bench's results layout). Then it puts the results into the exported
model card and records the model in MLflow: a logged model registered as a version that carries
the Score and sections (``tracking.models``).

``paper-repro eval-rewardbench CONFIG --model PATH_OR_ORG/NAME@SHA`` evaluates any other
sequence-classification RM with the same code and settings (``run_model``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import ReproConfig
from ..provenance.integrity import verify_inputs
from ..provenance.manifest import write_manifest
from ..provenance.paths import EvalFiles, RunPaths
from ..rewardbench.core import evaluate_rm
from ..rewardbench.model import EvalError, ModelSpec, default_input_mode, obtain_model
from ..tracking import stage_run

STAGE = "eval_rewardbench"


def own_model_name(cfg: ReproConfig) -> str:
    """The leaderboard name of the pipeline's own RM."""
    return f"paper-repro/{cfg.preset}-rm"


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    from ..export.card import update_card_results
    from ..tracking.models import record_reward_model

    # export_rm's verified manifest: {name: sha256} of the export (without the card, which
    # changes after export), what the MLflow model record names
    export_files = verify_inputs(paths, STAGE)["export_rm"]["files"]
    model_dir = paths.rm_model
    if not (model_dir / "config.json").is_file():
        raise EvalError(f"{model_dir}: no exported reward model (run export-rm first)")
    files = paths.eval_files(STAGE)
    done = evaluate_rm(
        model_dir, cfg, paths, files, name=own_model_name(cfg), own_export=True, log=STAGE
    )
    # what a consumer of these scores records as their content identity (identity.py)
    write_manifest(paths.manifest(STAGE), files.folder, [f.name for f in files.all()])
    update_card_results(model_dir, done.scores)
    e = cfg.eval
    with stage_run(cfg, paths, STAGE) as tr:
        from ..rewardbench.outputs import mlflow_metrics

        tr.set_tags({"input_mode": e.input_mode, "eval_dtype": e.dtype})
        tr.log_metrics(mlflow_metrics(done.scores))
        for f in files.all():
            tr.log_artifact(f)
        tr.log_file_ref("rm_model", model_dir)
        if e.input_mode == "training-format":
            tr.log_dataset("rewardbench", paths.prepared("rewardbench"), context="evaluation")
        record_reward_model(tr, cfg, model_dir, export_files, done.scores)
    return 0


def run_model(
    cfg: ReproConfig,
    paths: RunPaths,
    spec: ModelSpec,
    out: Path | None,
    *,
    input_mode_given: bool = False,
) -> int:
    """``--model``: any sequence-classification RM, written to ``out`` (default
    ``results/rewardbench/<name>``). Hub models are downloaded at their pin, verified and linked
    into ``out/model`` (lock manifest ``out/model.manifest.json``). Unless ``eval.input_mode``
    was given, the model is scored with its own chat template as reward-bench does, or in the
    Tulu training format when its tokenizer has none. Nothing goes to MLflow: the pipeline run's
    records stay about the pipeline's model."""
    out = Path(out) if out else Path("results") / "rewardbench" / spec.slug
    model_dir = obtain_model(spec, out / "model", out / "model.manifest.json")
    if not input_mode_given:
        mode, why = default_input_mode(model_dir)
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, input_mode=mode))
        print(f"{STAGE}: input mode {mode} ({why}; set eval.input_mode to choose)")
    files = EvalFiles(out)
    evaluate_rm(
        model_dir, cfg, paths, files, name=spec.name, own_export=False, as_reward_bench=True
    )
    return 0
