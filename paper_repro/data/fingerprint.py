"""The tokenization fingerprint: written with the prepared data, checked by every later stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..provenance.io import read_json
from .errors import DataError, FingerprintMismatch
from .tokenizer import _ids_hash, load_tokenizer, tokenizer_file_hashes, tokenizer_identity

FINGERPRINT_VERSION = 1
FIRST_ROWS = 16  # rows whose token ids are hashed into the fingerprint


def build_fingerprint(
    tokenizer,
    tokenizer_dir: str | Path,
    *,
    pad_token_id: int,
    max_length: int,
    ppo_prompt_max_length: int,
    ppo_prompt_bos: bool,
    train_rows: list[dict],
) -> dict[str, Any]:
    first = train_rows[:FIRST_ROWS]
    return {
        "version": FINGERPRINT_VERSION,
        **tokenizer_identity(tokenizer, pad_token_id),
        "format": "easylm-tulu: BOS + stripped turns, assistant turns end in EOS, no trailing newline",
        "truncation": {
            "policy": "drop",
            "side": "none",
            "max_length": max_length,
            "ppo_prompt_max_length": ppo_prompt_max_length,
        },
        "max_length": max_length,
        "ppo_prompt_bos": ppo_prompt_bos,
        "padding": {"train": "right", "ppo_prompts": "left"},
        "tokenizer_files": tokenizer_file_hashes(tokenizer_dir),
        "first_rows": len(first),
        "first_rows_ids_hash": _ids_hash(
            s for r in first for s in (r["chosen_input_ids"], r["rejected_input_ids"])
        ),
    }


IDENTITY_KEYS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "vocab_size",
    "vocab_hash",
    "probe_ids_hash",
    "template_hash",
)


def check_fingerprint(
    fingerprint_path: str | Path, tokenizer_or_dir: Any, *, strict_files: bool = False
) -> dict[str, Any]:
    """Refuse to go on when ``tokenizer_or_dir`` (a tokenizer or a folder holding one) is not the
    tokenizer the data was prepared with. Compares special ids, vocabulary, the probe's token ids
    and the template hash; ``strict_files`` also compares the tokenizer files' sha256 (needs a
    folder). Returns the fingerprint dict."""
    fingerprint_path = Path(fingerprint_path)
    if not fingerprint_path.is_file():
        raise DataError(f"{fingerprint_path}: fingerprint not found (run prepare-data first)")
    fp = read_json(fingerprint_path)
    folder = None
    tok = tokenizer_or_dir
    if isinstance(tokenizer_or_dir, str | Path):
        folder = Path(tokenizer_or_dir)
        tok = load_tokenizer(folder)
    try:
        now = tokenizer_identity(tok, fp["pad_token_id"])
    except DataError as exc:
        raise FingerprintMismatch(f"{fingerprint_path}: {exc}") from None
    diffs = [
        f"{k}: data {fp.get(k)!r} vs tokenizer {now[k]!r}"
        for k in IDENTITY_KEYS
        if fp.get(k) != now[k]
    ]
    if strict_files:
        if folder is None:
            raise ValueError("strict_files needs a tokenizer folder")
        files = tokenizer_file_hashes(folder)
        diffs += [
            f"file {n}: data {h[:12]} vs {files.get(n, 'missing')[:12]}"
            for n, h in fp["tokenizer_files"].items()
            if files.get(n) != h
        ]
    if diffs:
        where = f" ({folder})" if folder else ""
        raise FingerprintMismatch(
            f"{fingerprint_path}: the tokenizer{where} does not match the prepared data; "
            "re-run prepare-data with this tokenizer. " + "; ".join(diffs)
        )
    return fp
