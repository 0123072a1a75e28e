"""The report refuses mixtures: every number must come from the current config and from the
current files of every stage upstream of it.

Each stage records ``<stage>/identity.json`` (``identity.py``): its config hash and the content
identity (``manifest_digest``) of every upstream artifact it consumed. Before the report combines
anything, each record is checked against the current config and the current upstream manifests:
eval scores of a model other than the current export, a PPO run against an older reward model, a
training summary of other data, all stop the report with one line naming the stage to rerun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import STAGES, ReproConfig, stage_hash
from ..errors import ReproError
from ..provenance.identity import content_digest, recorded
from ..provenance.paths import RunPaths


class MixtureError(ReproError):
    """Report inputs that do not belong together (one line: which stage, what changed, what to
    rerun)."""


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "(none)"


def check_consistency(cfg: ReproConfig, paths: RunPaths, read: list[Path]) -> dict[str, Any]:
    """{stage: recorded identity} of every stage before the report; raises ``MixtureError``."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        if stage == "report":
            continue
        ident = recorded(paths, stage)
        folder = paths.stage_dir(stage).resolve()
        if ident is None:
            if any(p.resolve().is_relative_to(folder) for p in read):
                raise MixtureError(
                    f"{paths.identity(stage)} is missing, so nothing says what produced the "
                    f"{stage} files the report reads; rerun {stage}"
                )
            continue
        rerun = f"rerun it: snakemake --forcerun {stage} all"
        for upstream, digest in sorted(ident.upstream.items()):
            now = content_digest(paths, upstream)
            if now != digest:
                raise MixtureError(
                    f"{stage} was produced from {upstream} outputs {_short(digest)}, but "
                    f"{upstream} now holds {_short(now)}; {rerun}"
                )
        if ident.config != stage_hash(cfg, stage):
            raise MixtureError(
                f"{stage} ran with stage config hash {ident.config}, the current config has "
                f"{stage_hash(cfg, stage)}; {rerun}"
            )
        out[stage] = ident.to_json()
    return out
