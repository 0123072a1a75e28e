"""Rendering and tokenizing rows exactly as EasyLM did, with per-reason drop accounting."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formatting import (
    FormatError,
    check_messages,
    render_prompt,
    render_training,
    rewardbench_messages,
)
from .rows import RawRow
from .tokenizer import resolve_pad, special_strings

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
PERCENTILES = (50, 90, 95, 99)
BATCH = 512  # rows tokenized per call


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
