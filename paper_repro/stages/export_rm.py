"""export_rm: the trained fp32 state dict -> a verified HF ``LlamaForSequenceClassification`` folder.

What EasyLM's ``convert_easylm_to_hf.py`` did (docs/fidelity.md §5: ``score.weight``,
num_labels 1, bf16 safetensors, the Tulu chat template) plus what it missed and later fixed
(docs/fidelity.md §5): an explicit pad id in config *and* tokenizer that never occurs in text
(128255 = ``<|reserved_special_token_250|>`` for Llama 3), checked to be inside the vocabulary.

The folder is built next to the target, reloaded with ``AutoModelForSequenceClassification`` and
checked (every weight equals the trained one, bitwise in fp32 or cast-exact in bf16; the rewards on
held-out pairs match the in-training model's; HF's own pooling agrees with ours); only then is it
renamed into place. A failed check leaves no model folder and exits non-zero (peer pitfalls:
checkpoints that silently lose the reward head, evaluators that score a random head).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from ..config import ReproConfig, stage_hash
from ..export.build import (
    ExportError,
    cast_parameters,
    license_files,
    load_trained_state,
    make_portable,
    model_from_state,
    prepare_config,
    prepare_tokenizer,
    require,
    verification_batch,
)
from ..export.card import CARD_FILE, model_card
from ..export.verify import Expected, Verification, score_pairs, verify_folder
from ..provenance.integrity import RECORDS, verify_inputs
from ..provenance.io import parse_json, sha256_file, write_json, write_text
from ..provenance.manifest import build_manifest
from ..provenance.paths import RunPaths
from ..provenance.verified import read_bytes
from ..tracking import NullTracker, stage_run

MAX_SHARD = "5GB"  # HF hub convention; a 70B bf16 export is ~28 shards


# --------------------------------------------------------------------------- the stage


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def export(cfg: ReproConfig, paths: RunPaths, tracker: NullTracker | None = None) -> Verification:
    """Build, verify and publish ``paths.rm_model``; raises ExportError (and leaves no model
    folder) when anything does not check out."""
    import torch

    tracker = tracker or NullTracker()
    t0 = time.perf_counter()
    target, pad_id, dtype = paths.rm_model, cfg.data.pad_token_id, cfg.model.dtype
    # Our declared outputs: a rerun replaces them, a failure must not leave stale ones behind.
    for stale in (target, paths.export_verification, paths.manifest("export_rm")):
        _remove(stale)
    base = require(paths.base_model, "SFT base model folder")
    require(base / "config.json", "SFT base config")
    state_path = require(paths.trained_state, "trained state (run train-rm first)")
    summary_path = require(paths.train_summary, "training summary")
    summary = parse_json(read_bytes(summary_path), summary_path)  # the bytes its manifest lists
    licenses = license_files()

    config = prepare_config(base, pad_id)
    tok = prepare_tokenizer(base, pad_id)
    # The tokenizer's real BOS/EOS: the Tulu 2 SFT configs carry LlamaConfig's defaults 1 and 2
    # (EasyLM's convert_easylm_to_hf.py never set them), which are ordinary tokens in Llama 3.
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    state = load_trained_state(state_path, config)
    batch = verification_batch(paths, pad_id, cfg.export.verify_pairs)
    print(
        f"export_rm: {len(state)} tensors from {state_path}; verifying on {len(batch.chosen)} "
        f"{batch.split} pairs; exporting {dtype}"
    )

    # The in-training model: fp32, built straight from the trained tensors.
    model = model_from_state(config, state)
    micro = cfg.rm.micro_batch_pairs
    ref_c, ref_r = score_pairs(model, batch, pad_id, micro, desc="training")
    del state

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        if dtype == "bfloat16":
            cast_parameters(model, torch.bfloat16)
        model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=MAX_SHARD)
        if dtype == "bfloat16":  # exact upcast: the trained weights rounded to bf16, fp32 compute
            cast_parameters(model, torch.float32)
            rounded = score_pairs(model, batch, pad_id, micro, desc="rounded fp32")
        else:
            rounded = (ref_c, ref_r)
        del model
        tok.save_pretrained(str(tmp))
        make_portable(tmp)
        for f in licenses:
            shutil.copyfile(f, tmp / f.name)
        expected = Expected(
            trained_state=state_path,
            pad_token_id=pad_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            ref=(ref_c, ref_r),
            rounded=rounded,
            fingerprint=paths.fingerprint if paths.fingerprint.is_file() else None,
        )
        ver = verify_folder(tmp, dtype, expected, batch, micro)
        ver.numbers.update(
            pad_token=tok.pad_token, pad_token_id=pad_id, vocab_size=config.vocab_size
        )
        tracker.log_metrics(
            {k: float(v) for k, v in ver.numbers.items() if isinstance(v, int | float)}
        )
        if not ver.passed:
            lines = [
                f"{c.name}: value {c.value!r}, limit {c.limit!r} {c.detail}".rstrip()
                for c in ver.failed()
            ]
            raise ExportError(f"verification of {target} failed: " + "; ".join(lines))
        provenance = {  # no local paths: the folder is meant to be shared
            "trained_state": str(state_path.relative_to(paths.root)),
            "trained_state_sha256": sha256_file(state_path),
            "stage_config_hash": stage_hash(cfg, "export_rm"),
            "preset": cfg.preset,
        }
        write_text(tmp / CARD_FILE, model_card(cfg, summary, ver, provenance))
        for f in tmp.iterdir():  # mkstemp-style 0600 files would be unreadable to co-workers
            f.chmod(0o644)
        # Hashed once (a rename keeps sizes and mtimes): every file but the card, which
        # eval_rewardbench completes later.
        manifest = build_manifest(tmp, exclude=tmp / CARD_FILE)
        ver.numbers.update(
            provenance=provenance,
            files=manifest["files"],
            export_seconds=round(time.perf_counter() - t0, 3),
            model_dir=str(target.resolve()),
        )
        os.replace(tmp, target)  # the only moment the model folder appears
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    record = write_json(paths.export_verification, ver.to_json())
    # Last: what the workflow's consumers depend on (the folder itself is no Snakemake output).
    # verification.json sits beside the model folder (the manifest root), so it is listed apart.
    manifest[RECORDS] = {paths.export_verification.name: record}
    write_json(paths.manifest("export_rm"), manifest)
    return ver


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    """0, or an ExportError naming what failed (``paper-repro`` prints it as one line, exit 2)."""
    verify_inputs(paths, "export_rm")
    with stage_run(cfg, paths, "export_rm") as tr:
        ver = export(cfg, paths, tr)
        tr.log_metrics({"export_seconds": ver.numbers["export_seconds"]})
        tr.log_artifact(paths.export_verification)
        tr.log_artifact(paths.rm_model / CARD_FILE)
        for name in sorted(ver.numbers["files"]):
            if name.endswith(".safetensors"):
                tr.log_file_ref(f"rm_model/{name}", paths.rm_model / name)
    v = ver.numbers
    print(
        f"export_rm: {paths.rm_model} ({ver.dtype}) verified: reward max |diff| "
        f"{v['reward_max_abs_diff']:.3g} <= {v['reward_tolerance']:.3g}, HF pooling "
        f"{v['hf_pooling_max_abs_diff']:.3g}, accuracy {v['accuracy_exported']:.4f} on "
        f"{v['verify_pairs']} {v['verify_split']} pairs, {v['export_seconds']:.1f} s"
    )
    return 0
