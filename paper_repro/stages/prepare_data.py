"""prepare_data: tokenize exactly what EasyLM fed the model (reproduction_spec.md sections 3, 8.1, 9).

Reads ``download_data/*.jsonl`` (verified against their manifest) and the tokenizer of
``download_base/model`` (verified too); writes ``prepare_data/{train,heldout,rewardbench,
ppo_prompts}.parquet``, ``fingerprint.json`` and ``data_report.json``.
"""

from __future__ import annotations

from ..config import ReproConfig
from ..data import (
    Encoder,
    build_fingerprint,
    iter_jsonl,
    load_tokenizer,
    split_heldout,
    split_report,
    write_parquet,
)
from ..io import write_json
from ..manifest import verify_manifest
from ..paths import RunPaths
from ..tracking import stage_run

# RewardBench pairs are never dropped for length (that would change section denominators); the
# report counts those over run_rm.py's 2048-token left truncation (pitfall 7).
RUN_RM_MAX_LENGTH = 2048


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    d = cfg.data
    verify_manifest(paths.base_model, paths.base_manifest)
    verify_manifest(paths.data_manifest.parent, paths.data_manifest)
    tok = load_tokenizer(paths.base_model)
    encoder = Encoder(tok, d.pad_token_id, d.max_length)

    pref = encoder.pairs(list(iter_jsonl(paths.raw_data("preference"))), desc="preference")
    heldout_file = paths.raw_data("preference_heldout")
    if heldout_file.is_file():  # tiny preset: the fixture's own held-out split
        held = encoder.pairs(list(iter_jsonl(heldout_file)), desc="heldout")
        train_rows, held_rows = pref.rows, held.rows
    else:
        held = None
        train_rows, held_rows = split_heldout(pref.rows, d.heldout_fraction, d.heldout_seed)
    bench = encoder.pairs(
        list(iter_jsonl(paths.raw_data("rewardbench"))),
        kind="rewardbench",
        desc="rewardbench",
        drop_too_long=False,
    )
    prompts = encoder.prompts(
        list(iter_jsonl(paths.raw_data("ppo_prompts"))), d.ppo_prompt_max_length, d.ppo_prompt_bos
    )
    if not train_rows:
        raise RuntimeError(f"{paths.raw_data('preference')}: no pair survived filtering")

    write_parquet(paths.prepared("train"), train_rows, "pairs")
    write_parquet(paths.prepared("heldout"), held_rows, "pairs")
    write_parquet(paths.prepared("rewardbench"), bench.rows, "rewardbench")
    write_parquet(paths.prepared("ppo_prompts"), prompts.rows, "prompts")

    fingerprint = build_fingerprint(
        tok,
        paths.base_model,
        pad_token_id=d.pad_token_id,
        max_length=d.max_length,
        ppo_prompt_max_length=d.ppo_prompt_max_length,
        ppo_prompt_bos=d.ppo_prompt_bos,
        train_rows=train_rows,
    )
    over = sum(max(r["chosen_len"], r["rejected_len"]) > RUN_RM_MAX_LENGTH for r in bench.rows)
    report = {
        "preference": split_report(pref),
        "train": {"kept": len(train_rows)},
        "heldout": {
            "kept": len(held_rows),
            "source": "fixture file" if held else f"seeded carve-out ({d.heldout_fraction:g})",
            **({"file": split_report(held)} if held else {}),
        },
        "rewardbench": {**split_report(bench), "over_2048_tokens": over},
        "ppo_prompts": split_report(prompts, sides=("prompt",)),
        "max_length": d.max_length,
        "ppo_prompt_max_length": d.ppo_prompt_max_length,
    }
    write_json(paths.fingerprint, fingerprint)
    write_json(paths.data_report, report)

    print(
        f"prepare_data: train {len(train_rows)} pairs (dropped {report['preference']['dropped']}"
        f"), heldout {len(held_rows)}, rewardbench {len(bench.rows)}, "
        f"ppo prompts {len(prompts.rows)} -> {paths.fingerprint.parent}"
    )
    with stage_run(cfg, paths, "prepare_data") as tr:
        tr.log_params(
            {f"fingerprint.{k}": v for k, v in fingerprint.items() if not isinstance(v, dict)}
        )
        tr.log_metrics(
            {
                "train_pairs": len(train_rows),
                "heldout_pairs": len(held_rows),
                "preference_dropped": report["preference"]["dropped"],
                "rewardbench_pairs": len(bench.rows),
                "ppo_prompts": len(prompts.rows),
                **{f"dropped.{k}": v for k, v in report["preference"]["dropped_by_reason"].items()},
            }
        )
        tr.log_artifact(paths.fingerprint)
        tr.log_artifact(paths.data_report)
        for name in ("train", "heldout", "rewardbench", "ppo_prompts"):
            tr.log_file_ref(name, paths.prepared(name))
    return 0
