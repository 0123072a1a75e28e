"""``paper-repro render PRESET --split NAME --rows N [--run-dir DIR]``: the exact strings and token
ids the model sees, for a person to inspect (docs/fidelity.md §2, §5, §9).

Reads the raw rows from ``download_data/`` and the tokenizer from ``download_base/model`` of the
run (run download-base and download-data first); renders each row with the same code as
prepare_data and prints the text (repr, so newlines are visible), the token ids and the tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ReproConfig
from ..provenance.paths import RunPaths
from . import (
    DataError,
    iter_jsonl,
    load_tokenizer,
    preference_sides,
    prompt_messages,
    rewardbench_sides,
    special_strings,
)
from .formatting import FormatError, render_prompt, render_training

RAW_NAME = {
    "train": "preference",
    "heldout": "preference_heldout",
    "rewardbench": "rewardbench",
    "ppo_prompts": "ppo_prompts",
}


def render_row(row: dict, split: str, cfg: ReproConfig, special) -> dict[str, str]:
    """{side name: exact text} for one raw row of ``split``, validated as prepare_data does."""
    if split == "ppo_prompts":
        bos = cfg.data.ppo_prompt_bos
        return {"prompt": render_prompt(prompt_messages(row), special, bos=bos)}
    bench = split == "rewardbench"
    sides = (rewardbench_sides if bench else preference_sides)(row)
    return {
        k: render_training(m, special, allow_empty=bench)
        for k, m in zip(("chosen", "rejected"), sides, strict=True)
    }


def run(cfg: ReproConfig, args: argparse.Namespace) -> int:
    paths = RunPaths(Path(args.run_dir) if args.run_dir else Path("results") / cfg.preset)
    raw = paths.raw_data(RAW_NAME[args.split])
    if not raw.is_file() or not paths.base_model.is_dir():
        raise DataError(
            f"{raw} or {paths.base_model} missing; run download-base and download-data first"
        )
    tok = load_tokenizer(paths.base_model)
    special = special_strings(tok)
    shown = 0
    for r in iter_jsonl(raw):
        if shown >= args.rows:
            break
        shown += 1
        print(f"=== {args.split} line {r.index + 1}")
        try:
            if r.reason:
                raise FormatError(r.reason, "unreadable line")
            sides = render_row(r.value, args.split, cfg, special)
        except FormatError as exc:
            print(f"  dropped: {exc}")
            continue
        for side, text in sides.items():
            ids = tok(text, add_special_tokens=False)["input_ids"]
            print(f"--- {side}: {len(ids)} tokens")
            print(f"text:   {text!r}")
            print(f"ids:    {ids}")
            print(f"tokens: {tok.convert_ids_to_tokens(ids)}")
    return 0
