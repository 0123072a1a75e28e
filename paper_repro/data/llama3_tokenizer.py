"""The real Llama 3 tokenizer, built offline, as the Tulu 2 Llama 3 SFT models carry it.

Meta's ``tokenizer.model`` (tiktoken BPE ranks, 128,000 entries) ships inside the
``llama-models`` wheel (a dev/test dependency, ``llama_models/llama3/tokenizer.model``); nothing is
downloaded. ``build_llama3`` turns it into a Hugging Face fast tokenizer equal to Llama 3's own:
the pre-tokenizer regex and the 256 special tokens of meta-llama/llama3 ``llama/tokenizer.py``
(original Llama 3 names at ids 128000-128255; llama-models itself names them the Llama 3.1 way),
and the post-processor that prepends ``<|begin_of_text|>`` when ``add_special_tokens`` is on.

``tulu_llama3`` then adds what the Tulu 2 Llama 3 SFT tokenizer has: the Tulu chat template and the
pad id 128255 (``<|reserved_special_token_250|>``). EasyLM trained with that pad id
(``EasyLM/models/llama/llama_train.py:46`` ``tokenizer_pad_token_id=128255``, "random unused llama 3
token") and its HF conversion writes it into the tokenizer
(``EasyLM/models/llama/convert_easylm_to_hf.py`` ``write_hf_tokenizer``, lines 385-396: the Tulu
chat template and ``tokenizer.pad_token_id = 128255``).

Building takes about 10 s, so ``load_tulu_llama3`` keeps the result in a user cache folder keyed
by the sha256 of ``tokenizer.model`` (checked against its own manifest on every load; a damaged
copy is rebuilt).
"""

from __future__ import annotations

import base64
import os
import shutil
from importlib import metadata
from pathlib import Path

from ..provenance.io import sha256_file
from ..provenance.manifest import ManifestError, verify_manifest, write_manifest
from ..provenance.paths import cache_root
from .formatting import TULU_CHAT_TEMPLATE

# llama-models 0.3.0 wheel: llama_models/llama3/tokenizer.model (2,183,982 bytes).
TOKENIZER_MODEL = "llama_models/llama3/tokenizer.model"
TOKENIZER_MODEL_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
RECIPE = 1  # bump when the built files change; part of the cache key

# meta-llama/llama3 llama/tokenizer.py (Tokenizer.pat_str and special_tokens).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_BASE_TOKENS = 128000
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)),
]  # ids NUM_BASE_TOKENS + index
VOCAB_SIZE = NUM_BASE_TOKENS + len(SPECIAL_TOKENS)  # 128256
BOS, EOS = SPECIAL_TOKENS[0], SPECIAL_TOKENS[1]
BOS_ID, EOS_ID = NUM_BASE_TOKENS, NUM_BASE_TOKENS + 1
PAD_ID = VOCAB_SIZE - 1  # 128255
PAD = SPECIAL_TOKENS[PAD_ID - NUM_BASE_TOKENS]  # <|reserved_special_token_250|>
MODEL_MAX_LENGTH = 8192  # Llama 3 context length


class Llama3TokenizerError(RuntimeError):
    """The tokenizer.model is missing or not Meta's, or a built tokenizer is not Llama 3's."""


def tokenizer_model() -> Path:
    """Meta's Llama 3 ``tokenizer.model`` from the installed ``llama-models`` wheel (not imported:
    only its data file is used), checked against its sha256."""
    try:
        path = Path(metadata.distribution("llama-models").locate_file(TOKENIZER_MODEL))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise Llama3TokenizerError(
            f"{TOKENIZER_MODEL} not found: install the dev extra (pip install -c constraints.txt "
            "-e '.[dev]', which brings llama-models==0.3.0)"
        )
    if (sha := sha256_file(path)) != TOKENIZER_MODEL_SHA256:
        raise Llama3TokenizerError(
            f"{path}: sha256 {sha}, expected Meta's Llama 3 tokenizer {TOKENIZER_MODEL_SHA256}"
        )
    return path


def read_ranks(path: str | Path) -> dict[bytes, int]:
    """tiktoken's BPE file (``base64(token) rank`` per line), read here: ``tiktoken.load`` would
    also keep a copy in a shared temp cache keyed by the path alone."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_llama3(path: str | Path | None = None):
    """The Llama 3 fast tokenizer (as meta-llama/Meta-Llama-3-8B ships it) from ``tokenizer.model``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(read_ranks)

    path = Path(path) if path is not None else tokenizer_model()
    backend = Converter(
        vocab_file=str(path), pattern=PATTERN, extra_special_tokens=SPECIAL_TOKENS
    ).converted()
    # Llama 3's post-processor: byte-level offsets, then BOS before every sequence.
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS}:1 $B:1",
                special_tokens=[(BOS, BOS_ID)],
            ),
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=True,
    )
    check_llama3(tok)
    return tok


def tulu_llama3(tok):
    """Llama 3 plus what the Tulu 2 Llama 3 SFT tokenizer adds: chat template and pad 128255."""
    tok.chat_template = TULU_CHAT_TEMPLATE
    tok.pad_token = PAD
    tok.padding_side = "right"
    check_llama3(tok, pad=True)
    return tok


def check_llama3(tok, pad: bool = False) -> None:
    """Refuse a tokenizer that is not Llama 3's: size, every special name at its id (all special,
    so no text maps onto them by accident), BOS/EOS, and the pad when ``pad``."""
    problems = []
    if len(tok) != VOCAB_SIZE:
        problems.append(f"{len(tok)} ids, expected {VOCAB_SIZE}")
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    wrong = [
        n
        for i, (n, got) in enumerate(zip(SPECIAL_TOKENS, ids, strict=True))
        if got != NUM_BASE_TOKENS + i
    ]
    if wrong:
        problems.append(f"special tokens at the wrong id: {wrong[:3]}")
    added = tok.added_tokens_decoder
    if not all(i in added and added[i].special for i in range(NUM_BASE_TOKENS, VOCAB_SIZE)):
        problems.append("a special token is missing or not marked special")
    if (tok.bos_token_id, tok.eos_token_id) != (BOS_ID, EOS_ID):
        problems.append(f"BOS/EOS ids {tok.bos_token_id}/{tok.eos_token_id}")
    if pad and tok.pad_token_id != PAD_ID:
        problems.append(f"pad id {tok.pad_token_id}, expected {PAD_ID}")
    if problems:
        raise Llama3TokenizerError("not the Llama 3 tokenizer: " + "; ".join(problems))


# --------------------------------------------------------------------------- cache


def load_tulu_llama3(cache_dir: str | Path | None = None):
    """The Tulu 2 Llama 3 tokenizer, built once per ``tokenizer.model`` and kept in
    ``<cache>/llama3-tokenizer/<sha256[:16]>-r<RECIPE>/`` (written under a temporary name and
    renamed, so an interrupted build leaves nothing that looks finished)."""
    from transformers import AutoTokenizer

    model = tokenizer_model()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / "llama3-tokenizer" / f"{TOKENIZER_MODEL_SHA256[:16]}-r{RECIPE}"
    manifest = folder / "manifest.json"
    try:
        verify_manifest(folder, manifest)
    except ManifestError:
        shutil.rmtree(folder, ignore_errors=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tulu_llama3(build_llama3(model)).save_pretrained(str(tmp))
        write_manifest(
            tmp / "manifest.json", tmp, source=TOKENIZER_MODEL, sha256=TOKENIZER_MODEL_SHA256
        )
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    check_llama3(tok, pad=True)
    return tok
