"""EasyLM-exact tokenization of preference pairs, RewardBench pairs and PPO prompts, the
tokenization fingerprint, and the readers later stages use.

Text per side is built by ``formatting.render_training`` (reproduction_spec.md section 3) and
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

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .formatting import (
    TULU_CHAT_TEMPLATE,
    FormatError,
    SpecialStrings,
    check_messages,
    render_prompt,
    render_training,
    rewardbench_messages,
)
from .io import atomic_path, read_json, sha256_file

# Stable drop-reason keys of the data report (issue 3). The last three extend the list:
# a line that is not JSON, a literal BOS/EOS/pad string inside a message (it would tokenize to
# the special id and break "exactly one BOS, pooled at EOS"), and a PPO prompt with no user turn.
DROP_REASONS = (
    "too_long",
    "empty_content",
    "bad_role",
    "final_turn_not_assistant",
    "missing_keys",
    "non_string_content",
    "identical_sides",
    "undecodable_text",
    "bad_json",
    "special_token_in_text",
    "no_user_turn",
)
FINGERPRINT_VERSION = 1
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)
FIRST_ROWS = 16  # rows whose token ids are hashed into the fingerprint
PERCENTILES = (50, 90, 95, 99)
BATCH = 512  # rows tokenized per call

# Probe conversations whose rendering and token ids pin the template and the tokenizer behaviour.
PROBE = [
    {"role": "system", "content": " You are helpful. "},
    {"role": "user", "content": "Héllo — naïve café? 日本語\n  x  "},
    {"role": "assistant", "content": "Sure.\n\nLine two. "},
    {"role": "user", "content": "Again"},
    {"role": "assistant", "content": "Done"},
]


class DataError(ValueError):
    """Unusable prepared data or tokenizer (names the file and the problem)."""


class FingerprintMismatch(DataError):
    """The tokenizer a stage uses is not the one the data was tokenized with."""


# --------------------------------------------------------------------------- reading raw rows


@dataclass
class RawRow:
    index: int  # 0-based line number in the source file
    value: Any = None  # parsed JSON (None when ``reason`` is set)
    reason: str | None = None


def iter_jsonl(path: str | Path) -> Iterator[RawRow]:
    """Lines of a jsonl file; undecodable or non-JSON lines come back with a drop reason."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield RawRow(i, reason="undecodable_text")
                continue
            if not text.strip():
                continue
            try:
                yield RawRow(i, json.loads(text))
            except json.JSONDecodeError:
                yield RawRow(i, reason="bad_json")


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a clean jsonl file (raises DataError naming file and line on a bad line)."""
    out = []
    for r in iter_jsonl(path):
        if r.reason:
            raise DataError(f"{path}: line {r.index + 1}: {r.reason}")
        out.append(r.value)
    return out


# --------------------------------------------------------------------------- tokenizer checks


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def special_strings(tokenizer) -> SpecialStrings:
    return SpecialStrings(bos=tokenizer.bos_token, eos=tokenizer.eos_token)


def resolve_pad(tokenizer, pad_token_id: int, source: str = "data.pad_token_id") -> str:
    """Check the configured pad id against the tokenizer and return the pad token string.

    EasyLM pads with a flag id (128255, a reserved token) because the Llama 3 SFT tokenizer has no
    pad token (spec 3.6). A tokenizer that *does* define a pad must agree with the config; the id
    must exist (pitfall 3: a new ``<pad>`` at 128256 would be out of range) and differ from
    BOS/EOS (pitfall 2: pad == EOS moves the pooled token). ``source`` names where the id comes
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


# --------------------------------------------------------------------------- encoding


@dataclass
class Encoded:
    rows: list[dict[str, Any]] = field(default_factory=list)  # kept rows (parquet records)
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, int] = field(default_factory=dict)  # reason -> first source line
    total: int = 0

    def drop(self, index: int, reason: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, index)


