"""The exported reward model as an MLflow model, registered with its RewardBench results.

``record_reward_model`` (called by eval_rewardbench, which has both the model and its scores):

- an export up to ``tracking.copy_model_max_mb`` (the tiny one) is logged as a loadable pyfunc
  model (``rm_pyfunc.py``, "models from code": no pickle) with the export folder as its artifact
  and a training-format input example;
- a larger one (a 70B export is 140 GB) becomes an *external* logged model: nothing is copied,
  the record holds the folder's path, the sha256 of every file (``export.manifest.json``, an
  artifact of the logged model) and their one-line digest ``manifest.files_digest``;
- either way the logged model carries the Score and section metrics, links to the stage run, and
  is registered as a new version of ``paper-repro-<preset>-rm`` whose tags hold the Score and the
  sections, so the registry answers "which version scored what" without opening a run;
- one version per set of weights: when a version whose ``export.files_sha256`` tag equals the
  export's content digest exists (an eval rerun of the same export), nothing is logged or
  registered again; that version's score tags and description take the new evaluation, and the
  new stage run's metrics are linked to its logged model.

MLflow never fails the stage: an unreachable store or a rejected record is a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ReproConfig
from ..provenance.manifest import files_digest
from .runs import EXPERIMENT_KIND
from .tracker import NullTracker, StageTracker, reason

PYFUNC_CODE = Path(__file__).with_name("rm_pyfunc.py")


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    registered_name: str
    version: str
    copied: bool  # True: the weights are in the artifact store; False: referenced by path
    new: bool = True  # False: these weights were registered before (an eval rerun)


def registered_name(cfg: ReproConfig) -> str:
    return f"paper-repro-{cfg.preset}-rm"


def headline(scores: dict[str, Any]) -> dict[str, float]:
    """Score and sections (fractions) under stable metric/tag names."""
    out = {"rewardbench.score": scores["score"]["score"]}
    for name, est in scores["sections"].items():
        out[f"rewardbench.{name.lower().replace(' ', '_')}"] = est["score"]
    return out


def folder_mb(files: dict[str, str], folder: Path) -> float:
    return sum((folder / n).stat().st_size for n in files) / 2**20


def input_example(model_dir: Path):
    """One training-format text, exactly as the model was trained to read it."""
    import pandas as pd

    from ..data import load_tokenizer, special_strings
    from ..data.formatting import render_training

    tok = load_tokenizer(model_dir)
    text = render_training(
        [
            {"role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "Fine, thanks."},
        ],
        special_strings(tok),
    )
    return pd.DataFrame({"text": [text]})


@contextlib.contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent model API for ``uri``, then the process as it was: ``set_tracking_uri``
    also writes MLFLOW_TRACKING_URI, which later code (and child processes) would read."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before_env, before_global = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = before_global
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def _requirements() -> list[str]:
    from importlib import metadata

    return [
        f"{p}=={metadata.version(p).split('+')[0]}"
        for p in ("torch", "transformers", "safetensors")
    ]


def _log_copy(client, exp_id: str, run_id: str, name: str, model_dir: Path, tags) -> str:
    import mlflow

    lm = client.create_logged_model(exp_id, name=name, source_run_id=run_id, tags=tags)
    mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PYFUNC_CODE),
        artifacts={"model": str(model_dir)},
        input_example=input_example(model_dir),
        pip_requirements=_requirements(),
        model_id=lm.model_id,
    )
    return lm.model_id


def _log_reference(client, exp_id: str, run_id: str, name: str, files, tags) -> str:
    import mlflow

    lm = mlflow.create_external_model(
        name=name, source_run_id=run_id, tags=tags, experiment_id=exp_id
    )
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "export.manifest.json"
        manifest.write_text(json.dumps({"files": files}, indent=2, sort_keys=True) + "\n")
        client.log_model_artifact(lm.model_id, str(manifest))
    return lm.model_id


def record_reward_model(
    tracker: NullTracker,
    cfg: ReproConfig,
    model_dir: Path,
    files: dict[str, str],
    scores: dict[str, Any],
) -> ModelRecord | None:
    """Log and register the export (see the module docstring). ``files``: {name: sha256} of the
    export (export_rm's verification.json; computing it again for 140 GB would take minutes).
    Returns None on ranks != 0, with tracking off or when MLflow is unreachable (warned)."""
    if not isinstance(tracker, StageTracker):
        return None
    try:
        return _record(tracker, cfg, Path(model_dir).resolve(), files, scores)
    except Exception as exc:  # tracking never fails a stage
        tracker.warn("model", f"reward model not recorded in MLflow: {reason(exc)}")
        return None


def registered_version(client, name: str, digest: str):
    """The registered version of ``name`` holding the weights with content digest ``digest``
    (its ``export.files_sha256`` tag), or None."""
    found = client.search_model_versions(
        f"name = '{name}' and tags.`export.files_sha256` = '{digest}'"
    )
    return min(found, key=lambda v: int(v.version)) if found else None


def _record(tracker: StageTracker, cfg, model_dir: Path, files, scores) -> ModelRecord:
    import mlflow

    tracker._connect()  # raises when the store is unreachable
    client = tracker.client
    run_id = tracker.run_id
    exp_id = client.get_run(run_id).info.experiment_id
    client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
    heads = headline(scores)
    digest = files_digest(files)
    tags = {
        "preset": cfg.preset,
        "export.path": str(model_dir),
        "export.files_sha256": digest,
        "rewardbench.input_mode": scores["input_mode"],
        **{k: f"{v:.6f}" for k, v in heads.items()},
    }
    copy = folder_mb(files, model_dir) <= cfg.tracking.copy_model_max_mb
    version = registered_version(client, registered_name(cfg), digest)
    with _fluent_uri(tracker.uri):
        if version is not None:  # same weights: the newest evaluation goes onto that version
            # search results may leave model_id empty; the tag written at registration has it
            model_id = version.model_id or version.tags.get("logged_model_id")
            for key, value in tags.items():
                client.set_model_version_tag(version.name, version.version, key, value)
            copy = version.tags.get("export.copied", str(copy)) == "True"
        else:
            tags["export.copied"] = str(copy)
            name = "reward_model"
            if copy:
                model_id = _log_copy(client, exp_id, run_id, name, model_dir, tags)
            else:
                model_id = _log_reference(client, exp_id, run_id, name, files, tags)
        if model_id:
            mlflow.log_metrics(heads, run_id=run_id, model_id=model_id)
        else:  # a version registered by hand, without a logged model
            mlflow.log_metrics(heads, run_id=run_id)
        new = version is None
        if new:
            tags["logged_model_id"] = model_id
            version = mlflow.register_model(f"models:/{model_id}", registered_name(cfg), tags=tags)
    s = scores["score"]
    client.update_model_version(
        version.name,
        version.version,
        description=(
            f"RewardBench Score {100 * s['score']:.1f} (95% CI {100 * s['ci_low']:.1f}-"
            f"{100 * s['ci_high']:.1f}); "
            + ", ".join(f"{k} {100 * v['score']:.1f}" for k, v in scores["sections"].items())
            + f". Input mode {scores['input_mode']}. Weights "
            + ("in this record." if copy else f"referenced at {model_dir}.")
        ),
    )
    return ModelRecord(model_id, version.name, str(version.version), copy, new)
