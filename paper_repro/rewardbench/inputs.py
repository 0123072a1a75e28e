"""The token ids of every RewardBench pair, in one of two input modes (``eval.input_mode``):

- ``training-format``: the EasyLM text the Tulu 2.5 RMs were trained on (one BOS, stripped turns,
  ends in EOS, never truncated; EasyLM ``data.py`` ``TuluJsonTorchDataset``). The pipeline's own
  export reads ``prepare_data/rewardbench.parquet`` and must match its tokenizer fingerprint; any
  other model gets the same rendering (``data.Encoder``, the code prepare_data runs) of
  ``download_data/rewardbench.jsonl`` with its own tokenizer.
- ``tokenizer-template``: the leaderboard path of reward-bench ``scripts/run_rm.py`` (@ 2560a78):
  the tokenizer's chat template on [user prompt, assistant response], one BOS as the Llama 3
  tokenizer adds it, left-truncated to ``eval.template_max_length`` (2048) tokens. The reward is
  then read at the newline the Tulu template puts after EOS, as on the leaderboard.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..provenance.io import parse_json
from ..provenance.paths import RunPaths
from ..provenance.verified import read_bytes
from .model import EvalError

RUN_RM_MAX_LENGTH = 2048  # run_rm.py's max_length; pairs above it are reported in both modes
FINGERPRINT_KEYS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "vocab_hash",
    "template_hash",
    "probe_ids_hash",
    "first_rows_ids_hash",
)


@dataclass
class EvalInputs:
    """Token ids of both sides of every pair, in dataset order."""

    ids: list[int]
    subsets: list[str]
    chosen: list[list[int]]
    rejected: list[list[int]]
    info: dict[str, Any] = field(default_factory=dict)  # how the ids were made (into scores.json)
    # (chosen, rejected) position id of each side's first token: 1 where reward-bench's pipeline
    # masks a BOS in front of it (``mask_double_bos``); None: all 0.
    starts: tuple[list[int], list[int]] | None = None


def _raw_source(paths: RunPaths) -> Path:
    source = paths.raw_data("rewardbench")
    if not source.is_file():
        raise EvalError(f"{source}: RewardBench pairs not found (run download-data first)")
    return source


def refuse_invalid_rows(source: Path, counts: dict[str, Any]) -> None:
    """Every input mode scores every row or none: reward-bench keeps every row of the split, so a
    Score without a malformed row (no subset, a mistyped id, ...) would not be comparable.
    ``counts``: a ``data.split_report`` of ``source`` (prepare_data's or one made here)."""
    from ..data import drop_summary

    if counts["dropped"]:
        raise EvalError(
            f"{source}: {drop_summary(counts)} of {counts['total']} RewardBench rows; the "
            "official scoring counts every row, so section sizes would differ: fix or remove "
            "them, then rerun download-data and prepare-data"
        )


def valid_rewardbench_rows(source: Path) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line, row) of every row of ``source``, validated exactly as prepare_data does."""
    from ..data import Encoded, iter_jsonl, rewardbench_sides, split_report
    from ..data.formatting import FormatError

    enc, rows = Encoded(), []
    for r in iter_jsonl(source):
        enc.total += 1
        try:
            if r.reason:
                raise FormatError(r.reason, "")
            rewardbench_sides(r.value)
        except FormatError as exc:
            enc.drop(r.index, exc.reason)
            continue
        rows.append((r.index + 1, r.value))
    refuse_invalid_rows(source, split_report(enc, sides=()))
    return rows


def check_training_format(pairs_ids, chosen, rejected, tokenizer, where: Path) -> None:
    """Every side is one BOS ... EOS: the format the RM was trained on (no BOS for a tokenizer
    that has none)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    n = len(chosen)
    for i, side in enumerate((*chosen, *rejected)):
        starts = bos is None or (len(side) >= 2 and side[0] == bos and side[1] != bos)
        if not side or not starts or side[-1] != eos:
            what = "BOS ... EOS" if bos is not None else "... EOS"
            raise EvalError(
                f"{where}: pair id {int(pairs_ids[i % n])} is not one {what} "
                "(the EasyLM training format)"
            )


