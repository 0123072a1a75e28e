"""The pieces of an exported reward model: the trained state (checked), the config and tokenizer
with an explicit pad id, the license files, and the held-out pairs it is verified on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.formatting import TULU_CHAT_TEMPLATE
from ..errors import ReproError
from ..provenance.io import read_json, write_json
from ..provenance.paths import RunPaths

REPO_ROOT = Path(__file__).resolve().parents[2]
LICENSE_FILES = ("llama_3_license.txt", "NOTICE")  # shipped verbatim with every exported model


class ExportError(ReproError, RuntimeError):
    """The export or its verification failed; the message names the file or the failed checks."""


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ExportError(f"{path}: {what} not found")
    return path


def license_files() -> list[Path]:
    """The Llama 3 license and NOTICE of this repository (the Llama 3 license requires shipping
    them with every distributed derivative)."""
    files = [REPO_ROOT / name for name in LICENSE_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"license files not found: {missing} (run from a source checkout)")
    return files


def load_trained_state(path: Path, config) -> dict:
    """The trainer's consolidated fp32 state dict, checked against the base config: the peer
    pitfall of a checkpoint without its head (or with an empty ZeRO-3 shard of it) stops here."""
    import torch

    from ..errors import CorruptFileError
    from ..provenance.verified import load_file

    try:
        state = load_file(path)  # hashed while read against train_rm/manifest.json
    except CorruptFileError as exc:
        raise ExportError(f"{path}: not a readable safetensors file ({exc})") from None
    head = state.get("score.weight")
    if head is None:
        raise ExportError(f"{path}: no 'score.weight' (the reward head is missing from the state)")
    if tuple(head.shape) != (1, config.hidden_size):
        raise ExportError(
            f"{path}: score.weight has shape {tuple(head.shape)}, expected "
            f"(1, {config.hidden_size}) (an unconsolidated ZeRO-3 shard?)"
        )
    if "score.bias" in state:
        raise ExportError(f"{path}: has 'score.bias'; the EasyLM reward head is bias-free")
    for name, t in state.items():
        if t.dtype != torch.float32:
            raise ExportError(f"{path}: {name} is {t.dtype}; the trainer writes fp32 weights")
        if not bool(torch.isfinite(t).all()):
            raise ExportError(f"{path}: {name} holds NaN or Inf")
    if not bool((head != 0).any()):
        raise ExportError(f"{path}: score.weight is all zeros (head never gathered or trained)")
    return state


def prepare_config(base_dir: Path, pad_token_id: int):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_dir))
    if config.model_type != "llama":
        raise ExportError(f"{base_dir}/config.json: model_type {config.model_type!r}, need 'llama'")
    if not 0 <= pad_token_id < config.vocab_size:  # a new <pad> at 128256 would be out of range
        raise ExportError(
            f"data.pad_token_id {pad_token_id} is outside the model vocabulary "
            f"({config.vocab_size})"
        )
    config.num_labels = 1
    config.pad_token_id = pad_token_id
    config.architectures = ["LlamaForSequenceClassification"]
    return config


def prepare_tokenizer(base_dir: Path, pad_token_id: int):
    """The base tokenizer with an explicit pad (the token string at the configured id) and the
    Tulu chat template. The pad must be an added special token so no text can produce it."""
    from transformers import AutoTokenizer

    from ..data import DataError, resolve_pad

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    try:
        pad_token = resolve_pad(tok, pad_token_id)
    except DataError as exc:
        raise ExportError(f"{base_dir}: {exc}") from None
    added = tok.added_tokens_decoder.get(pad_token_id)
    if added is None or not added.special:
        raise ExportError(
            f"{base_dir}: pad id {pad_token_id} is the ordinary token {pad_token!r}, "
            "which text can produce; use a reserved special token"
        )
    tok.pad_token = pad_token
    tok.padding_side = "right"
    tok.chat_template = TULU_CHAT_TEMPLATE
    if tok.pad_token_id != pad_token_id:
        raise ExportError(f"{base_dir}: setting pad {pad_token!r} gave id {tok.pad_token_id}")
    return tok


# tokenizer_config.json keys that only record how transformers 5 loaded the base tokenizer.
LOADING_STATE_KEYS = ("is_local", "local_files_only")


def make_portable(folder: Path) -> None:
    """Rewrite the two JSON files transformers 5 saves in a form transformers 4.x reads the same
    (reward-bench 0.1.4 pins 4.51.0, its main branch 4.57.6):

    * config.json: 5.x keeps the rope settings only in ``rope_parameters``; 4.x reads top-level
      ``rope_theta``/``rope_scaling`` and would run silently with rope_theta 10000. Both are
      written (5.x takes ``rope_scaling``, when set, as its ``rope_parameters`` and fills
      ``rope_theta`` from the top level, so it reads the same), plus ``torch_dtype``.
    * tokenizer_config.json: 5.x names the class ``TokenizersBackend``, which 4.x cannot import;
      ``PreTrainedTokenizerFast`` loads the same tokenizer.json in both; ``model_input_names``
      keeps 4.x from adding ``token_type_ids``."""
    path = folder / "config.json"
    config = read_json(path)
    rope = dict(config.get("rope_parameters") or {})
    if "rope_theta" not in rope:
        raise ExportError(f"{path}: no rope_parameters.rope_theta to write for transformers 4.x")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    config.setdefault("torch_dtype", config.get("dtype"))
    write_json(path, config)
    path = folder / "tokenizer_config.json"
    tok = {k: v for k, v in read_json(path).items() if k not in LOADING_STATE_KEYS}
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    # Without it 4.x's PreTrainedTokenizerFast also returns token_type_ids, which Llama's forward
    # rejects: model(**tok(texts)), the text-classification pipeline and reward-bench's CLI all
    # raise TypeError. 5.x already returns only these two.
    tok["model_input_names"] = ["input_ids", "attention_mask"]
    write_json(path, tok)


@dataclass
class VerifyBatch:
    split: str
    chosen: list[list[int]]
    rejected: list[list[int]]
    pad_occurrences: int  # over every token of the split, not just the batch
    tokens_scanned: int


def verification_batch(paths: RunPaths, pad_token_id: int, n_pairs: int) -> VerifyBatch:
    """The first ``n_pairs`` held-out pairs (train pairs when there is no held-out split), and a
    scan of the whole split for the pad id (it must never occur in text, docs/fidelity.md §5)."""
    import numpy as np

    from ..data import DataError, load_pairs

    for split in ("heldout", "train"):
        path = paths.prepared(split)
        if not path.is_file():
            continue
        try:
            pairs = load_pairs(path)
        except DataError as exc:
            raise ExportError(str(exc)) from None
        if len(pairs) == 0:
            continue
        every = np.concatenate(pairs.chosen + pairs.rejected)
        n = min(n_pairs, len(pairs))
        return VerifyBatch(
            split=split,
            chosen=[a.tolist() for a in pairs.chosen[:n]],
            rejected=[a.tolist() for a in pairs.rejected[:n]],
            pad_occurrences=int((every == pad_token_id).sum()),
            tokens_scanned=int(every.size),
        )
    raise ExportError(
        f"{paths.prepared('heldout')} and {paths.prepared('train')}: no prepared "
        "pairs to verify the export on (run prepare-data first)"
    )


def model_from_state(config, state: dict):
    """A ``LlamaForSequenceClassification`` whose parameters *are* ``state`` (no second copy: a
    70B fp32 state is 280 GB). Buffers (rotary frequencies) are built for real."""
    from accelerate import init_empty_weights
    from transformers import LlamaForSequenceClassification

    with init_empty_weights():
        model = LlamaForSequenceClassification(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches, named by torch
        raise ExportError(f"trained state does not fit the base architecture: {exc}") from None
    return model.eval()


def cast_parameters(model, dtype) -> None:
    """Cast parameters only. ``model.to(dtype)`` would also round the rotary ``inv_freq`` buffer,
    which a freshly loaded model recomputes in fp32 (that alone moved tiny rewards by 1e-3)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(dtype)
