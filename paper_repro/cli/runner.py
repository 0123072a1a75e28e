"""How ``paper-repro <stage>`` runs a stage: the parts every stage shares.

1. The process dies with the job that started it (``lock.die_with_parent``).
2. Rank 0 holds the stage folder's lock for the whole run (one writer; a second process exits 2
   naming the holder) and removes the previous ``<stage>/manifest.json`` and ``identity.json``
   first (``clear_records``), so that a failed or running stage never leaves old records next to
   new files: its consumers see no manifest and refuse to start (``integrity.verify_inputs``
   names the running stage). These two are the only outputs the Snakemake rules declare, so a job
   refused by the lock can make Snakemake delete nothing else of the holder's. The download stages
   keep their manifest until they rewrite it: it is their lock of what was fetched (a rerun
   re-checks instead of downloading again).
   A ChecksumError raised while the stage loads (weights are hashed as they are read,
   ``verified.py``) moves the bad upstream files to quarantine like ``integrity.verify_inputs``.
3. After a successful run rank 0 records ``<stage>/identity.json`` (``identity.py``): what the
   stage ran with (config hash, code version, world) and the content identity of every upstream
   artifact it consumed. The report checks these records before combining outputs.
4. With several ranks (DeepSpeed) the process leaves with ``os._exit`` once the stage returned
   (every rank passed its final barrier): ranks sometimes abort in interpreter teardown, and all
   work is on disk by then.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from ..config import ReproConfig
from ..provenance.identity import record, stage_identity
from ..provenance.integrity import refused, upstream_of
from ..provenance.lock import die_with_parent, stage_lock
from ..provenance.manifest import ChecksumError
from ..provenance.paths import RunPaths

# Stages whose previous manifest is read by the stage itself (the record of what was downloaded)
# and rewritten at its end; consumers still see the stage lock while it runs.
KEEPS_MANIFEST = frozenset({"download_base", "download_data"})


def clear_records(paths: RunPaths, stage: str) -> None:
    """Remove ``stage``'s identity and (but for KEEPS_MANIFEST) manifest; under the stage lock."""
    paths.identity(stage).unlink(missing_ok=True)
    if stage not in KEEPS_MANIFEST:
        paths.manifest(stage).unlink(missing_ok=True)


def run_stage(stage: str, cfg: ReproConfig, paths: RunPaths) -> int:
    die_with_parent()
    rank0 = int(os.environ.get("RANK", "0")) == 0
    # a held lock raises StageBusy (a ReproError: the CLI prints one line and exits 2)
    with stage_lock(paths, stage) if rank0 else contextlib.nullcontext():
        if rank0:
            clear_records(paths, stage)
        module = importlib.import_module(f"paper_repro.stages.{stage}")  # after the lock: fast
        try:
            code = int(module.run(cfg, paths) or 0)
        except ChecksumError as exc:
            up = upstream_of(paths, stage, exc.folder)
            if getattr(exc, "handled", False) or up is None:
                raise
            raise refused(paths, stage, up, exc) from None
        if code == 0 and rank0:
            record(paths, stage_identity(cfg, paths, stage))
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code
