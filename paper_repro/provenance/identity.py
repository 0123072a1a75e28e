"""What produced a stage's files: its identity.

A ``StageIdentity`` is the stage's config hash (the config sections it reads,
``config.stage_hash``), its code version (``codeversion.code_version``), the content identity of
every upstream artifact it consumes, and for the trainers the backend and world size (ZeRO shards
belong to one world size). The content identity of an upstream stage is the ``manifest_digest`` of
its ``<stage>/manifest.json`` (sha256 of every file it produced): two runs that consumed the same
bytes agree, whatever the paths and mtimes, and a retrained reward model with other weights is a
new upstream even under the same config.

For the trainers the identity also holds the **runtime** that changes their bits: the torch
version and, on CPU, the number of threads torch uses (``torch.get_num_threads()``: CPU reductions
are split over threads, so the final weights differ with the thread count) and the CPU model; on
GPU the GPU model instead. A resume under another runtime is another identity (loud, starts over) rather than a
silently different result; the bitwise resume claims hold within one runtime.

Uses: a checkpoint resumes only under an equal identity (``checkpoints.py``); an MLflow child run
belongs to one identity (``tracking/runs.py``); every stage writes ``<stage>/identity.json`` next to
its outputs and the report refuses to combine outputs whose recorded upstream identities are not
the current ones (``reporting/consistency.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ReproConfig, stage_hash
from ..stages import UPSTREAM
from .codeversion import code_version
from .io import read_json, sha256_file, write_json
from .manifest import files_digest, manifest_digest
from .paths import RunPaths

TRAINERS = {"train_rm": "rm", "ppo": "ppo"}  # stages whose checkpoints depend on the world size


@dataclass(frozen=True)
class StageIdentity:
    stage: str
    config: str  # config.stage_hash: the sections the stage reads
    code: str  # codeversion.code_version
    upstream: dict[str, str | None] = field(default_factory=dict)  # {artifact: content digest}
    world: str = ""  # "<backend> x<world size>" for the trainers, else ""
    runtime: str = ""  # torch version, threads, CPU / GPU model for the trainers (runtime_of)

    @property
    def digest(self) -> str:
        body = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "digest": self.digest}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StageIdentity:
        return cls(
            stage=body["stage"],
            config=body["config"],
            code=body["code"],
            upstream=dict(body.get("upstream") or {}),
            world=body.get("world", ""),
            runtime=body.get("runtime", ""),
        )

    def changes(self, old: StageIdentity) -> list[str]:
        """What differs from ``old``, in words, e.g. ``["config", "upstream export_rm"]``."""
        out = [
            name
            for name in ("stage", "config", "code")
            if getattr(self, name) != getattr(old, name)
        ]
        for name in sorted(set(self.upstream) | set(old.upstream)):
            if self.upstream.get(name) != old.upstream.get(name):
                out.append(f"upstream {name}")
        if self.world != old.world:
            out.append(f"world ({old.world or '-'} -> {self.world or '-'})")
        if self.runtime != old.runtime:
            out.append(f"runtime ({old.runtime or '-'} -> {self.runtime or '-'})")
        return out


# --------------------------------------------------------------------------- content digests


def _interim_files(paths: RunPaths, stage: str) -> dict[str, str] | None:
    """prepare_data does not write ``<stage>/manifest.json`` yet: the same ``{file: sha256}`` of
    the files it produces."""
    if stage != "prepare_data":
        return None
    names = [paths.prepared(n).name for n in ("train", "heldout", "rewardbench", "ppo_prompts")]
    names += [paths.fingerprint.name, paths.data_report.name]
    folder = paths.stage_dir(stage)
    if not all((folder / n).is_file() for n in names):
        return None
    return {n: sha256_file(folder / n) for n in names}


def _manifest(paths: RunPaths, artifact: str) -> Path:
    """Where an artifact's manifest is: ``<stage>/manifest.json``, or the lock manifest of a model
    a stage fetched for itself (PPO's policy, the reference RM)."""
    own = {
        "ppo_policy_base": paths.ppo_policy_base_manifest,
        "reference_model": paths.reference_model_manifest,
    }
    return own.get(artifact) or paths.manifest(artifact)


def content_digest(paths: RunPaths, artifact: str) -> str | None:
    """The content identity of what ``artifact`` (a stage, or a model a stage fetched) holds:
    ``manifest_digest`` of its manifest; None when there is none (nothing produced yet)."""
    manifest = _manifest(paths, artifact)
    if manifest.is_file():
        return manifest_digest(manifest)
    files = _interim_files(paths, artifact)
    return files_digest(files) if files is not None else None


def upstream_artifacts(cfg: ReproConfig, stage: str) -> tuple[str, ...]:
    """The artifacts ``stage`` consumes: its upstream stages, plus the models a stage fetches for
    itself: PPO's policy when it is not the RM's base (``ppo.policy_hub_id``) and the reference
    RM of ``eval_reference``."""
    names = UPSTREAM[stage]
    p = cfg.ppo
    if stage == "ppo" and p.policy_hub_id and p.policy_hub_id != cfg.model.hub_id:
        names = (*names, "ppo_policy_base")
    if stage in ("eval_reference", "eval_downstream"):
        names = (*names, "reference_model")
    if stage == "eval_downstream" and p.policy_hub_id and p.policy_hub_id != cfg.model.hub_id:
        names = (*names, "ppo_policy_base")
    return names


def world_of(cfg: ReproConfig, stage: str) -> str:
    """``<backend> x<world size>`` for a trainer (from the config and the launcher's WORLD_SIZE)."""
    if stage not in TRAINERS:
        return ""
    backend = getattr(cfg, TRAINERS[stage]).backend
    return f"{backend} x{int(os.environ.get('WORLD_SIZE', '1'))}"


def _processor() -> str:
    """The CPU model (``/proc/cpuinfo``), else the machine type."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    return platform.machine() or "unknown CPU"


def runtime_of(stage: str) -> str:
    """What else decides a trainer's bits: the torch version, and torch's CPU threads and the CPU
    model (the GPU model where there is a GPU); "" for other stages."""
    if stage not in TRAINERS:
        return ""
    import torch

    if torch.cuda.is_available():  # the math runs on the GPU: CPU threads do not change it
        return f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}"
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_processor()}"


def stage_identity(cfg: ReproConfig, paths: RunPaths, stage: str) -> StageIdentity:
    """The identity of ``stage`` run now under ``cfg`` on the upstream files in ``paths``."""
    return StageIdentity(
        stage=stage,
        config=stage_hash(cfg, stage),
        code=code_version(stage),
        upstream={a: content_digest(paths, a) for a in upstream_artifacts(cfg, stage)},
        world=world_of(cfg, stage),
        runtime=runtime_of(stage),
    )


# --------------------------------------------------------------------------- identity.json


def record(paths: RunPaths, identity: StageIdentity) -> Path:
    """Write ``<stage>/identity.json`` (after the stage's outputs are complete)."""
    path = paths.identity(identity.stage)
    write_json(path, identity.to_json())
    return path


def recorded(paths: RunPaths, stage: str) -> StageIdentity | None:
    """The identity a stage recorded next to its outputs, or None."""
    path = paths.identity(stage)
    return StageIdentity.from_json(read_json(path)) if path.is_file() else None
