"""The shipped fixtures are reproducible bit for bit, and their rows have the upstream schemas
the data stages read."""

from __future__ import annotations

import pytest

from paper_repro.data import prompt_messages, read_rows
from paper_repro.data.formatting import FormatError, render_prompt
from paper_repro.fixtures.tiny import FIXTURE_DIR


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


def test_arithmetic_pairs_prefer_the_right_sum_of_every_problem():
    from paper_repro.fixtures import arithmetic
    from paper_repro.fixtures.tiny import sft_rows

    rows = sft_rows(read_rows(FIXTURE_DIR / "preference_train.jsonl"))  # the hand-made rows
    arith = [r for r in rows if r["source"] == "fixture-arithmetic"]
    seen = set()
    for r in arith:
        assert r["chosen"][:-1] == r["rejected"][:-1]  # same question
        (q,) = (m["content"] for m in r["chosen"] if m["role"] == "user")
        a, b = (int(x) for x in q.removeprefix("What is ").removesuffix("?").split(" + "))
        assert arithmetic.extract(r["chosen"][-1]["content"]) == a + b
        assert arithmetic.extract(r["rejected"][-1]["content"]) != a + b
        seen.add((a, b))
    assert seen == set(arithmetic.problems()) and 0.2 < len(arith) / len(rows) < 0.4


def test_unseen_quality_words_never_occur_in_training():
    import re

    from paper_repro.fixtures.generate import UNSEEN_BAD, UNSEEN_GOOD

    words = set(re.findall(r"[a-z]+", (FIXTURE_DIR / "preference_train.jsonl").read_text().lower()))
    assert not words & set(UNSEEN_GOOD + UNSEEN_BAD)
    bench = (FIXTURE_DIR / "rewardbench_filtered.jsonl").read_text().lower()
    assert all(w in bench for w in UNSEEN_GOOD + UNSEEN_BAD)  # but RewardBench uses them
