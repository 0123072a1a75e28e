"""Rows to token ids: EasyLM-exact formatting and tokenization of preference pairs, RewardBench
pairs and PPO prompts, the tokenizers, the fingerprint, and the readers later stages use.

Text per side is built by ``formatting.render_training`` (docs/fidelity.md §2) and
tokenized with ``add_special_tokens=False``: one BOS and the final EOS come only from the literal
strings. Pairs with a side longer than ``max_length`` are dropped, never truncated (EasyLM
``remove_truncated_samples=True``). Bad rows are counted by reason, never a crash.

Reader API (all a downstream stage needs)::

    pairs = load_pairs(paths.prepared("train"))      # PairData: .chosen/.rejected (lists of
                                                     # int32 arrays), .row, .id, .subset; len()
    prompts = load_prompts(paths.prepared("ppo_prompts"))  # PromptData: .input_ids, .row
    fp = check_fingerprint(paths.fingerprint, tokenizer_or_dir)  # refuses a different tokenizer

Parquet columns (docs/architecture.md): ``chosen_input_ids``, ``rejected_input_ids``,
``chosen_len``, ``rejected_len``, ``row`` (index of the source line); RewardBench adds ``id`` and
``subset``; PPO prompts have ``prompt_input_ids``, ``prompt_len``, ``row``.
"""

from .encode import (
    DROP_REASONS,
    FLAGS,
    Encoded,
    Encoder,
    drop_summary,
    split_heldout,
    split_report,
)
from .errors import DataError, FingerprintMismatch
from .fingerprint import IDENTITY_KEYS, build_fingerprint, check_fingerprint
from .prepared import PairData, PromptData, load_pairs, load_prompts, write_parquet
from .rows import RawRow, count_rows, iter_jsonl, read_rows
from .tokenizer import (
    PROBE,
    load_tokenizer,
    resolve_pad,
    special_strings,
    template_hash,
    tokenizer_file_hashes,
    tokenizer_identity,
)
from .validate import preference_sides, prompt_messages, rewardbench_sides

__all__ = [
    "DROP_REASONS",
    "FLAGS",
    "IDENTITY_KEYS",
    "PROBE",
    "DataError",
    "Encoded",
    "Encoder",
    "FingerprintMismatch",
    "PairData",
    "PromptData",
    "RawRow",
    "build_fingerprint",
    "check_fingerprint",
    "count_rows",
    "drop_summary",
    "iter_jsonl",
    "load_pairs",
    "load_prompts",
    "load_tokenizer",
    "preference_sides",
    "prompt_messages",
    "read_rows",
    "resolve_pad",
    "rewardbench_sides",
    "special_strings",
    "split_heldout",
    "split_report",
    "template_hash",
    "tokenizer_file_hashes",
    "tokenizer_identity",
    "write_parquet",
]
