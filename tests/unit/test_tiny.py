"""The tiny tokenizer mirrors Llama 3's special-token behaviour."""

import pytest

from paper_repro.data.formatting import render_training
from paper_repro.fixtures.tiny import VOCAB_SIZE, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_special_ids(tok):
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, VOCAB_SIZE - 1)
    assert len(tok) == VOCAB_SIZE


def test_literal_bos_eos_are_single_ids_and_role_markers_are_not_special(tok):
    text = render_training(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids.count(tok.bos_token_id) == 1 and ids.count(tok.eos_token_id) == 1
    assert len(tok("<|user|>", add_special_tokens=False)["input_ids"]) > 1


def test_pad_never_occurs_in_fixture_text(tok):
    from paper_repro.fixtures.tiny import FIXTURE_DIR

    text = (FIXTURE_DIR / "preference_train.jsonl").read_text()
    assert tok.pad_token_id not in tok(text, add_special_tokens=False)["input_ids"]


def test_chat_template_is_tulu(tok):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    # the HF template (docs/fidelity.md §5): no BOS, EOS then a trailing newline
    assert (
        tok.apply_chat_template(msgs, tokenize=False)
        == "<|user|>\nHi\n<|assistant|>\nYo<|end_of_text|>\n"
    )


def test_building_the_tiny_base_reports_progress_in_a_log(tmp_path, monkeypatch):
    """Off a terminal (a stage log): plain lines with the step count, steps/s, dialogues/s and
    the loss; no carriage-return refreshes."""
    import io

    from paper_repro.config import TinyArch
    from paper_repro.data import read_rows
    from paper_repro.fixtures.tiny import FIXTURE_DIR, build_tiny_base

    class Log(io.StringIO):
        def isatty(self) -> bool:
            return False

    monkeypatch.setenv("PAPER_REPRO_PROGRESS_S", "0")
    arch = TinyArch(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=2, sft_steps=4, sft_batch=2)  # fmt: skip
    rows = read_rows(FIXTURE_DIR / "preference_train.jsonl")[:8]
    log = Log()
    build_tiny_base(tmp_path / "base", arch, rows, stream=log)
    assert (tmp_path / "base" / "model.safetensors").is_file()
    text = log.getvalue()
    assert "\r" not in text
    last = text.splitlines()[-1]
    assert last.startswith("tiny SFT base: 4/4 step")
    assert "step/s" in last or "s/step" in last  # tqdm inverts a rate below 1/s
    assert "loss=" in last and "dialogues=" in last and "dialogues=n/a" not in last


def test_numbers_are_split_off_without_their_space_as_in_llama3(tok):
    from paper_repro.fixtures import arithmetic

    # Llama 3's pre-tokenizer isolates runs of up to 3 digits; so an operand is one and the same
    # token in the question and in the answer, which is what lets the tiny base copy it.
    asked = tok.tokenize(arithmetic.question(3, 4))
    answered = tok.tokenize(arithmetic.answer(3, 4, 7))
    assert "3" in asked and "4" in asked and answered[0] == "3" and "7" in answered
    assert tok.tokenize("1234") == tok.tokenize("123") + tok.tokenize("4")
