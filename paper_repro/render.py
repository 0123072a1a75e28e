"""``paper-repro render PRESET --split NAME --rows N [--run-dir DIR]``: the exact strings and token
ids the model sees, for a person to inspect (reproduction_spec.md section 3 and pitfalls 1, 4, 5).

Reads the raw rows from ``download_data/`` and the tokenizer from ``download_base/model`` of the
run (run download-base and download-data first); renders each row with the same code as
prepare_data and prints the text (repr, so newlines are visible), the token ids and the tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import ReproConfig
from .data import iter_jsonl, load_tokenizer, special_strings
from .formatting import FormatError, render_prompt, render_training, rewardbench_messages
from .paths import RunPaths

RAW_NAME = {
    "train": "preference",
    "heldout": "preference_heldout",
    "rewardbench": "rewardbench",
    "ppo_prompts": "ppo_prompts",
}


def render_row(row: dict, split: str, cfg: ReproConfig, special) -> dict[str, str]:
    """{side name: exact text} for one raw row of ``split``."""
    if split == "ppo_prompts":
        return {"prompt": render_prompt(row["messages"], special, bos=cfg.data.ppo_prompt_bos)}
    if split == "rewardbench":
        return {
            k: render_training(rewardbench_messages(row["prompt"], row[k]), special)
            for k in ("chosen", "rejected")
        }
    return {k: render_training(row[k], special) for k in ("chosen", "rejected")}


def run(cfg: ReproConfig, args: argparse.Namespace) -> int:
    paths = RunPaths(Path(args.run_dir) if args.run_dir else Path("results") / cfg.preset)
    raw = paths.raw_data(RAW_NAME[args.split])
    if not raw.is_file() or not paths.base_model.is_dir():
        print(
            f"render: {raw} or {paths.base_model} missing; run download-base and "
            "download-data first"
        )
        return 1
    tok = load_tokenizer(paths.base_model)
    special = special_strings(tok)
    shown = 0
    for r in iter_jsonl(raw):
        if shown >= args.rows:
            break
        shown += 1
        print(f"=== {args.split} line {r.index}")
        try:
            if r.reason:
                raise FormatError(r.reason, "unreadable line")
            sides = render_row(r.value, args.split, cfg, special)
        except (FormatError, KeyError, TypeError) as exc:
            print(f"  dropped: {exc}")
            continue
        for side, text in sides.items():
            ids = tok(text, add_special_tokens=False)["input_ids"]
            print(f"--- {side}: {len(ids)} tokens")
            print(f"text:   {text!r}")
            print(f"ids:    {ids}")
            print(f"tokens: {tok.convert_ids_to_tokens(ids)}")
    return 0
