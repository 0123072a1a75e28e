"""EasyLM's Tulu text format, exactly (docs/fidelity.md §2; EasyLM `data.py`,
`TuluJsonTorchDataset.encode_with_messages_format` and `TuluPromptDataset`).

Training side: every message's content is stripped; system/user turns are ``<|role|>\\n`` + content
+ ``\\n``; assistant turns also carry the EOS *string* before their ``\\n``; the whole string is
stripped (dropping the newline after the final EOS) and the BOS *string* is prepended. Tokenize
with ``add_special_tokens=False``: BOS/EOS come only from the literal strings.

The tokenizer's HF chat template (Tulu) differs on purpose: no BOS, unstripped content and a
trailing newline after EOS (docs/fidelity.md §5). ``TULU_CHAT_TEMPLATE`` is shipped with
exported models for users; the training format is built here by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")

# The Tulu 2 chat template of open-instruct / the Tulu 2.5 tokenizers (docs/fidelity.md §5): a newline
# after every expression; with HF's trim_blocks it renders "...RESPONSE<eos>\n" (no BOS).
TULU_CHAT_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'system' %}\n"
    "{{ '<|system|>\\n' + message['content'] }}\n"
    "{% elif message['role'] == 'user' %}\n"
    "{{ '<|user|>\\n' + message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)


class FormatError(ValueError):
    """A conversation that cannot be rendered; ``reason`` is a stable drop-reason key."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class SpecialStrings:
    bos: str | None = "<|begin_of_text|>"
    eos: str = "<|end_of_text|>"


def check_messages(
    messages: Any, *, final_role: str | None = "assistant", allow_empty: bool = False
) -> list[dict[str, str]]:
    """Validate a message list; raises FormatError with a drop-reason key. ``allow_empty``
    keeps whitespace-only contents (RewardBench scores every row as it is)."""
    if not isinstance(messages, list) or not messages:
        raise FormatError("missing_keys", "messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise FormatError("wrong_type", f"message {i} is {type(m).__name__}, not an object")
        if "role" not in m or "content" not in m:
            raise FormatError("missing_keys", f"message {i} lacks role/content")
        role, content = m["role"], m["content"]
        if role is None or content is None:
            raise FormatError("null_field", f"message {i} has a null role or content")
        if role not in ROLES:
            raise FormatError("bad_role", f"message {i} has role {role!r}")
        if not isinstance(content, str):
            raise FormatError(
                "non_string_content", f"message {i} content is {type(content).__name__}"
            )
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FormatError("undecodable_text", f"message {i}: {exc.reason}") from None
        if not content.strip() and not allow_empty:
            raise FormatError("empty_content", f"message {i} ({role}) is empty")
        out.append({"role": role, "content": content})
    if final_role is not None and out[-1]["role"] != final_role:
        raise FormatError("final_turn_not_assistant", f"last turn is {out[-1]['role']!r}")
    return out


def _render_turns(messages: Sequence[dict[str, str]], eos: str) -> str:
    parts = []
    for m in messages:
        content = m["content"].strip()
        if m["role"] == "assistant":
            parts.append(f"<|assistant|>\n{content}{eos}\n")
        else:
            parts.append(f"<|{m['role']}|>\n{content}\n")
    return "".join(parts)


def render_training(
    messages: Sequence[dict[str, str]],
    special: SpecialStrings = SpecialStrings(),
    *,
    allow_empty: bool = False,
) -> str:
    """BOS + Tulu turns, stripped: ``<bos><|user|>\\nP\\n<|assistant|>\\nR<eos>``."""
    msgs = check_messages(list(messages), allow_empty=allow_empty)
    # a tokenizer without a BOS token (GPT-2 style, someone else's RM): no BOS to start with
    return (special.bos or "") + _render_turns(msgs, special.eos).strip()


def render_prompt(
    messages: Sequence[dict[str, str]],
    special: SpecialStrings = SpecialStrings(),
    *,
    bos: bool = False,
) -> str:
    """PPO prompt: turns up to the last user turn, then ``<|assistant|>\\n`` (EasyLM
    TuluPromptDataset; no BOS by default, as EasyLM's PPO tokenised prompts, docs/fidelity.md §9)."""
    msgs = list(messages)
    last_user = max(
        (i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "user"),
        default=-1,
    )
    if last_user < 0:
        raise FormatError("no_user_turn", "prompt has no user turn")
    msgs = check_messages(msgs[: last_user + 1], final_role="user")
    return (special.bos if bos else "") + _render_turns(msgs, special.eos) + "<|assistant|>\n"


def rewardbench_messages(prompt: str | list[dict[str, str]], response: str) -> list[dict[str, str]]:
    """A RewardBench pair side as a conversation: the prompt as the user turn (or the given turns
    for prior sets), the response as the final assistant turn."""
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return turns + [{"role": "assistant", "content": response}]
