"""The shipped fixtures are reproducible bit for bit, and their rows have the upstream schemas
the data stages read."""

from __future__ import annotations

import pytest

from paper_repro.data import prompt_messages, read_rows
from paper_repro.formatting import FormatError, render_prompt
from paper_repro.tiny import FIXTURE_DIR


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_generator_reproduces_shipped_fixtures(tmp_path):
    from paper_repro.fixtures.generate import generate

    generate(tmp_path)
    shipped = _files(FIXTURE_DIR)
    assert _files(tmp_path) == shipped and "tokenizer/tokenizer.json" in shipped
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (FIXTURE_DIR / name).read_bytes(), name


def test_fixture_schemas():
    pref = read_rows(FIXTURE_DIR / "preference_train.jsonl")[0]
    assert set(pref) == {"chosen", "rejected", "source", "margin"}
    bench = read_rows(FIXTURE_DIR / "rewardbench_filtered.jsonl")[0]
    assert set(bench) == {
        "prompt",
        "chosen",
        "chosen_model",
        "rejected",
        "rejected_model",
        "subset",
        "id",
    }
    prompt = read_rows(FIXTURE_DIR / "ppo_prompts.jsonl")[0]
    assert "messages" in prompt and prompt["messages"][-1]["role"] == "user"


U = {"role": "user", "content": "Hi"}
A = {"role": "assistant", "content": "Hello"}
EXPECTED = "<|user|>\nHi\n<|assistant|>\n"


@pytest.mark.parametrize(
    "row",
    [
        {"instruction": "Hi"},
        {"history_messages": [U]},
        {"messages": [U]},
        {"messages": [U, A]},  # a final assistant turn is dropped (EasyLM TuluPromptDataset)
        {"conversation": [U, A]},
        {"chosen": [U, A], "rejected": [U, A]},
    ],
)
def test_prompt_schemas_accepted_like_easylm(row):
    assert render_prompt(prompt_messages(row)) == EXPECTED


def test_prompt_without_known_keys_is_dropped():
    with pytest.raises(FormatError) as exc:
        prompt_messages({"text": "Hi"})
    assert exc.value.reason == "missing_keys"
