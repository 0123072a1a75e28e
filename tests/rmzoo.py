"""Small local reward models of several architectures with the tokenizer quirks published RMs
have, for the ``--model`` matrix: no pad token, no BOS, a tokenizer that adds BOS, a chat
template that emits BOS too (double BOS), EOS as pad with turns ending in EOS, no chat template.

Every model is built from its config (random weights, seeded, a score head with O(1) weights so
rewards spread), saved as safetensors with a byte-level BPE tokenizer (the shipped tiny one,
rebuilt per quirk), in a form transformers 4.51.0 (reward-bench 0.1.4's pin) loads the same: the
tokenizer class ``PreTrainedTokenizerFast`` and ``model_input_names`` without ``token_type_ids``.
A few seconds each on CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from paper_repro.fixtures.tiny import PAD_TOKEN, TOKENIZER_DIR

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"

# A ChatML-like template (no BOS of its own): the common shape of published RM templates.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
# Turns end in EOS, as in Zephyr/Tulu-style templates: with EOS as pad, HF's pooling (and so
# reward-bench) reads the reward before the final EOS.
EOS_TURNS = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}{% endfor %}"
)


@dataclass(frozen=True)
class Quirk:
    pad: str | None  # "own" (a reserved pad token), "eos", or None (no pad at all)
    bos: str  # "tokenizer" (the tokenizer adds BOS), "none" (no BOS token), "unused"
    template: str | None  # a chat template, or None
    template_bos: bool = False  # the template emits BOS as well (double BOS)


QUIRKS: dict[str, Quirk] = {
    "pad+bos+template": Quirk(pad="own", bos="tokenizer", template=CHATML),
    "no-pad": Quirk(pad=None, bos="tokenizer", template=CHATML),
    "no-bos": Quirk(pad="own", bos="none", template=CHATML),
    "no-pad-no-bos": Quirk(pad=None, bos="none", template=CHATML),
    "double-bos": Quirk(pad="own", bos="tokenizer", template=CHATML, template_bos=True),
    "eos-pad": Quirk(pad="eos", bos="unused", template=EOS_TURNS),
    "no-template": Quirk(pad="own", bos="tokenizer", template=None),
    "no-template-no-bos": Quirk(pad=None, bos="none", template=None),
}
ARCHS = ("gpt2", "llama", "mistral", "qwen2", "gemma")


def _tokenizer(quirk: Quirk):
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    if quirk.bos == "tokenizer":  # as Llama 3's tokenizer does
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
        )
    else:
        tok.post_processor = None
    pad = {"own": PAD_TOKEN, "eos": EOS, None: None}[quirk.pad]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None if quirk.bos == "none" else BOS,
        eos_token=EOS,
        pad_token=pad,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    if quirk.template:
        fast.chat_template = ("{{ bos_token }}" if quirk.template_bos else "") + quirk.template
    return fast


def _config(arch: str, vocab: int, pad_id: int | None, bos_id: int | None, eos_id: int):
    import transformers as tf

    ids = {"pad_token_id": pad_id, "bos_token_id": bos_id, "eos_token_id": eos_id}
    small = {"num_labels": 1, "vocab_size": vocab, **ids}
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, **small)
    decoder = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **small,
    )
    cls = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "gemma": tf.GemmaConfig,
    }[arch]
    if arch == "gemma":
        decoder["head_dim"] = 8
    if arch == "mistral":  # a window shorter than the pairs: scored through its own attention
        decoder["sliding_window"] = 16
    return cls(**decoder)


def build_rm(folder: Path, arch: str, quirk_name: str, seed: int = 0) -> Path:
    """A ``<arch>ForSequenceClassification`` RM with the tokenizer quirk ``quirk_name`` saved
    in ``folder`` (returned)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    quirk = QUIRKS[quirk_name]
    tok = _tokenizer(quirk)
    config = _config(arch, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    # transformers 4.x cannot import 5.x's "TokenizersBackend"; the same tokenizer.json loads
    # as PreTrainedTokenizerFast in both
    path = folder / "tokenizer_config.json"
    conf = json.loads(path.read_text())
    conf["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(conf, indent=2))
    return folder
