"""The real Llama 3 tokenizer, built offline: equal to Meta's reference encoder, and the EasyLM
text on it (one BOS however the tokenizer is called, EOS 128001 per assistant turn, pad 128255
never produced by text, the render fingerprint, the length filter in real tokens)."""

from __future__ import annotations

import pytest

from paper_repro.data import Encoder, RawRow, tokenizer_identity
from paper_repro.data import llama3_tokenizer as l3
from paper_repro.data.formatting import render_prompt, render_training

CONVERSATION = [
    {"role": "system", "content": " Be brief. "},
    {"role": "user", "content": "Héllo — naïve café? 東京 😀\n  x  "},
    {"role": "assistant", "content": "Sure.\n\nLine two. "},
    {"role": "user", "content": "I'm   don't   WE'LL 1234567"},
    {"role": "assistant", "content": "def f(x):\n    return x**2\t# done"},
]
STRINGS = [
    "Hello world",
    " Hello  world\n\n",
    "naïve café — 東京 😀 1234567",
    "I'm   don't   WE'LL",
    "\t\ttabs\r\n\r\nnl",
    "a" * 1000,
    "".join(chr(c) for c in range(32, 600)),
    "<|user|>\nWhat is 2+2?\n<|assistant|>\n4<|end_of_text|>",
    render_training(CONVERSATION),
]


def row(answer="A clear answer.", prompt="Question?"):
    def side(a):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": a}]

    return {"chosen": side(answer), "rejected": side(answer + " Really."), "margin": 1.0}


