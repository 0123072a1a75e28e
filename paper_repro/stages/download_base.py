"""download_base: the SFT base model, pinned and verified (docs/fidelity.md §1).

``model.source``: ``hub`` (``allenai/llama-3-tulu-2-70b`` at a pinned commit, safetensors +
config + tokenizer only, verified against the hub's sha256), ``local`` (a folder) or ``tiny``
(a tiny Llama built here from the fixture dialogues; `paper-repro plan tiny` gives its size).
Output: ``download_base/model/`` and ``download_base/manifest.json`` ({"files": {name: sha256},
...}), checked by every later stage with ``integrity.verify_inputs``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..config import ReproConfig
from ..hub import fetch_model, link_local_model
from ..provenance.manifest import write_manifest
from ..provenance.paths import RunPaths
from ..tracking import stage_run

TINY_SOURCE = "preference_train.jsonl"  # the fixture rows the tiny base is SFT-trained on


def build_tiny_model(cfg: ReproConfig, out_dir: Path) -> None:
    """The tiny base in ``out_dir``: SFT on the hand-made fixture rows only (``tiny.sft_rows``),
    so the on-policy pairs sampled from this very base (fixtures/onpolicy.py) cannot change it."""
    from ..data import read_rows
    from ..fixtures.tiny import FIXTURE_DIR, build_tiny_base, sft_rows

    rows = sft_rows(read_rows(FIXTURE_DIR / TINY_SOURCE))
    build_tiny_base(out_dir, cfg.model.tiny, rows, seed=cfg.model.tiny.seed)


def build_tiny(cfg: ReproConfig, paths: RunPaths) -> dict:
    tmp = paths.base_model.with_name(".model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(cfg, tmp)
    shutil.rmtree(paths.base_model, ignore_errors=True)
    tmp.rename(paths.base_model)
    return write_manifest(
        paths.base_manifest,
        paths.base_model,
        source="tiny",
        seed=cfg.model.tiny.seed,
        sft_steps=cfg.model.tiny.sft_steps,
    )


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    m = cfg.model
    start = time.time()
    if m.source == "tiny":
        manifest = build_tiny(cfg, paths)
    elif m.source == "local":
        manifest = link_local_model(m.local_path, paths.base_model, paths.base_manifest)
    else:
        manifest = fetch_model(m.hub_id, m.revision, paths.base_model, paths.base_manifest)
    seconds = time.time() - start
    print(
        f"download_base: {len(manifest['files'])} files verified in {paths.base_model} "
        f"({seconds:.1f} s)"
    )
    with stage_run(cfg, paths, "download_base") as tr:
        tr.log_params(
            {
                "base.commit": manifest.get("commit", m.source),
                "base.expected_from": manifest.get("expected_from", m.source),
            }
        )
        tr.log_metrics({"files": len(manifest["files"]), "seconds": seconds})
        tr.log_artifact(paths.base_manifest)
    return 0
