"""eval_reference: the published reward model, scored on RewardBench by exactly the evaluation
of eval_rewardbench (``rewardbench.evaluate_rm``, the same ``eval`` settings), so the report can
put "published RM re-evaluated here" beside "reproduced RM" and beside the card.

``reference.source``: ``hub`` (``reference.hub_id`` at the pinned ``reference.revision``,
downloaded with the verified machinery of download_base and linked into ``reference_model/``),
``local`` (a folder) or ``tiny`` (a second tiny RM trained here with ``reference.standin_seed``:
a stand-in, so the path runs on CPU; ``rewardbench.standin``).

Writes ``eval_reference/`` with the same five files as eval_rewardbench (pairs.parquet,
scores.json, comparison.json, comparison.md, leaderboard.json). ``reference_model/`` (the links
or the stand-in, and its manifest) is kept across reruns like checkpoints and is not an output.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ReproConfig
from ..provenance.integrity import verify_inputs
from ..provenance.manifest import write_manifest
from ..provenance.paths import RunPaths
from ..rewardbench.core import evaluate_rm
from ..rewardbench.model import ModelSpec, obtain_model
from ..tracking import stage_run
from . import reads

STAGE = "eval_reference"


def reference_name(cfg: ReproConfig) -> str:
    r = cfg.reference
    if r.source == "tiny":
        return f"paper-repro/tiny-standin-seed{r.standin_seed}"
    if r.source == "local":
        return Path(r.local_path).resolve().name
    return r.hub_id


def reference_model(cfg: ReproConfig, paths: RunPaths) -> Path:
    r = cfg.reference
    if r.source == "tiny":
        from ..rewardbench.standin import standin_model

        return standin_model(cfg, paths)
    spec = (
        ModelSpec(path=Path(r.local_path))
        if r.source == "local"
        else ModelSpec(repo_id=r.hub_id, revision=r.revision)
    )
    return obtain_model(spec, paths.reference_model, paths.reference_model_manifest)


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    from ..rewardbench.outputs import mlflow_metrics

    verify_inputs(paths, STAGE, reads(STAGE, cfg))
    model_dir = reference_model(cfg, paths)
    files = paths.eval_files(STAGE)
    done = evaluate_rm(
        model_dir, cfg, paths, files, name=reference_name(cfg), own_export=False, log=STAGE
    )
    # what a consumer of these scores records as their content identity (identity.py)
    write_manifest(paths.manifest(STAGE), files.folder, [f.name for f in files.all()])
    with stage_run(cfg, paths, STAGE) as tr:
        tr.set_tags(
            {
                "input_mode": cfg.eval.input_mode,
                "eval_dtype": cfg.eval.dtype,
                "reference": done.scores["model"],
                "reference.source": cfg.reference.source,
            }
        )
        tr.log_metrics(mlflow_metrics(done.scores))
        for f in files.all():
            tr.log_artifact(f)
        if paths.reference_model_manifest.is_file():
            tr.log_artifact(paths.reference_model_manifest)
    return 0
