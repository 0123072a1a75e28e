"""Rendering and tokenizing rows exactly as EasyLM did, with per-reason drop accounting."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formatting import FormatError, render_prompt, render_training
from .rows import RawRow
from .tokenizer import resolve_pad, special_strings
from .validate import preference_sides, prompt_messages, rewardbench_sides

# Stable drop-reason keys of the data report. Line level (data/rows.py): undecodable_text,
# bad_json, too_large, too_deep, duplicate_keys, bad_number. Row level (data/validate.py): missing_keys,
# null_field, wrong_type and the conversation checks. Then: identical sides, a literal BOS/EOS/pad
# string inside a message (it would tokenize to the special id and break "exactly one BOS, pooled
# at EOS"), a PPO prompt with no user turn, and too_long (EasyLM remove_truncated_samples).
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
    "null_field",
    "wrong_type",
    "duplicate_keys",
    "too_deep",
    "too_large",
    "bad_number",
)
# Rows that are kept but counted. EasyLM's PreferenceDataset keeps both: it reads every line
# without deduplication and tokenizes chosen and rejected independently, never comparing their
# prompts (EasyLM data.py @ dbf2212, JsonTorchDataset.__init__ lines 558-588 and
# PreferenceDataset._process_sample lines 757-794), so the trained model saw them. RewardBench's
# scoring likewise keeps every row of the split.
FLAGS = ("duplicate_pair", "prompt_mismatch")
PERCENTILES = (50, 90, 95, 99)
BATCH = 512  # rows tokenized per call


@dataclass
class Encoded:
    rows: list[dict[str, Any]] = field(default_factory=list)  # kept rows (parquet records)
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, int] = field(default_factory=dict)  # reason -> first source line (0-based)
    flagged: Counter = field(default_factory=Counter)  # kept rows by FLAGS key
    flag_examples: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def drop(self, index: int, reason: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, index)

    def flag(self, index: int, kind: str) -> None:
        self.flagged[kind] += 1
        self.flag_examples.setdefault(kind, index)


def _pair_key(chosen: Any, rejected: Any) -> bytes:
    return hashlib.sha256(json.dumps([chosen, rejected], sort_keys=True).encode()).digest()


class Encoder:
    """Renders and tokenizes rows exactly as EasyLM did, dropping bad ones with a reason."""

    def __init__(self, tokenizer, pad_token_id: int | None, max_length: int):
        """``pad_token_id`` None: a model without a pad of its own (evaluating someone else's
        RM); only the BOS and EOS strings are then forbidden in text."""
        self.tok = tokenizer
        self.special = special_strings(tokenizer)
        self.max_length = max_length
        self.pad_token = None if pad_token_id is None else resolve_pad(tokenizer, pad_token_id)
        self.forbidden = tuple(
            s for s in (self.special.bos, self.special.eos, self.pad_token) if s is not None
        )

    def _check_text(self, messages: list[dict[str, str]]) -> None:
        for i, m in enumerate(messages):
            if any(s in m["content"] for s in self.forbidden):
                raise FormatError("special_token_in_text", f"message {i} holds a special token")

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []

    def _progress(self, items: list, desc: str):
        from ..progress import progress

        return progress(
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
        chosen/rejected strings, rendered as one user and one assistant turn; only malformed
        rows are dropped, so every valid row is scored as reward-bench does)."""
        bench = kind == "rewardbench"
        enc = Encoded(total=len(raw))
        staged: list[tuple[RawRow, str, str]] = []
        seen: set[bytes] = set()
        for r in raw:
            if r.reason:
                enc.drop(r.index, r.reason)
                continue
            try:
                chosen, rejected = (rewardbench_sides if bench else preference_sides)(r.value)
                texts = [
                    render_training(m, self.special, allow_empty=bench) for m in (chosen, rejected)
                ]
                if not bench:
                    for m in (chosen, rejected):
                        self._check_text(m)
            except FormatError as exc:
                enc.drop(r.index, exc.reason)
                continue
            if texts[0] == texts[1] and not bench:  # RewardBench: a tie, scored as wrong
                enc.drop(r.index, "identical_sides")
                continue
            key = _pair_key(chosen, rejected)
            if key in seen:
                enc.flag(r.index, "duplicate_pair")
            seen.add(key)
            if chosen[:-1] != rejected[:-1]:
                enc.flag(r.index, "prompt_mismatch")
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
                if bench:
                    rec.update(id=r.value["id"], subset=r.value["subset"])
                enc.rows.append(rec)
        return enc

    def prompts(self, raw: list[RawRow], max_length: int, bos: bool) -> Encoded:
        """PPO prompts (EasyLM TuluPromptDataset): turns up to the last user turn, then
        ``<|assistant|>\\n``; no BOS unless ``bos`` (docs/fidelity.md §9); longer ones dropped."""
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
    """Counts of one input file. Line numbers are 1-based, as an editor shows them."""
    rows = enc.rows if rows is None else rows
    return {
        "total": enc.total,
        "kept": len(rows),
        "dropped": sum(enc.dropped.values()),
        "dropped_by_reason": {k: enc.dropped.get(k, 0) for k in DROP_REASONS},
        "first_dropped_line": {k: i + 1 for k, i in sorted(enc.examples.items())},
        "kept_but_flagged": {k: enc.flagged.get(k, 0) for k in FLAGS},
        "first_flagged_line": {k: i + 1 for k, i in sorted(enc.flag_examples.items())},
        "token_lengths": {s: length_stats([r[f"{s}_len"] for r in rows]) for s in sides},
    }


def drop_summary(report: dict[str, Any]) -> str:
    """'3 dropped (bad_json 2, first line 7; ...)' of a split_report, for the stage log."""
    first = report["first_dropped_line"]
    parts = [f"{k} {n}, first line {first[k]}" for k, n in report["dropped_by_reason"].items() if n]
    return f"{report['dropped']} dropped" + (f" ({'; '.join(parts)})" if parts else "")