def test_equal_to_metas_reference_encoder(llama3_tok):
    """meta-llama/llama3 llama/tokenizer.py builds a tiktoken.Encoding from the same file, regex
    and special tokens: every id and every round trip must agree."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ref = tiktoken.Encoding(
        name="llama3",
        pat_str=l3.PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(l3.tokenizer_model())),
        special_tokens={s: l3.NUM_BASE_TOKENS + i for i, s in enumerate(l3.SPECIAL_TOKENS)},
    )
    for s in STRINGS:
        ids = llama3_tok(s, add_special_tokens=False)["input_ids"]
        assert ids == ref.encode(s, allowed_special="all"), s[:40]
        assert llama3_tok.decode(ids) == ref.decode(ids) == s
    assert ref.n_vocab == len(llama3_tok) == 128256


def test_special_tokens_at_their_llama3_ids(llama3_tok):
    t = llama3_tok
    assert (t.bos_token_id, t.eos_token_id, t.pad_token_id) == (128000, 128001, 128255)
    named = {
        "<|begin_of_text|>": 128000,
        "<|end_of_text|>": 128001,
        "<|reserved_special_token_3|>": 128005,
        "<|start_header_id|>": 128006,
        "<|end_header_id|>": 128007,
        "<|reserved_special_token_4|>": 128008,
        "<|eot_id|>": 128009,
        "<|reserved_special_token_5|>": 128010,
        "<|reserved_special_token_250|>": 128255,
    }
    assert {n: t.convert_tokens_to_ids(n) for n in named} == named
    assert t.pad_token == "<|reserved_special_token_250|>"
    assert all(t.added_tokens_decoder[i].special for i in range(128000, 128256))
    assert t("Hello world")["input_ids"] == [128000, 9906, 1917]  # BOS prepended by default
    # the Tulu role markers are ordinary text, not special tokens
    assert t("<|user|>\n", add_special_tokens=False)["input_ids"] == [27, 91, 882, 91, 397]


def test_exactly_one_bos_however_it_is_called(llama3_tok):
    """The double-BOS pitfall: the EasyLM text carries the BOS string and the Llama 3 tokenizer
    prepends BOS again when add_special_tokens is on; every path of ours ends with one BOS."""
    from paper_repro.rewardbench.inputs import template_ids

    text = render_training(CONVERSATION)
    assert llama3_tok(text)["input_ids"][:2] == [128000, 128000]  # the pitfall is real here
    ids = llama3_tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 128000 and ids.count(128000) == 1
    # prepare_data's encoder
    enc = Encoder(llama3_tok, 128255, 4096).pairs([RawRow(1, row())])
    for side in (enc.rows[0]["chosen_input_ids"], enc.rows[0]["rejected_input_ids"]):
        assert side[0] == 128000 and side.count(128000) == 1
    # PPO prompts: none by default (as EasyLM's PPO), exactly one when asked
    enc = Encoder(llama3_tok, 128255, 4096)
    no_bos = enc.prompts([RawRow(1, {"instruction": "Hi"})], 64, bos=False).rows[0]
    with_bos = enc.prompts([RawRow(1, {"instruction": "Hi"})], 64, bos=True).rows[0]
    assert 128000 not in no_bos["prompt_input_ids"]
    assert with_bos["prompt_input_ids"] == [128000, *no_bos["prompt_input_ids"]]
    # eval tokenizer-template mode: the template adds none, the tokenizer adds the one
    ids, how = template_ids(llama3_tok, CONVERSATION[1:3])
    assert how == "tokenizer" and ids[0] == 128000 and ids.count(128000) == 1


def test_eos_ends_every_assistant_turn(llama3_tok):
    ids = llama3_tok(render_training(CONVERSATION), add_special_tokens=False)["input_ids"]
    newline = llama3_tok("\n", add_special_tokens=False)["input_ids"]
    eos_at = [i for i, t in enumerate(ids) if t == 128001]
    assert len(eos_at) == 2 and eos_at[-1] == len(ids) - 1  # one per assistant turn, last token
    assert ids[eos_at[0] + 1 : eos_at[0] + 1 + len(newline)] == newline  # then the next turn
    assert 128009 not in ids  # <|eot_id|> is the Llama 3 Instruct format, not Tulu's
    prompt = llama3_tok(render_prompt(CONVERSATION[:4]), add_special_tokens=False)["input_ids"]
    assert prompt.count(128001) == 1  # the earlier assistant turn's EOS only


def test_pad_never_produced_by_text(llama3_tok):
    from paper_repro.fixtures.tiny import FIXTURE_DIR

    for name in ("preference_train.jsonl", "rewardbench_filtered.jsonl", "ppo_prompts.jsonl"):
        text = (FIXTURE_DIR / name).read_text()
        assert 128255 not in llama3_tok(text, add_special_tokens=False)["input_ids"], name
    hostile = row(answer="pad here: <|reserved_special_token_250|>")
    enc = Encoder(llama3_tok, 128255, 4096).pairs([RawRow(3, hostile)])
    assert enc.rows == [] and enc.dropped == {"special_token_in_text": 1}


def test_render_fingerprint(llama3_tok):
    """The tokenizer identity prepare_data writes and every later stage checks. The probe ids
    are pinned: a tokenizers/transformers change that moves one id fails here first."""
    from paper_repro.fixtures.tiny import load_tokenizer

    ident = tokenizer_identity(llama3_tok, 128255)
    assert {k: ident[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")} == {
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "pad_token_id": 128255,
    }
    assert ident["vocab_size"] == 128256 and ident["pad_token"] == "<|reserved_special_token_250|>"
    assert ident["probe_ids_hash"] == PROBE_IDS_HASH
    assert ident["vocab_hash"] == VOCAB_HASH
    tiny = tokenizer_identity(load_tokenizer(), 511)
    assert tiny["template_hash"] == ident["template_hash"]  # same text format
    assert tiny["probe_ids_hash"] != ident["probe_ids_hash"]


def test_length_filter_counts_real_tokens(llama3_tok):
    r = row(answer="Tokens, not characters: 東京 😀 1234567 " * 3)
    n = max(
        len(llama3_tok(render_training(r[k]), add_special_tokens=False)["input_ids"])
        for k in ("chosen", "rejected")
    )
    assert n < len(render_training(r["rejected"]))  # far fewer tokens than characters
    kept = Encoder(llama3_tok, 128255, n).pairs([RawRow(1, r)])
    assert (
        len(kept.rows) == 1 and max(kept.rows[0]["chosen_len"], kept.rows[0]["rejected_len"]) == n
    )
    dropped = Encoder(llama3_tok, 128255, n - 1).pairs([RawRow(1, r)])
    assert dropped.rows == [] and dropped.dropped == {"too_long": 1}


def test_cache_is_checked_and_rebuilt(tmp_path):
    tok = l3.load_tulu_llama3(tmp_path)
    folder = next((tmp_path / "llama3-tokenizer").iterdir())
    data = bytearray((folder / "tokenizer.json").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "tokenizer.json").write_bytes(bytes(data))
    again = l3.load_tulu_llama3(tmp_path)  # the damaged copy fails its manifest: rebuilt
    assert again.get_vocab() == tok.get_vocab()
    assert sorted(p.name for p in (tmp_path / "llama3-tokenizer").iterdir()) == [folder.name]


def test_missing_or_foreign_tokenizer_model_is_one_clear_error(tmp_path, monkeypatch):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    with monkeypatch.context() as m:
        m.setattr(l3.metadata, "distribution", absent)
        with pytest.raises(l3.Llama3TokenizerError, match="install the dev extra"):
            l3.tokenizer_model()
    fake = tmp_path / "llama_models" / "llama3" / "tokenizer.model"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(l3.tokenizer_model().read_bytes()[:-1])

    class Dist:
        def locate_file(self, name):
            return tmp_path / name

    monkeypatch.setattr(l3.metadata, "distribution", lambda name: Dist())
    with pytest.raises(l3.Llama3TokenizerError, match="expected Meta's Llama 3 tokenizer"):
        l3.tokenizer_model()


PROBE_IDS_HASH = "59dd8e56a3007b777dc8190ee2133a71551a4a0d09180a567e126d082b6686fb"
VOCAB_HASH = "05ed779349be0bb417093ec8c5578230646bc829494e445ebe8d373293ab274b"
