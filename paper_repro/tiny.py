"""The tiny presets' stand-ins for Llama 3: a byte-level BPE tokenizer with Llama 3's special-token
names and a few-hundred-thousand-parameter Llama, built locally and deterministically.

The tokenizer mirrors Llama 3 where it matters for faithfulness: BOS/EOS are special tokens whose
literal strings tokenize to one id, ``<|user|>`` and friends are *not* special (ordinary BPE
pieces), and the pad token is the last id, which never occurs in text (as 128255 in Llama 3).
With ``model.tiny.tokenizer: llama3`` (preset ``tiny-llama3-vocab``) the base gets the real Llama 3
tokenizer instead (``llama3_tokenizer``) and a 128,256-row embedding.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .config import TinyArch
from .formatting import TULU_CHAT_TEMPLATE, SpecialStrings

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "data"
TOKENIZER_DIR = FIXTURE_DIR / "tokenizer"
VOCAB_SIZE = 512
PAD_TOKEN = "<|reserved_special_token_pad|>"
SPECIAL = SpecialStrings()


def build_tokenizer(corpus: Iterable[str]):
    """Train a byte-level BPE of VOCAB_SIZE ids: 0 = BOS, 1 = EOS, ..., VOCAB_SIZE-1 = pad."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Numbers split off as runs of at most three digits, without the space before them, as Llama
    # 3's pre-tokenizer does (its pattern's \p{N}{1,3}): "3" is then the same token in "What is
    # 3 + 4?" and in "3 + 4 = 7.", so the tiny base can copy operands and learn the sums.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 1,
        special_tokens=[SPECIAL.bos, SPECIAL.eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([PAD_TOKEN])
    if tok.get_vocab_size() != VOCAB_SIZE or tok.token_to_id(PAD_TOKEN) != VOCAB_SIZE - 1:
        raise RuntimeError(
            f"tiny tokenizer has {tok.get_vocab_size()} ids; corpus too small for {VOCAB_SIZE}"
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL.bos,
        eos_token=SPECIAL.eos,
        pad_token=PAD_TOKEN,
        model_max_length=8192,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = TULU_CHAT_TEMPLATE
    return fast


def load_tokenizer(path: str | Path = TOKENIZER_DIR):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def base_tokenizer(arch: TinyArch):
    """The tokenizer a tiny base is built with: the shipped fixture one or the real Llama 3 one."""
    if arch.tokenizer == "llama3":
        from .llama3_tokenizer import load_tulu_llama3

        return load_tulu_llama3()
    return load_tokenizer()


def llama_config(arch: TinyArch, tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


# preference rows sampled from the tiny base itself (fixtures/onpolicy.py): RM training data only
ONPOLICY_SOURCE = "fixture-onpolicy"


def sft_rows(rows: Iterable[dict]) -> list[dict]:
    """The hand-made rows, in file order: the tiny base's SFT data and the tiny tokenizer's
    corpus. The on-policy rows are left out, since they were sampled from that base."""
    return [r for r in rows if r.get("source") != ONPOLICY_SOURCE]


def sft_texts(rows: Iterable[dict]) -> list[str]:
    """Training-format strings of both sides of preference rows: the tiny base's SFT corpus, so it
    answers in the Tulu format, ends turns with EOS and mixes good and bad answers (room for PPO)."""
    from .formatting import render_training

    out = []
    for row in rows:
        out += [render_training(row["chosen"]), render_training(row["rejected"])]
    return out


def build_tiny_base(
    out_dir: str | Path, arch: TinyArch, rows: list[dict], seed: int = 0, stream=None
) -> Path:
    """A tiny Llama causal LM briefly trained on fixture dialogues: the tiny preset's 'SFT base'.
    Deterministic for a given seed; saved as safetensors with its tokenizer. Up to ~100 s on a
    loaded CPU, so it reports progress (steps/s, dialogues/s, loss) on ``stream`` (stderr)."""
    import torch
    from transformers import LlamaForCausalLM

    from .progress import progress

    torch.manual_seed(seed)
    tok = base_tokenizer(arch)
    model = LlamaForCausalLM(llama_config(arch, tok))
    texts = sft_texts(rows)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=arch.sft_lr, weight_decay=0.0)
    model.train()
    bar = progress(total=arch.sft_steps, desc="tiny SFT base", unit="step", stream=stream)
    for step in range(arch.sft_steps):
        idx = torch.randint(len(texts), (arch.sft_batch,), generator=gen).tolist()
        enc = tok(
            [texts[i] for i in idx], add_special_tokens=False, padding=True, return_tensors="pt"
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for g in opt.param_groups:  # linear decay keeps the short run stable
            g["lr"] = arch.sft_lr * (1 - (step + 1) / arch.sft_steps)
        bar.update(1)
        elapsed = bar.format_dict["elapsed"]  # the mean rate: tqdm's own is rate-limited
        dialogues = f"{bar.n * arch.sft_batch / elapsed:.1f}/s" if elapsed > 0 else "n/a"
        bar.set_postfix(loss=f"{loss.item():.3f}", dialogues=dialogues)
    bar.close()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