class Encoder:
    """Renders and tokenizes rows exactly as EasyLM did, dropping bad ones with a reason."""

    def __init__(self, tokenizer, pad_token_id: int, max_length: int):
        self.tok = tokenizer
        self.special = special_strings(tokenizer)
        self.max_length = max_length
        self.pad_token = resolve_pad(tokenizer, pad_token_id)
        self.forbidden = (self.special.bos, self.special.eos, self.pad_token)

    def _check_text(self, messages: list[dict[str, str]]) -> None:
        for i, m in enumerate(messages):
            if any(s in m["content"] for s in self.forbidden):
                raise FormatError("special_token_in_text", f"message {i} holds a special token")

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []

    def _progress(self, items: list, desc: str):
        from tqdm.auto import tqdm

        return tqdm(
            range(0, len(items), BATCH),
            desc=desc,
            unit="batch",
            leave=False,
            disable=len(items) <= BATCH,
        )

    def pairs(
        self,
        raw: list[RawRow],
        kind: str = "preference",
        desc: str = "pairs",
        drop_too_long: bool = True,
    ) -> Encoded:
        """``kind``: 'preference' (chosen/rejected message lists) or 'rewardbench' (prompt +
        chosen/rejected strings, rendered as one user and one assistant turn)."""
        enc = Encoded(total=len(raw))
        staged: list[tuple[RawRow, str, str]] = []
        for r in raw:
            if r.reason:
                enc.drop(r.index, r.reason)
                continue
            try:
                chosen, rejected = self._sides(r.value, kind)
                texts = [render_training(m, self.special) for m in (chosen, rejected)]
                for m in (chosen, rejected):
                    self._check_text(m)
            except FormatError as exc:
                enc.drop(r.index, exc.reason)
                continue
            if texts[0] == texts[1]:
                enc.drop(r.index, "identical_sides")
                continue
            staged.append((r, texts[0], texts[1]))
        for start in self._progress(staged, desc):
            chunk = staged[start : start + BATCH]
            c_ids = self._tokenize([c for _, c, _ in chunk])
            r_ids = self._tokenize([x for _, _, x in chunk])
            for (r, _, _), c, x in zip(chunk, c_ids, r_ids, strict=True):
                if drop_too_long and max(len(c), len(x)) > self.max_length:
                    enc.drop(r.index, "too_long")
                    continue
                rec = {
                    "chosen_input_ids": c,
                    "rejected_input_ids": x,
                    "chosen_len": len(c),
                    "rejected_len": len(x),
                    "row": r.index,
                }
                if kind == "rewardbench":
                    rec.update(id=int(r.value["id"]), subset=str(r.value["subset"]))
                enc.rows.append(rec)
        return enc

    @staticmethod
    def _sides(row: Any, kind: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        if not isinstance(row, dict):
            raise FormatError("missing_keys", "row is not an object")
        if kind == "rewardbench":
            if any(k not in row for k in ("prompt", "chosen", "rejected", "id", "subset")):
                raise FormatError("missing_keys", "needs prompt/chosen/rejected/id/subset")
            for k in ("chosen", "rejected"):
                if not isinstance(row[k], str):
                    raise FormatError("non_string_content", f"{k} is {type(row[k]).__name__}")
            sides = [rewardbench_messages(row["prompt"], row[k]) for k in ("chosen", "rejected")]
        else:
            if "chosen" not in row or "rejected" not in row:
                raise FormatError("missing_keys", "needs chosen and rejected")
            sides = [row["chosen"], row["rejected"]]
        return check_messages(sides[0]), check_messages(sides[1])

    def prompts(self, raw: list[RawRow], max_length: int, bos: bool) -> Encoded:
        """PPO prompts (EasyLM TuluPromptDataset): turns up to the last user turn, then
        ``<|assistant|>\\n``; no BOS unless ``bos`` (spec 9, pitfall 4); longer ones dropped."""
        enc = Encoded(total=len(raw))
        staged: list[tuple[RawRow, str]] = []
        for r in raw:
            if r.reason:
                enc.drop(r.index, r.reason)
                continue
            try:
                messages = prompt_messages(r.value)
                text = render_prompt(messages, self.special, bos=bos)
                self._check_text(messages)
            except FormatError as exc:
                enc.drop(r.index, exc.reason)
                continue
            staged.append((r, text))
        for start in self._progress(staged, "ppo prompts"):
            chunk = staged[start : start + BATCH]
            for (r, _), ids in zip(chunk, self._tokenize([t for _, t in chunk]), strict=True):
                if len(ids) > max_length:
                    enc.drop(r.index, "too_long")
                    continue
                enc.rows.append({"prompt_input_ids": ids, "prompt_len": len(ids), "row": r.index})
        return enc


def prompt_messages(row: Any) -> list[dict[str, str]]:
    """The prompt turns of a PPO prompt row, accepting the same schemas as EasyLM's
    ``TuluPromptDataset`` in its order: ``instruction`` (one user turn), ``history_messages``,
    ``messages`` / ``conversation`` (a final assistant turn is dropped), ``chosen`` (all but the
    last turn). ``render_prompt`` then keeps the turns up to the last user turn."""
    if not isinstance(row, dict):
        raise FormatError("missing_keys", "row is not an object")
    if "instruction" in row:
        return [{"role": "user", "content": row["instruction"]}]
    if "history_messages" in row:
        return row["history_messages"]
    for key in ("messages", "conversation"):
        if key in row:
            msgs = row[key]
            if (
                isinstance(msgs, list)
                and msgs
                and isinstance(msgs[-1], dict)
                and msgs[-1].get("role") == "assistant"
            ):
                return msgs[:-1]
            return msgs
    if "chosen" in row and "rejected" in row and isinstance(row["chosen"], list):
        return row["chosen"][:-1]
    raise FormatError("missing_keys", "needs instruction, messages, conversation or chosen")


def split_heldout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded held-out carve-out for real presets (off by default: EasyLM used the whole split).
    Both parts keep source order, so the train file is a subsequence of the full one."""
    n_held = int(round(len(rows) * fraction))
    if n_held == 0:
        return rows, []
    held = set(np.random.default_rng(seed).permutation(len(rows))[:n_held].tolist())
    return (
        [r for i, r in enumerate(rows) if i not in held],
        [r for i, r in enumerate(rows) if i in held],
    )


# --------------------------------------------------------------------------- report


def length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    out = {
        "count": int(a.size),
        "min": int(a.min()),
        "max": int(a.max()),
        "mean": round(float(a.mean()), 3),
    }
    out.update({f"p{p}": round(float(np.percentile(a, p)), 3) for p in PERCENTILES})
    return out


def split_report(
    enc: Encoded, sides: tuple[str, ...] = ("chosen", "rejected"), rows: list[dict] | None = None
) -> dict[str, Any]:
    rows = enc.rows if rows is None else rows
    return {
        "total": enc.total,
        "kept": len(rows),
        "dropped": sum(enc.dropped.values()),
        "dropped_by_reason": {k: enc.dropped.get(k, 0) for k in DROP_REASONS},
        "first_dropped_line": dict(sorted(enc.examples.items())),
        "token_lengths": {s: length_stats([r[f"{s}_len"] for r in rows]) for s in sides},
    }


# --------------------------------------------------------------------------- parquet I/O

PAIR_COLUMNS = ("chosen_input_ids", "rejected_input_ids", "chosen_len", "rejected_len", "row")
PROMPT_COLUMNS = ("prompt_input_ids", "prompt_len", "row")


def _schema(kind: str):
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    if kind == "prompts":
        cols = [("prompt_input_ids", ids), ("prompt_len", pa.int32()), ("row", pa.int64())]
    else:
        cols = [
            ("chosen_input_ids", ids),
            ("rejected_input_ids", ids),
            ("chosen_len", pa.int32()),
            ("rejected_len", pa.int32()),
            ("row", pa.int64()),
        ]
        if kind == "rewardbench":
            cols += [("id", pa.int64()), ("subset", pa.string())]
    return pa.schema(cols)


def write_parquet(path: str | Path, rows: list[dict], kind: str) -> None:
    """kind: 'pairs' | 'rewardbench' | 'prompts'. Deterministic bytes for the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(kind)
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=8192)


