"""The tiny preset's stand-in for the published reward model: a second tiny RM, trained here from
the same base and data with the same recipe (``rm`` section) but another seed
(``reference.standin_seed``: another head initialisation and data order). Deterministic, CPU only,
about as long as tiny train_rm. It lets eval_reference, the agreement statistics and the verdict
run everywhere; it says nothing about the published 70B model.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from ..config import ReproConfig
from ..manifest import write_manifest
from ..paths import RunPaths


def build_standin(cfg: ReproConfig, paths: RunPaths) -> Path:
    """Train the stand-in and save it as a HF folder at ``paths.reference_model`` (replaced
    whole); returns that folder."""
    import torch

    from ..backends import TorchBackend
    from ..batching import BatchPlan, pair_lengths, pair_tokens
    from ..data import check_fingerprint, load_pairs
    from ..engine import Trainer
    from ..export.build import prepare_tokenizer
    from ..modeling import load_reward_model_from_base
    from ..schedule import LRSchedule

    seed = cfg.reference.standin_seed
    rm = dataclasses.replace(cfg.rm, seed=seed, backend="torch")
    pad = cfg.data.pad_token_id
    check_fingerprint(paths.fingerprint, paths.base_model)
    train = load_pairs(paths.prepared("train"))
    torch.manual_seed(seed)
    model = load_reward_model_from_base(
        paths.base_model, pad_token_id=pad, init_std=rm.head_init_std, seed=seed
    )
    plan = BatchPlan.from_config(rm, pair_tokens(train), pair_lengths(train))
    backend = TorchBackend(
        model, rm, packed=rm.packing, compute_dtype=cfg.model.dtype, device="cpu"
    )
    result = Trainer(backend, train, plan, LRSchedule.from_config(rm, len(train)), pad).fit()
    print(
        f"eval_reference: stand-in trained with seed {seed}: {plan.num_updates} updates, "
        f"final training loss {result.final.loss:.4f}"
    )
    dest = paths.reference_model
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    model.save_pretrained(str(tmp), safe_serialization=True)
    prepare_tokenizer(paths.base_model, pad).save_pretrained(str(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    write_manifest(
        paths.reference_model_manifest,
        dest,
        source="tiny stand-in",
        seed=seed,
        updates=plan.num_updates,
    )
    return dest
