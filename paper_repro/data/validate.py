"""What a valid row of each upstream schema is; a bad row raises ``FormatError`` whose ``reason``
is a stable drop-reason key of the data report.

Field reasons: ``missing_keys`` (a required key absent), ``null_field`` (present but null),
``wrong_type`` (another JSON type, e.g. RewardBench ``id: "abc"``); inside a conversation
``formatting.check_messages`` adds ``bad_role``, ``non_string_content``, ``empty_content``, ...
"""

from __future__ import annotations

from typing import Any

from .formatting import FormatError, check_messages, rewardbench_messages


def _field(row: Any, key: str, types: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(row, dict):
        raise FormatError("wrong_type", f"row is {type(row).__name__}, not an object")
    if key not in row:
        raise FormatError("missing_keys", f"no '{key}'")
    value = row[key]
    if value is None:
        raise FormatError("null_field", f"'{key}' is null")
    if not isinstance(value, types) or isinstance(value, bool):
        raise FormatError("wrong_type", f"'{key}' is {type(value).__name__}, not {what}")
    return value


def preference_sides(row: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """chosen and rejected message lists of a tulu-2.5-preference-data row, each validated."""
    chosen = _field(row, "chosen", list, "a message list")
    rejected = _field(row, "rejected", list, "a message list")
    return check_messages(chosen), check_messages(rejected)


def rewardbench_sides(row: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A reward-bench row (prompt, chosen, rejected, id: int, subset: str) as two conversations.

    Only the row's structure is checked: reward-bench's own scoring keeps every row of the split,
    empty responses and identical sides (a tie, scored wrong) included, so nothing else may drop
    one here or the section denominators would differ from the official code's."""
    if not -(2**63) <= _field(row, "id", int, "an integer") < 2**63:
        raise FormatError("wrong_type", "'id' is outside the int64 range of reward-bench's ids")
    _field(row, "subset", str, "a string")
    prompt = _field(row, "prompt", (str, list), "a string or message list")
    sides = []
    for key in ("chosen", "rejected"):
        messages = rewardbench_messages(prompt, _field(row, key, str, "a string"))
        sides.append(check_messages(messages, allow_empty=True))
    return sides[0], sides[1]


def prompt_messages(row: Any) -> list[dict[str, str]]:
    """The prompt turns of a PPO prompt row, accepting the same schemas as EasyLM's
    ``TuluPromptDataset`` in its order: ``instruction`` (one user turn), ``history_messages``,
    ``messages`` / ``conversation`` (a final assistant turn is dropped), ``chosen`` (all but the
    last turn). ``render_prompt`` then keeps the turns up to the last user turn."""
    if not isinstance(row, dict):
        raise FormatError("wrong_type", f"row is {type(row).__name__}, not an object")
    if "instruction" in row:
        return [{"role": "user", "content": _field(row, "instruction", str, "a string")}]
    if "history_messages" in row:
        return _field(row, "history_messages", list, "a message list")
    for key in ("messages", "conversation"):
        if key in row:
            msgs = _field(row, key, list, "a message list")
            if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
                return msgs[:-1]
            return msgs
    if "chosen" in row and "rejected" in row:
        return _field(row, "chosen", list, "a message list")[:-1]
    raise FormatError("missing_keys", "needs instruction, messages, conversation or chosen")