def prepared_inputs(paths: RunPaths, tokenizer) -> EvalInputs:
    """The prepared EasyLM token ids; refuses data made with another tokenizer."""
    from ..data import check_fingerprint, load_pairs

    fp = check_fingerprint(paths.fingerprint, tokenizer)
    where = paths.prepared("rewardbench")
    pairs = load_pairs(where)
    if pairs.id is None or pairs.subset is None:
        raise EvalError(f"{where}: no id/subset columns")
    chosen = [s.tolist() for s in pairs.chosen]
    rejected = [s.tolist() for s in pairs.rejected]
    check_training_format(pairs.id, chosen, rejected, tokenizer, where)
    # prepare_data drops no valid RewardBench row (ties and long pairs included); a malformed one
    # would change a subset's denominator relative to the leaderboard, so it stops here.
    report = parse_json(read_bytes(paths.data_report), paths.data_report)  # the hashed bytes
    counts = report["rewardbench"]
    refuse_invalid_rows(paths.raw_data("rewardbench"), counts)
    source_rows = counts["total"]
    return EvalInputs(
        ids=[int(x) for x in pairs.id],
        subsets=list(pairs.subset),
        chosen=chosen,
        rejected=rejected,
        info={
            "source": str(where),
            "format": "EasyLM training format: one BOS, stripped turns, ends in EOS",
            "truncation": "none",
            "source_rows": source_rows,
            "data_fingerprint": {k: fp.get(k) for k in FINGERPRINT_KEYS},
        },
    )


def rendered_inputs(paths: RunPaths, tokenizer, pad_token_id: int | None) -> EvalInputs:
    """The EasyLM training format of the raw pairs, rendered and tokenized for this model's
    tokenizer by the Encoder prepare_data uses. A pair the Encoder would drop is an error: it
    would change its subset's size relative to the leaderboard."""
    from ..data import DataError, Encoder, iter_jsonl, split_report

    source = _raw_source(paths)
    rows = list(iter_jsonl(source))
    try:
        encoder = Encoder(tokenizer, pad_token_id, max_length=1 << 62)
    except DataError:  # the config's pad disagrees with the tokenizer's: forbid BOS/EOS only
        encoder = Encoder(tokenizer, None, max_length=1 << 62)
    enc = encoder.pairs(rows, kind="rewardbench", desc="rewardbench", drop_too_long=False)
    refuse_invalid_rows(source, split_report(enc, sides=()))
    ids = [r["id"] for r in enc.rows]
    chosen = [r["chosen_input_ids"] for r in enc.rows]
    rejected = [r["rejected_input_ids"] for r in enc.rows]
    check_training_format(ids, chosen, rejected, tokenizer, source)
    return EvalInputs(
        ids=ids,
        subsets=[r["subset"] for r in enc.rows],
        chosen=chosen,
        rejected=rejected,
        info={
            "source": str(source),
            "format": "EasyLM training format: one BOS, stripped turns, ends in EOS "
            "(rendered with this model's tokenizer)",
            "truncation": "none",
            "source_rows": len(rows),
        },
    )


