"""Golden strings and token ids of the EasyLM Tulu format (docs/fidelity.md §2) on the
shipped fixture tokenizer: one BOS from the string, stripped turns, EOS after every assistant
turn, no trailing newline, ``add_special_tokens=False``."""

from __future__ import annotations

import pytest

from paper_repro.data.formatting import FormatError, render_prompt, render_training

U, A, S = "user", "assistant", "system"


def conv(*turns):
    return [{"role": r, "content": c} for r, c in turns]


GOLDEN = {
    "single": (
        conv((U, "Hi there"), (A, "Hello.")),
        "<|begin_of_text|><|user|>\nHi there\n<|assistant|>\nHello.<|end_of_text|>",
        [0, 258, 280, 259, 200, 41, 74, 269, 372, 200, 258, 278, 259, 200, 41, 313, 439, 15, 1],
    ),
    "multi_turn": (
        conv((U, "Tell me about the garden."), (A, "It is green."), (U, "And?"), (A, "Nice.")),
        "<|begin_of_text|><|user|>\nTell me about the garden.\n<|assistant|>\nIt is green."
        "<|end_of_text|>\n<|user|>\nAnd?\n<|assistant|>\nNice.<|end_of_text|>",
        [
            0,
            258,
            280,
            259,
            200,
            53,
            313,
            77,
            381,
            347,
            290,
            333,
            288,
            69,
            271,
            15,
            200,
            258,
            278,
            259,
            200,
            42,
            85,
            302,
            333,
            303,
            271,
            15,
            1,
            200,
            258,
            280,
            259,
            200,
            34,
            79,
            69,
            32,
            200,
            258,
            278,
            259,
            200,
            47,
            384,
            70,
            15,
            1,
        ],
    ),
    "system": (
        conv((S, "Answer briefly."), (U, "Why?"), (A, "Because.")),
        "<|begin_of_text|><|system|>\nAnswer briefly.\n<|user|>\nWhy?\n<|assistant|>\n"
        "Because.<|end_of_text|>",
        [
            0,
            258,
            84,
            90,
            84,
            260,
            78,
            259,
            200,
            34,
            79,
            361,
            353,
            345,
            70,
            71,
            77,
            90,
            15,
            200,
            258,
            280,
            259,
            200,
            507,
            32,
            200,
            258,
            278,
            259,
            200,
            35,
            70,
            68,
            66,
            325,
            15,
            1,
        ],
    ),
    "whitespace_padded": (
        conv((U, "  Why does the bread matter?  \n"), (A, "\n It is food. \n\n")),
        "<|begin_of_text|><|user|>\nWhy does the bread matter?\n<|assistant|>\nIt is food."
        "<|end_of_text|>",
        [
            0,
            258,
            280,
            259,
            200,
            507,
            508,
            290,
            353,
            303,
            366,
            506,
            32,
            200,
            258,
            278,
            259,
            200,
            42,
            85,
            302,
            293,
            341,
            15,
            1,
        ],
    ),
    "non_ascii": (
        conv((U, "Is the café safe? ¿Sí?"), (A, "Oui — très sûr 日本.")),
        "<|begin_of_text|><|user|>\nIs the café safe? ¿Sí?\n<|assistant|>\nOui — très sûr 日本."
        "<|end_of_text|>",
        [
            0,
            258,
            280,
            259,
            200,
            493,
            290,
            503,
            281,
            356,
            70,
            32,
            222,
            128,
            125,
            52,
            129,
            257,
            32,
            200,
            258,
            278,
            259,
            200,
            48,
            86,
            74,
            222,
            160,
            224,
            244,
            266,
            83,
            129,
            103,
            84,
            281,
            129,
            121,
            83,
            222,
            164,
            247,
            100,
            164,
            252,
            107,
            15,
            1,
        ],
    ),
}


@pytest.fixture(scope="module")
def tok():
    from paper_repro.fixtures.tiny import load_tokenizer

    return load_tokenizer()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_string_and_ids(tok, name):
    messages, text, ids = GOLDEN[name]
    assert render_training(messages) == text
    got = tok(text, add_special_tokens=False)["input_ids"]
    assert got == ids
    assert got.count(tok.bos_token_id) == 1 and got[0] == tok.bos_token_id
    assert got[-1] == tok.eos_token_id and not text.endswith("\n")
    assert tok.decode(got) == text  # byte-level BPE round-trips exactly


def test_role_tags_are_not_special_tokens(tok):
    # As in Llama 3, <|user|> is ordinary text: several BPE pieces, not one special id.
    ids = tok("<|user|>", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1 and tok.bos_token_id not in ids


def test_add_special_tokens_default_would_not_double_bos(tok):
    # The fixture tokenizer adds nothing itself; EasyLM's BOS comes only from the string.
    text = GOLDEN["single"][1]
    assert tok(text)["input_ids"].count(tok.bos_token_id) == 1


def test_ppo_prompt_golden(tok):
    messages = GOLDEN["multi_turn"][0][:3]
    text = render_prompt(messages)
    assert text == (
        "<|user|>\nTell me about the garden.\n<|assistant|>\nIt is green."
        "<|end_of_text|>\n<|user|>\nAnd?\n<|assistant|>\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] != tok.bos_token_id  # EasyLM's PPO prompts carry no BOS (docs/fidelity.md §9)
    assert render_prompt(messages, bos=True) == "<|begin_of_text|>" + text
    # Rendering up to the last user turn drops a trailing assistant turn.
    assert render_prompt(GOLDEN["multi_turn"][0]) == text


@pytest.mark.parametrize(
    "messages, reason",
    [
        (conv((U, "hi"), (A, "   ")), "empty_content"),
        (conv((U, "hi"), ("bot", "x")), "bad_role"),
        (conv((A, "x"), (U, "hi")), "final_turn_not_assistant"),
        ([{"role": U}], "missing_keys"),
        ([], "missing_keys"),
        ([{"role": U, "content": 3}, {"role": A, "content": "x"}], "non_string_content"),
        (conv((U, "bad \ud800 surrogate"), (A, "x")), "undecodable_text"),
    ],
)
def test_format_errors_carry_reason(messages, reason):
    with pytest.raises(FormatError) as exc:
        render_training(messages)
    assert exc.value.reason == reason