def _list_column(table, name: str) -> list[np.ndarray]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(col))]


def _read(path: str | Path, columns: tuple[str, ...]):
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prepared data not found (run prepare-data first)")
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    return table


@dataclass
class PairData:
    """Tokenized pairs: ``chosen[i]``/``rejected[i]`` are int32 id arrays (BOS ... EOS)."""

    chosen: list[np.ndarray]
    rejected: list[np.ndarray]
    row: np.ndarray
    id: np.ndarray | None = None  # RewardBench only
    subset: list[str] | None = None  # RewardBench only

    def __len__(self) -> int:
        return len(self.chosen)


@dataclass
class PromptData:
    """Tokenized PPO prompts (left-pad them for generation; no BOS by default)."""

    input_ids: list[np.ndarray]
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def load_pairs(path: str | Path) -> PairData:
    """Read train/heldout/rewardbench parquet written by prepare_data."""
    t = _read(path, PAIR_COLUMNS)
    has_rb = "id" in t.column_names
    return PairData(
        chosen=_list_column(t, "chosen_input_ids"),
        rejected=_list_column(t, "rejected_input_ids"),
        row=t.column("row").to_numpy(),
        id=t.column("id").to_numpy() if has_rb else None,
        subset=t.column("subset").to_pylist() if has_rb else None,
    )


def load_prompts(path: str | Path) -> PromptData:
    t = _read(path, PROMPT_COLUMNS)
    return PromptData(input_ids=_list_column(t, "prompt_input_ids"), row=t.column("row").to_numpy())


# --------------------------------------------------------------------------- fingerprint


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