def template_ids(
    tokenizer, messages: list[dict[str, str]], *, as_tokenizer: bool = False
) -> tuple[list[int], str]:
    """run_rm.py's ids for one side: the tokenizer's chat template rendered as text, then
    tokenized with the tokenizer's own special tokens (reward-bench ``prepare_dialogue_from_
    tokenizer`` then ``RewardBenchPipeline.__call__``, rewardbench 0.1.4).

    The pipeline's stages (its export, the reference RM): Llama 3's tokenizer prepends BOS; one
    that adds none (the tiny one) gets BOS prepended here, so both give exactly one BOS, as in
    training; two leading BOS (a template that emits BOS plus the tokenizer's) is an error.
    ``as_tokenizer`` (``--model``, scored as reward-bench scores it): the tokenizer's ids as they
    are, two leading BOS included (``mask_double_bos`` then does what reward-bench does with
    them).

    Returns the ids and how the BOS came about: "tokenizer", "prepended", "none" or
    "double, first masked"."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    lead = 0 if bos is None else next((i for i, t in enumerate(ids) if t != bos), len(ids))
    if lead > 1:
        if not as_tokenizer:
            raise EvalError(
                f"double BOS: {lead} leading BOS ids (template and tokenizer both add one)"
            )
        return ids, "double, first masked"
    if lead == 1:
        return ids, "tokenizer"
    if as_tokenizer or bos is None:
        return ids, "none"
    return [bos, *ids], "prepended"


def tokenizer_template_inputs(
    paths: RunPaths, tokenizer, model_dir: Path, max_length: int, *, as_tokenizer: bool = False
) -> EvalInputs:
    """The leaderboard inputs: chat template, BOS as ``template_ids`` says, left truncation."""
    from ..data.formatting import rewardbench_messages

    if not tokenizer.chat_template:
        raise EvalError(
            f"{model_dir}: the tokenizer has no chat template (run_rm.py would fall "
            "back to FastChat 'tulu' silently)"
        )
    source = _raw_source(paths)
    rows = valid_rewardbench_rows(source)
    out = EvalInputs([], [], [], [])
    bos_how: Counter = Counter()
    over = truncated = 0
    for line, row in rows:
        sides = []
        for key in ("chosen", "rejected"):
            try:
                msgs = rewardbench_messages(row["prompt"], row[key])
                ids, how = template_ids(tokenizer, msgs, as_tokenizer=as_tokenizer)
            except EvalError as exc:
                raise EvalError(f"{source}: line {line} ({key}): {exc}") from None
            bos_how[how] += 1
            sides.append(ids)
        over += max(map(len, sides)) > RUN_RM_MAX_LENGTH
        if max(map(len, sides)) > max_length:
            truncated += 1
            # truncation_side="left": keep the end, where the reward is read.
            sides = [s[-max_length:] for s in sides]
        out.ids.append(int(row["id"]))
        out.subsets.append(str(row["subset"]))
        out.chosen.append(sides[0])
        out.rejected.append(sides[1])
    if as_tokenizer:
        mask_double_bos(out, tokenizer.bos_token_id)
    if len(bos_how) > 1:
        raise EvalError(f"{model_dir}: the tokenizer adds BOS to some rows only ({dict(bos_how)})")
    out.info = {
        "source": str(source),
        "format": "tokenizer chat template on [user prompt, assistant response] (run_rm.py)",
        "source_rows": len(rows),
        "chat_template": tokenizer.chat_template,
        "bos": next(iter(bos_how)) if bos_how else "none",
        "truncation": {"side": "left", "max_length": max_length, "truncated_pairs": truncated},
        "pairs_over_2048": over,
    }
    return out


def mask_double_bos(inputs: EvalInputs, bos: int | None) -> None:
    """reward-bench's pipeline (rewardbench/models/pipeline.py @ 0.1.4, "double bos"), after
    truncation: a sequence that starts with two BOS gets attention mask 0 on the first, which
    stays in place, so the real tokens sit at positions 1, 2, ... Here that BOS is dropped and
    the positions start at 1: the same forward (a masked key gets no attention weight), and the
    same reward also for absolute position embeddings (GPT-2), where dropping it alone would
    shift every token."""
    starts = ([], [])
    for sides, first in zip((inputs.chosen, inputs.rejected), starts, strict=True):
        for i, s in enumerate(sides):
            double = bos is not None and len(s) > 1 and s[0] == s[1] == bos
            sides[i] = s[1:] if double else s
            first.append(int(double))
    if any(map(any, starts)):
        inputs.starts = starts


def build_inputs(
    paths: RunPaths,
    tokenizer,
    model_dir: Path,
    input_mode: str,
    template_max_length: int,
    *,
    own_export: bool,
    pad_token_id: int | None,
    as_tokenizer: bool = False,
) -> EvalInputs:
    """The inputs of one evaluation. ``own_export``: the pipeline's exported RM, whose training
    format comes from prepare_data (and must match its tokenizer)."""
    if input_mode == "tokenizer-template":
        return tokenizer_template_inputs(
            paths, tokenizer, model_dir, template_max_length, as_tokenizer=as_tokenizer
        )
    if own_export:
        inputs = prepared_inputs(paths, tokenizer)
    else:
        inputs = rendered_inputs(paths, tokenizer, pad_token_id)
    inputs.info["pairs_over_2048"] = sum(
        max(len(c), len(r)) > RUN_RM_MAX_LENGTH
        for c, r in zip(inputs.chosen, inputs.rejected, strict=True)
    )
    return inputs


def read_where_reward_bench_does(inputs: EvalInputs, pool_pad: int | None) -> None:
    """Cut each side after its last token that is not ``pool_pad``: HF's pooling, which
    reward-bench reads the reward with, skips trailing tokens equal to the config's pad id (EOS
    used as pad, with a template that ends turns in EOS). The model is causal, so the score at
    that token is the score of the cut sequence; the cut changes nothing else. Recorded in
    ``info["reward_read"]``."""
    cut = 0
    for sides in (inputs.chosen, inputs.rejected):
        for i, s in enumerate(sides):
            end = len(s)
            while end > 1 and s[end - 1] == pool_pad:
                end -= 1
            if end < len(s):
                sides[i], cut = s[:end], cut + 1
    inputs.info["reward_read"] = {
        "at": "the last token whose id is not the config's pad id (HF pooling, reward-bench)",
        "pad_id": pool_pad,
        "sides_cut": cut,
    }
