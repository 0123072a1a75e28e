"""Which reward model is evaluated, where its files come from, and how it is loaded.

A model is a local folder or a hub id pinned to a commit (``org/name@<sha>``); hub models go
through the pinned, verified download of ``paper_repro.hub`` (safetensors only, every file checked
against the hub's sha256, a lock manifest next to the link folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config.validate import COMMIT_SHA
from ..errors import ReproError


class EvalError(ReproError, ValueError):
    """The model, tokenizer or inputs cannot be evaluated (the message names the file or row)."""


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Folder names that say nothing about which model is inside (the pipeline's own layout).
GENERIC_FOLDERS = frozenset({"model", "export_rm", "reference_model", "policy", "ppo"})


@dataclass(frozen=True)
class ModelSpec:
    """A local folder (``path``) or a hub repo pinned to a commit (``repo_id``, ``revision``)."""

    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @property
    def name(self) -> str:
        """The leaderboard's ``model`` key: the hub id, or the folder's name; a folder with a
        generic name (``export_rm/model``) is named with the folders above it up to a telling
        one (``tiny/export_rm/model``), never just "model"."""
        if self.repo_id:
            return self.repo_id
        parts = Path(self.path).resolve().parts[1:]  # without the root
        keep = 1
        while keep < len(parts) and parts[-keep] in GENERIC_FOLDERS:
            keep += 1
        return "/".join(parts[-keep:])

    @property
    def slug(self) -> str:
        return self.name.replace("/", "--")


def parse_model_spec(text: str) -> ModelSpec:
    """``PATH`` (an existing folder) or ``ORG/NAME@REVISION`` (a commit sha, 7-40 hex)."""
    if Path(text).is_dir():
        return ModelSpec(path=Path(text))
    repo, sep, rev = text.partition("@")
    if not HUB_ID.fullmatch(repo):
        raise EvalError(f"--model {text}: not a folder and not a hub id ORG/NAME@REVISION")
    if not sep or not COMMIT_SHA.fullmatch(rev):
        raise EvalError(
            f"--model {text}: pin the hub model to a commit, e.g. {repo}@<commit sha> "
            "(a branch name like 'main' moves)"
        )
    return ModelSpec(repo_id=repo, revision=rev)


def obtain_model(spec: ModelSpec, dest: Path, manifest: Path) -> Path:
    """The folder to load: a local folder as it is, a hub model downloaded at its pin, verified
    and linked into ``dest`` (lock manifest ``manifest``)."""
    if spec.path is not None:
        return Path(spec.path)
    from ..hub import fetch_model

    fetch_model(spec.repo_id, spec.revision, dest, manifest)
    return dest


def declared_pad(model_dir: Path) -> int | None:
    """``pad_token_id`` as config.json states it (before transformers touches it). A config.json
    that is not JSON, holds an integer Python will not convert (over 4,300 digits: a ValueError,
    not a JSONDecodeError) or a pad that is not an integer is an EvalError naming the file."""
    import json

    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise EvalError(f"{path}: not a readable config ({str(exc)[:80]})") from None
    if not isinstance(config, dict):
        raise EvalError(f"{path}: not a JSON object")
    pad = config.get("pad_token_id")
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool)):
        raise EvalError(f"{path}: pad_token_id must be an integer or null, got {pad!r:.40}")
    return pad


def load_model(model_dir: Path, dtype: str, attn_implementation: str = "sdpa", *, strict=True):
    """A sequence-classification RM with one output, safetensors only and no remote code; on GPUs
    spread over every visible device with ``device_map``. A pad id outside the vocabulary (a new
    ``<pad>`` at 128256 on a 128256-token model) cannot even be loaded by transformers: with
    ``strict`` it is an error, otherwise it is dropped here and ``filler_pad`` records it."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ..provenance.verified import checked_copy, from_pretrained
    from ..training.modeling import DTYPES

    if not (model_dir / "config.json").is_file():
        raise EvalError(f"{model_dir}: no config.json (not a Hugging Face model folder)")
    extra = {"device_map": "auto"} if torch.cuda.is_available() else {}
    try:
        with checked_copy(model_dir) as copy:  # the bytes its manifest lists, if one does
            config = AutoConfig.from_pretrained(str(copy), trust_remote_code=False)
        config._name_or_path = str(model_dir)
        pad = config.pad_token_id
        if pad is not None and not 0 <= pad < config.vocab_size:
            if strict:
                raise EvalError(
                    f"{model_dir}/config.json: pad_token_id {pad} is outside the vocabulary "
                    f"(size {config.vocab_size})"
                )
            config.pad_token_id = None
        model = from_pretrained(  # weights hashed while read where a manifest lists them
            AutoModelForSequenceClassification,
            model_dir,
            config=config,
            dtype=DTYPES[dtype],
            use_safetensors=True,
            trust_remote_code=False,
            attn_implementation=attn_implementation,
            **extra,
        )
    except (OSError, ValueError) as exc:  # no safetensors, unknown architecture, remote code
        if isinstance(exc, EvalError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalError(f"{model_dir}: cannot load a sequence classifier ({first})") from None
    if model.config.num_labels != 1:
        raise EvalError(f"{model_dir}/config.json: num_labels is {model.config.num_labels}, not 1")
    return model.eval()


def check_pad(model, tokenizer, model_dir: Path) -> int:
    """The pipeline's own export: the pad id must be set, inside the vocabulary and not BOS/EOS
    (an unset or EOS pad moves HF's pooling for every other consumer of the model)."""
    pad = model.config.pad_token_id
    if pad is None:
        raise EvalError(f"{model_dir}/config.json: pad_token_id is not set")
    if not 0 <= pad < model.config.vocab_size:
        raise EvalError(
            f"{model_dir}/config.json: pad_token_id {pad} is outside the vocabulary "
            f"(size {model.config.vocab_size})"
        )
    from ..data import DataError, resolve_pad

    try:
        resolve_pad(tokenizer, pad, source=f"{model_dir}/config.json pad_token_id")
    except DataError as exc:
        raise EvalError(str(exc)) from None
    return int(pad)


def filler_pad(model, tokenizer, model_dir: Path) -> tuple[int, str | None]:
    """Any other model: the id used to fill padded positions, and a note when it is not the
    model's own pad. Rewards are read at the last attended token with mask-derived positions
    (``modeling.rewards``), so the filler's value never changes a reward; only an id outside the
    embedding would crash. Published RMs often have no pad, EOS as pad, or a new ``<pad>`` past
    the vocabulary (128256): those are recorded, not fatal."""
    pad = declared_pad(model_dir)
    vocab = model.config.vocab_size
    if pad is not None and 0 <= pad < vocab:
        if pad in (tokenizer.bos_token_id, tokenizer.eos_token_id):
            return int(pad), (
                f"config.json pad_token_id {pad} is BOS/EOS; harmless here (pooling reads the "
                "attention mask) but HF's own pooling moves"
            )
        return int(pad), None
    eos = tokenizer.eos_token_id
    if eos is None or not 0 <= eos < vocab:
        raise EvalError(f"{model_dir}: no pad_token_id and no usable EOS id to pad with")
    why = "is not set" if pad is None else f"{pad} is outside the vocabulary (size {vocab})"
    return int(eos), (
        f"config.json pad_token_id {why}; padded with EOS {eos} (harmless: pooling reads the "
        "attention mask)"
    )


def reward_bench_pad(tokenizer, model_dir: Path) -> int | None:
    """The ``config.pad_token_id`` reward-bench's CLI scores with (rewardbench/rewardbench.py,
    0.1.4: a tokenizer without pad gets EOS as pad in tokenizer and config; a config without pad
    gets the tokenizer's). HF's sequence-classification pooling reads the reward at the rightmost
    token whose id is not this one (``last_non_pad_token``, transformers 4.51)."""
    if tokenizer.pad_token_id is None:
        return tokenizer.eos_token_id
    declared = declared_pad(model_dir)
    return tokenizer.pad_token_id if declared is None else declared


def default_input_mode(model_dir: Path) -> tuple[str, str]:
    """How someone else's RM is scored by default, and why: with its own chat template, as
    reward-bench's CLI does (``prepare_dialogue_from_tokenizer``), or, when its tokenizer has
    none, in the Tulu training format (reward-bench would need a FastChat template name)."""
    from ..data import load_tokenizer

    if load_tokenizer(model_dir).chat_template:
        return "tokenizer-template", "the model's tokenizer has a chat template"
    return "training-format", "the model's tokenizer has no chat template"
