"""The tokenizer a run uses: loading, the pad-id rules and the identity that pins it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..provenance.io import sha256_file
from .errors import DataError
from .formatting import TULU_CHAT_TEMPLATE, SpecialStrings, render_prompt, render_training

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)

# Probe conversations whose rendering and token ids pin the template and the tokenizer behaviour.
PROBE = [
    {"role": "system", "content": " You are helpful. "},
    {"role": "user", "content": "Héllo — naïve café? 日本語\n  x  "},
    {"role": "assistant", "content": "Sure.\n\nLine two. "},
    {"role": "user", "content": "Again"},
    {"role": "assistant", "content": "Done"},
]


def load_tokenizer(path: str | Path):
    """The tokenizer of model folder ``path``, parsed from the bytes its manifest vouches for."""
    from transformers import AutoTokenizer

    from ..provenance.verified import checked_copy

    with checked_copy(Path(path)) as copy:
        tok = AutoTokenizer.from_pretrained(str(copy))
    tok.name_or_path = str(path)
    return tok


def special_strings(tokenizer) -> SpecialStrings:
    return SpecialStrings(bos=tokenizer.bos_token, eos=tokenizer.eos_token)


def resolve_pad(tokenizer, pad_token_id: int, source: str = "data.pad_token_id") -> str:
    """Check the configured pad id against the tokenizer and return the pad token string.

    EasyLM pads with a flag id (128255, a reserved token) because the Llama 3 SFT tokenizer has no
    pad token (docs/fidelity.md §2). A tokenizer that *does* define a pad must agree with the config; the id
    must exist (a new ``<pad>`` at 128256 would be out of range) and differ from
    BOS/EOS (pad == EOS moves the pooled token). ``source`` names where the id comes
    from in the messages."""
    vocab = len(tokenizer)
    if not 0 <= pad_token_id < vocab:
        raise DataError(f"{source} {pad_token_id} is outside the vocabulary (size {vocab})")
    if pad_token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        raise DataError(f"{source} {pad_token_id} equals BOS/EOS; pooling would move")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != pad_token_id:
        raise DataError(
            f"{source} {pad_token_id} != the tokenizer's pad id {tokenizer.pad_token_id} "
            f"({tokenizer.pad_token!r})"
        )
    return tokenizer.convert_ids_to_tokens(pad_token_id)


def _ids_hash(seqs: Iterable[Iterable[int]]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        h.update(np.asarray(list(s), dtype="<i8").tobytes())
        h.update(b"|")
    return h.hexdigest()


def template_hash() -> str:
    """sha256 of what the formatter renders for the probe conversation (training side, PPO prompt
    with and without BOS) plus the shipped HF chat template: changes with any format change."""
    rendered = [
        render_training(PROBE),
        render_prompt(PROBE[:4]),
        render_prompt(PROBE[:4], bos=True),
        TULU_CHAT_TEMPLATE,
    ]
    return hashlib.sha256(json.dumps(rendered).encode()).hexdigest()


def tokenizer_identity(tokenizer, pad_token_id: int) -> dict[str, Any]:
    """What must match between the data and a later stage's tokenizer: special ids, vocabulary
    and the ids of the rendered probe. Robust to re-saving (file bytes may differ)."""
    pad_token = resolve_pad(tokenizer, pad_token_id)
    vocab = sorted(tokenizer.get_vocab().items())
    special = special_strings(tokenizer)
    probe_texts = [render_training(PROBE, special), render_prompt(PROBE[:4], special)]
    probe_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in probe_texts]
    return {
        "bos_token": tokenizer.bos_token,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token": pad_token,
        "pad_token_id": pad_token_id,
        "vocab_size": len(tokenizer),
        "vocab_hash": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
        "probe_ids_hash": _ids_hash(probe_ids),
        "template_hash": template_hash(),
        "add_special_tokens": False,
    }


def tokenizer_file_hashes(folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    return {n: sha256_file(folder / n) for n in TOKENIZER_FILES if (folder / n).is_file()}
