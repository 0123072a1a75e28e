"""How ``paper-repro <stage>`` runs a stage: the parts every stage shares.

1. The process dies with the job that started it (``lock.die_with_parent``).
2. Rank 0 holds the stage folder's lock for the whole run (one writer; a second process exits 2
   naming the holder) and removes the previous ``<stage>/identity.json`` first, so that a failed
   run never leaves an old identity next to new files.
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

from .config import ReproConfig
from .identity import record, stage_identity
from .integrity import refused, upstream_of
from .lock import die_with_parent, stage_lock
from .manifest import ChecksumError
from .paths import RunPaths


def run_stage(stage: str, cfg: ReproConfig, paths: RunPaths) -> int:
    die_with_parent()
    rank0 = int(os.environ.get("RANK", "0")) == 0
    # a held lock raises StageBusy (a ReproError: the CLI prints one line and exits 2)
    with stage_lock(paths, stage) if rank0 else contextlib.nullcontext():
        if rank0:
            paths.identity(stage).unlink(missing_ok=True)
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
