"""eval_downstream: what the reward model does downstream, as the Tulu 2.5 paper measures it
(arXiv 2406.09279): the SFT policy, the PPO policy trained against our RM, and best-of-N from the
SFT policy's samples selected by our RM and by the published RM, all on the paper's evaluation
suite through EleutherAI's lm-evaluation-harness (its task definitions, prompts, few-shot
examples, answer extraction and metrics; ``paper_repro.downstream``).

Reads (verified first): ``download_base/model`` (or ``ppo_policy_base/model``: the PPO policy's
own SFT checkpoint), ``ppo/policy``, ``export_rm/model``, ``reference_model/model`` (the
published RM or the tiny stand-in eval_reference scored). Writes ``eval_downstream/``
(``results.json``, ``samples/``, ``manifest.json``); the pinned task data lives in
``downstream_data/`` (kept across reruns, never an output).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ReproConfig
from ..provenance.integrity import check_manifest, verify_inputs
from ..provenance.manifest import verify_manifest, write_manifest
from ..provenance.paths import RunPaths
from ..tracking import stage_run

STAGE = "eval_downstream"


def sft_policy(cfg: ReproConfig, paths: RunPaths) -> tuple[Path, Path]:
    """The SFT checkpoint PPO started from, and its manifest: the RM's base, or the PPO
    policy's own base when ``ppo.policy_hub_id`` names another model."""
    p = cfg.ppo
    if p.policy_hub_id and p.policy_hub_id != cfg.model.hub_id:
        return paths.ppo_policy_base, paths.ppo_policy_base_manifest
    return paths.base_model, paths.base_manifest


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    from ..downstream.run import Models, evaluate
    from ..export.card import update_card_downstream
    from .eval_reference import reference_name

    verify_inputs(paths, STAGE)
    sft, sft_manifest = sft_policy(cfg, paths)
    # lm-eval loads the policies itself (not hashed while read): their weights are hashed in
    # full here, not taken on size + mtime, and a file their manifest leaves out is refused
    verify_manifest(sft, sft_manifest, model=True, fast=False)
    check_manifest(paths, "ppo", fast=False)
    verify_manifest(paths.reference_model, paths.reference_model_manifest, model=True)
    models = Models(
        policies={"sft": sft, "ppo": paths.ppo_policy},
        rms={"ours": paths.rm_model, "published": paths.reference_model},
        names={"bon_ours": str(paths.rm_model), "bon_published": reference_name(cfg)},
    )
    out = paths.stage_dir(STAGE)
    body = evaluate(cfg, models, out, paths.downstream_data)
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    files = [f for f in files if f not in ("manifest.json", "identity.json", ".lock")]
    write_manifest(paths.manifest(STAGE), out, files)
    update_card_downstream(paths.rm_model, body)
    with stage_run(cfg, paths, STAGE) as tr:
        ds = cfg.downstream
        tr.set_tags(
            {
                "downstream.backend": ds.backend,
                "downstream.bon.n": ds.bon.n,
                "downstream.lm_eval": body["settings"]["lm_eval_version"],
                "downstream.not_run": "; ".join(f"{k}: {v}" for k, v in body["not_run"].items()),
            }
        )
        specs = body["settings"]["lm_specs"].items()
        tr.log_params({f"downstream.lm.{k}": json.dumps(v, sort_keys=True) for k, v in specs})
        values = {
            f"{model}.{task}": row["value"]
            for model, per in body["models"].items()
            for task, row in per.items()
        }
        # paired deltas (e.g. delta.bon_ours-sft_sample.tiny_arithmetic) with their CI ends
        for d in body["deltas"]:
            key = f"delta.{d['a']}-{d['b']}.{d['task']}"
            values.update({key: d["delta"], f"{key}.lo": d["lo"], f"{key}.hi": d["hi"]})
        tr.log_metrics(values)
        # the headline numbers on the pipeline's parent run (sortable in the MLflow UI)
        tr.log_parent_metrics({f"downstream.{k}": v for k, v in values.items()})
        for f in files:
            tr.log_artifact(out / f, subdir=str(Path(f).parent) if "/" in f else None)
    return 0
