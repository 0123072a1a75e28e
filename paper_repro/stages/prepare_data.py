"""prepare_data: tokenize exactly what EasyLM fed the model (docs/fidelity.md §2, §6, §9).

Reads ``download_data/*.jsonl`` (verified against their manifest) and the tokenizer of
``download_base/model`` (verified too); writes ``prepare_data/{train,heldout,rewardbench,
ppo_prompts}.parquet``, ``fingerprint.json``, ``data_report.json`` and ``manifest.json`` (sha256
of those six files, checked by every later stage).

Every row of every input goes through the same validation (data/rows.py, data/validate.py):
a bad row is dropped and counted by reason with its first line in ``data_report.json``, never a
crash. Exact duplicate pairs and pairs whose chosen and rejected prompts differ are kept, as
EasyLM kept them, and counted under ``kept_but_flagged``.
"""

from __future__ import annotations

from ..config import ReproConfig
from ..data import (
    DataError,
    Encoder,
    build_fingerprint,
    drop_summary,
    iter_jsonl,
    load_tokenizer,
    split_heldout,
    split_report,
    write_parquet,
)
from ..provenance.integrity import verify_inputs
from ..provenance.io import write_json
from ..provenance.manifest import write_manifest
from ..provenance.paths import RunPaths
from ..tracking import stage_run

# RewardBench pairs are never dropped for length (that would change section denominators); the
# report counts those over run_rm.py's 2048-token left truncation (docs/fidelity.md §6).
RUN_RM_MAX_LENGTH = 2048
OUTPUTS = ("train", "heldout", "rewardbench", "ppo_prompts")


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    d = cfg.data
    listed = verify_inputs(paths, "prepare_data")["download_data"]["files"]
    tok = load_tokenizer(paths.base_model)
    encoder = Encoder(tok, d.pad_token_id, d.max_length)

    pref = encoder.pairs(list(iter_jsonl(paths.raw_data("preference"))), desc="preference")
    heldout_file = paths.raw_data("preference_heldout")
    # tiny preset: the fixture's own held-out split, used only when download_data's manifest
    # lists it (a file left from an earlier fixture run must not replace the carve-out)
    if heldout_file.name in listed:
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
        raise DataError(
            f"{paths.raw_data('preference')}: no pair survived filtering "
            f"({drop_summary(split_report(pref))})"
        )

    paths.manifest("prepare_data").unlink(missing_ok=True)  # never beside newer files
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
    outputs = [paths.prepared(n) for n in OUTPUTS] + [paths.fingerprint, paths.data_report]
    write_manifest(
        paths.manifest("prepare_data"),
        paths.stage_dir("prepare_data"),
        [f.name for f in outputs],
    )

    for name in ("preference", "rewardbench", "ppo_prompts"):
        sec = report[name]
        flags = ", ".join(f"{k} {n}" for k, n in sec["kept_but_flagged"].items() if n)
        print(
            f"prepare_data: {paths.raw_data(name).name}: {sec['total']} rows, {sec['kept']} kept, "
            f"{drop_summary(sec)}" + (f"; kept but flagged: {flags}" if flags else "")
        )
    print(
        f"prepare_data: train {len(train_rows)} pairs, heldout {len(held_rows)}, rewardbench "
        f"{len(bench.rows)}, ppo prompts {len(prompts.rows)} -> {paths.fingerprint.parent}"
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
        for name in OUTPUTS:
            tr.log_file_ref(name, paths.prepared(name))
    return 0
