"""The tiny preset's stand-in for the published reward model: a second tiny RM, trained here from
the same base and data with the same recipe (``rm`` section) but another seed
(``reference.standin_seed``: another head initialisation and data order). Deterministic, CPU only,
about as long as tiny train_rm. It lets eval_reference, the agreement statistics and the verdict
run everywhere; it says nothing about the published 70B model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from ..config import ReproConfig
from ..config.load import identity_config
from ..provenance.io import read_json
from ..provenance.manifest import ChecksumError, ManifestError, verify_manifest, write_manifest
from ..provenance.paths import RunPaths


def standin_identity(cfg: ReproConfig, paths: RunPaths) -> str:
    """What the stand-in's weights depend on: train_rm's config identity (the rm recipe, model
    and data sections, less the keys that change no result), the stand-in seed, the code of this
    module and the content of the base and prepared data it is trained from. Not the ``eval``
    section: an evaluation-only change rescores the stand-in, it does not retrain it."""
    from ..provenance.codeversion import module_version
    from ..provenance.identity import content_digest

    body = {
        "config": identity_config(cfg, "train_rm"),
        "seed": cfg.reference.standin_seed,
        "code": module_version("rewardbench.standin"),
        "upstream": {s: content_digest(paths, s) for s in ("download_base", "prepare_data")},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def standin_model(cfg: ReproConfig, paths: RunPaths) -> Path:
    """The stand-in at ``paths.reference_model``: reused when the one there was trained under
    the same ``standin_identity`` and its files are intact, trained (``build_standin``) else."""
    ident = standin_identity(cfg, paths)
    manifest = paths.reference_model_manifest
    if manifest.is_file() and read_json(manifest).get("standin_identity") == ident:
        try:
            verify_manifest(paths.reference_model, manifest, model=True)
        except (ChecksumError, ManifestError) as exc:
            print(f"eval_reference: retraining the stand-in ({exc})")
        else:
            print(f"eval_reference: stand-in {ident} (same recipe, seed, code and inputs) reused")
            return paths.reference_model
    return build_standin(cfg, paths, ident)


def build_standin(cfg: ReproConfig, paths: RunPaths, identity: str | None = None) -> Path:
    """Train the stand-in and save it as a HF folder at ``paths.reference_model`` (replaced
    whole); returns that folder. Its manifest records ``identity`` (``standin_identity``)."""
    import torch

    from ..data import check_fingerprint, load_pairs
    from ..export.build import prepare_tokenizer
    from ..training.backends import TorchBackend
    from ..training.batching import BatchPlan, pair_lengths, pair_tokens
    from ..training.engine import Trainer
    from ..training.modeling import load_reward_model_from_base
    from ..training.schedule import LRSchedule

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
        standin_identity=identity or standin_identity(cfg, paths),
    )
    return dest
