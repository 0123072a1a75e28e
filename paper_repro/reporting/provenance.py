"""provenance.json: what exactly produced the numbers (code, config, data, models, MLflow runs,
library versions), and per stage the identity it ran with and the upstream identities it consumed
(checked by ``consistency.check_consistency`` first). No timestamps, so identical inputs give an
identical file."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import STAGES, ReproConfig, config_hash, stage_hash
from ..provenance.codeversion import code_version
from ..provenance.identity import recorded
from ..provenance.integrity import read_record
from ..provenance.io import read_json, sha256_file, sha256_tree
from ..provenance.paths import RunPaths
from ..tracking import git_commit, public_uri, recorded_run_ids, tracking_uri

PACKAGES = (
    "paper-repro",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "deepspeed",
    "datasets",
    "pyarrow",
    "numpy",
    "omegaconf",
    "mlflow",
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "matplotlib",
    "huggingface-hub",
    "accelerate",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _manifest_files(path: Path) -> dict[str, str] | None:
    """The {file: sha256} of a stage manifest ({"files": {...}} or a flat map)."""
    if not path.is_file():
        return None
    body = read_json(path)
    files = body.get("files", body) if isinstance(body, dict) else None
    return {k: (v["sha256"] if isinstance(v, dict) else v) for k, v in (files or {}).items()}


def _manifest_value(path: Path, *keys: str) -> Any:
    """A field of a lock manifest (e.g. the full commit a short pin resolved to), or None."""
    body: Any = read_json(path) if path.is_file() else None
    for key in keys:
        body = body.get(key) if isinstance(body, dict) else None
    return body


def _tree(folder: Path) -> dict[str, str] | None:
    return sha256_tree(folder) if folder.is_dir() else None


def _file(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def build_provenance(
    cfg: ReproConfig, paths: RunPaths, read: list[Path], identities: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``identities``: {stage: recorded identity}, as ``consistency.check_consistency`` returns
    them (default: the records as they are, unchecked)."""
    if identities is None:
        identities = {s: i.to_json() for s in STAGES if (i := recorded(paths, s)) is not None}
    root = paths.root.resolve()

    def rel(p: Path) -> str:
        p = p.resolve()
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    # The report requires export_rm's manifest; a partial run's provenance may lack it.
    export_done = paths.manifest("export_rm").is_file()
    export = read_record(paths, "export_rm", paths.export_verification) if export_done else {}
    rm_files = export.get("files") if isinstance(export, dict) else None
    return {
        "run": paths.root.name,
        "preset": cfg.preset,
        "description": cfg.description,
        "git_commit": git_commit(),
        "config_hash": config_hash(cfg),
        "stage_config_hashes": {s: stage_hash(cfg, s) for s in STAGES},
        "code_versions": {s: code_version(s) for s in STAGES},
        # {stage: {config, code, world, upstream: {artifact: content digest}, digest}}
        "stage_identities": identities,
        "data": {
            "download_manifest": _manifest_files(paths.data_manifest),
            "prepared": {
                n: _file(paths.prepared(n))
                for n in ("train", "heldout", "rewardbench", "ppo_prompts")
            },
            "fingerprint": _file(paths.fingerprint),
            "datasets": {
                n: {
                    "hub_id": r.hub_id,
                    "split": r.split,
                    "revision": r.revision,
                    "commit": _manifest_value(paths.data_manifest, "datasets", n, "commit"),
                }
                for n, r in (
                    ("preference", cfg.data.preference),
                    ("rewardbench", cfg.data.rewardbench),
                    ("ppo_prompts", cfg.data.ppo_prompts),
                )
            },
        },
        "models": {
            "base": {
                "hub_id": cfg.model.hub_id,
                "revision": cfg.model.revision,
                "commit": _manifest_value(paths.base_manifest, "commit"),
                "files": _manifest_files(paths.base_manifest),
            },
            "trained_state": _file(paths.trained_state),
            # export_rm already hashed its folder (verification.json); re-hash only without it.
            "reward_model": rm_files if rm_files else _tree(paths.rm_model),
            "ppo_policy": _tree(paths.ppo_policy),
        },
        "report_inputs": {rel(p): sha256_file(p) for p in sorted(read)},
        "mlflow": {
            "tracking_uri": public_uri(tracking_uri(cfg, paths)),
            "experiment": cfg.tracking.experiment,
            "run_ids": recorded_run_ids(paths),
        },
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
