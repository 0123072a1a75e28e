"""eval_rewardbench: score every RewardBench pair with the exported reward model.

Reads ``export_rm/model`` (HF ``LlamaForSequenceClassification``, safetensors only) and one of two
inputs, recorded in every output as ``input_mode``:

- ``training-format`` (default): ``prepare_data/rewardbench.parquet``, the EasyLM text the model
  was trained on (one BOS, turns stripped, ends in EOS, never truncated; spec sections 3 and 4).
  The data fingerprint must match the model's tokenizer.
- ``tokenizer-template``: the leaderboard path of ``run_rm.py`` (spec 8.3): the raw pairs of
  ``download_data/rewardbench.jsonl`` rendered by the tokenizer's own chat template with [user
  prompt, assistant response], one BOS as the Llama 3 tokenizer adds it, left-truncated to
  ``eval.template_max_length`` (2048) tokens. The reward is then read at the newline after EOS
  (spec pitfall 1), as on the leaderboard.

Writes ``pairs.parquet`` (id, subset, reward_chosen, reward_rejected, correct), ``scores.json``
(subsets, sections and Score with bootstrap CIs, the historical variants), ``comparison.json`` and
``comparison.md`` (the card's numbers next to ours; spec 10). Accuracies are fractions in JSON.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import rewardbench as rb
from ..config import ReproConfig
from ..errors import ReproError
from ..integrity import verify_inputs
from ..io import atomic_path, read_json, write_json, write_text
from ..paths import RunPaths
from ..tracking import stage_run

STAGE = "eval_rewardbench"
RUN_RM_MAX_LENGTH = 2048  # run_rm.py's max_length; pairs above it are reported in both modes


class EvalError(ReproError, ValueError):
    """The model, tokenizer or inputs cannot be evaluated (names the file or row)."""


@dataclass
class EvalInputs:
    """Token ids of both sides of every pair, in dataset order."""

    ids: list[int]
    subsets: list[str]
    chosen: list[list[int]]
    rejected: list[list[int]]
    info: dict[str, Any] = field(default_factory=dict)  # how the ids were made (into scores.json)


# --------------------------------------------------------------------------- model


def load_model(model_dir: Path, dtype: str, attn_implementation: str = "sdpa"):
    """The exported RM, safetensors only and no remote code; on GPUs spread with device_map."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from ..modeling import DTYPES

    if not (model_dir / "config.json").is_file():
        raise EvalError(f"{model_dir}: no exported reward model (run export-rm first)")
    extra = {"device_map": "auto"} if torch.cuda.is_available() else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir),
        dtype=DTYPES[dtype],
        use_safetensors=True,
        trust_remote_code=False,
        attn_implementation=attn_implementation,
        **extra,
    )
    if model.config.num_labels != 1:
        raise EvalError(f"{model_dir}/config.json: num_labels is {model.config.num_labels}, not 1")
    return model.eval()


def check_pad(model, tokenizer, model_dir: Path) -> int:
    """The pad id must be set, inside the vocabulary and not BOS/EOS (spec pitfalls 2 and 3). Our
    pooling reads the mask, but an unset or EOS pad breaks every other consumer of the model."""
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


# --------------------------------------------------------------------------- inputs


def training_format_inputs(paths: RunPaths, tokenizer) -> EvalInputs:
    """The prepared EasyLM token ids; refuses data made with another tokenizer."""
    from ..data import check_fingerprint, load_pairs

    fp = check_fingerprint(paths.fingerprint, tokenizer)
    pairs = load_pairs(paths.prepared("rewardbench"))
    if pairs.id is None or pairs.subset is None:
        raise EvalError(f"{paths.prepared('rewardbench')}: no id/subset columns")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for i, side in enumerate((*pairs.chosen, *pairs.rejected)):
        if side.size < 2 or side[0] != bos or side[1] == bos or side[-1] != eos:
            row = int(pairs.id[i % len(pairs)])
            raise EvalError(
                f"{paths.prepared('rewardbench')}: pair id {row} is not one BOS ... "
                "EOS (the EasyLM training format)"
            )
    # prepare_data drops no valid RewardBench row (ties and long pairs included); a malformed one
    # would change a subset's denominator relative to the leaderboard, so it stops the stage.
    counts = read_json(paths.data_report)["rewardbench"]
    refuse_invalid_rows(paths.raw_data("rewardbench"), counts)
    source_rows = counts["total"]
    return EvalInputs(
        ids=[int(x) for x in pairs.id],
        subsets=list(pairs.subset),
        chosen=[s.tolist() for s in pairs.chosen],
        rejected=[s.tolist() for s in pairs.rejected],
        info={
            "source": str(paths.prepared("rewardbench")),
            "format": "EasyLM training format: one BOS, stripped turns, ends in EOS (spec 3)",
            "truncation": "none",
            "source_rows": source_rows,
            "data_fingerprint": {
                k: fp.get(k)
                for k in (
                    "bos_token_id",
                    "eos_token_id",
                    "pad_token_id",
                    "vocab_hash",
                    "template_hash",
                    "probe_ids_hash",
                    "first_rows_ids_hash",
                )
            },
        },
    )


def refuse_invalid_rows(source: Path, counts: dict[str, Any]) -> None:
    """Both input modes score every row or none: reward-bench keeps every row of the split, so a
    Score without a malformed row (no subset, a mistyped id, ...) would not be comparable."""
    from ..data import drop_summary

    if counts["dropped"]:
        raise EvalError(
            f"{source}: {drop_summary(counts)} of {counts['total']} RewardBench rows; the "
            "official scoring counts every row, so section sizes would differ: fix or remove "
            "them, then rerun download-data and prepare-data"
        )


def valid_rewardbench_rows(source: Path) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line, row) of every row, validated exactly as prepare_data does."""
    from ..data import Encoded, iter_jsonl, rewardbench_sides, split_report
    from ..formatting import FormatError

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


def template_ids(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], str]:
    """run_rm.py's ids for one side: the tokenizer's chat template rendered as text, then
    tokenized with the tokenizer's own special tokens. Llama 3's tokenizer prepends BOS; one that
    adds none (the tiny one) gets BOS prepended here, so both give exactly one BOS. Two leading
    BOS (a template that emits BOS plus the tokenizer's) is an error (reward-bench#164).

    Returns the ids and how the BOS came about ("tokenizer" or "prepended")."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    lead = next((i for i, t in enumerate(ids) if t != bos), len(ids))
    if lead > 1:
        raise EvalError(
            f"double BOS: {lead} leading BOS ids (template and tokenizer both add "
            "one; reward-bench#164)"
        )
    if lead == 1:
        return ids, "tokenizer"
    return [bos, *ids], "prepended"


def tokenizer_template_inputs(
    paths: RunPaths, tokenizer, model_dir: Path, max_length: int
) -> EvalInputs:
    """The leaderboard inputs (spec 8.3): chat template, one BOS, left truncation."""
    from ..formatting import rewardbench_messages

    if not tokenizer.chat_template:
        raise EvalError(
            f"{model_dir}: the tokenizer has no chat template (run_rm.py would fall "
            "back to FastChat 'tulu' silently; reward-bench#226)"
        )
    source = paths.raw_data("rewardbench")
    if not source.is_file():
        raise EvalError(f"{source}: RewardBench pairs not found (run download-data first)")
    rows = valid_rewardbench_rows(source)
    out = EvalInputs([], [], [], [])
    bos_how: Counter = Counter()
    over = truncated = 0
    for line, row in rows:
        sides = []
        for key in ("chosen", "rejected"):
            try:
                ids, how = template_ids(tokenizer, rewardbench_messages(row["prompt"], row[key]))
            except EvalError as exc:
                raise EvalError(f"{source}: line {line} ({key}): {exc}") from None
            bos_how[how] += 1
            sides.append(ids)
        over += max(map(len, sides)) > RUN_RM_MAX_LENGTH
        if max(map(len, sides)) > max_length:
            truncated += 1
            # truncation_side="left": keep the end, where the reward is read (spec pitfall 7).
            sides = [s[-max_length:] for s in sides]
        out.ids.append(int(row["id"]))
        out.subsets.append(str(row["subset"]))
        out.chosen.append(sides[0])
        out.rejected.append(sides[1])
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


# --------------------------------------------------------------------------- outputs


def write_pairs(path: Path, inputs: EvalInputs, chosen: np.ndarray, rejected: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array(inputs.ids, pa.int64()),
            "subset": pa.array(inputs.subsets, pa.string()),
            "reward_chosen": pa.array(chosen, pa.float64()),
            "reward_rejected": pa.array(rejected, pa.float64()),
            "correct": pa.array(chosen > rejected, pa.bool_()),  # strict >: a tie is wrong
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def pooled_tokens(tokenizer, inputs: EvalInputs) -> dict[str, int]:
    """How often each token is the one the reward is read at (EOS in training format, the
    newline after EOS with the Tulu chat template)."""
    last = Counter(s[-1] for s in (*inputs.chosen, *inputs.rejected))
    return {tokenizer.convert_ids_to_tokens(t): n for t, n in last.most_common(3)}


def metric_name(name: str) -> str:
    return name.lower().replace(" ", "_")


def mlflow_metrics(scores: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {
        "score": scores["score"]["score"],
        "ties": scores["ties"],
        "n_pairs": scores["n_pairs"],
    }
    for key in ("ci_low", "ci_high"):
        out[f"score.{key}"] = scores["score"][key]
    for name, est in scores["sections"].items():
        for key, v in est.items():
            out[f"section.{metric_name(name)}" + ("" if key == "score" else f".{key}")] = v
    for name, sub in scores["subsets"].items():
        out[f"subset.{name}"] = sub["accuracy"]
    old = scores["variants"]["pre_2024_09_xstest"]
    out["variant.pre_2024_09_xstest.safety"] = old["sections"]["Safety"]["score"]
    out["variant.pre_2024_09_xstest.score"] = old["score"]["score"]
    out["variant.old_score_4_5"] = scores["variants"]["old_score_4_5"]["score"]
    out["variant.old_score_4_5_pre_2024_09_xstest"] = scores["variants"][
        "old_score_4_5_pre_2024_09_xstest"
    ]["score"]
    for key, v in scores["scoring"].items():
        out[f"scoring.{key}"] = v
    return out


# --------------------------------------------------------------------------- stage


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    import torch

    from ..data import load_tokenizer
    from ..scoring import score_pairs

    e = cfg.eval
    model_dir = paths.rm_model
    verify_inputs(paths, STAGE)
    torch.manual_seed(0)  # nothing is sampled; fixed anyway so a rerun is bit-identical
    model = load_model(model_dir, e.dtype, cfg.model.attn_implementation)
    tokenizer = load_tokenizer(model_dir)
    pad_id = check_pad(model, tokenizer, model_dir)
    if e.input_mode == "training-format":
        inputs = training_format_inputs(paths, tokenizer)
    else:
        inputs = tokenizer_template_inputs(paths, tokenizer, model_dir, e.template_max_length)
    rb.check_subsets(inputs.subsets)  # before the (long) scoring, not after
    over_2048 = sum(
        max(len(c), len(r)) > RUN_RM_MAX_LENGTH
        for c, r in zip(inputs.chosen, inputs.rejected, strict=True)
    )
    inputs.info.setdefault("pairs_over_2048", over_2048)

    print(
        f"eval_rewardbench: {len(inputs.ids)} pairs, input mode {e.input_mode}, {e.dtype}, "
        f"token budget {e.token_budget}"
    )
    chosen, rejected, stats = score_pairs(
        model, inputs.chosen, inputs.rejected, pad_id=pad_id, token_budget=e.token_budget
    )
    ev = rb.evaluate(
        inputs.subsets,
        chosen,
        rejected,
        bootstrap_samples=e.bootstrap_samples,
        bootstrap_seed=e.bootstrap_seed,
    )
    scores = {
        "input_mode": e.input_mode,
        "dtype": e.dtype,
        **rb.scores_json(ev),
        "model": str(model_dir),
        "inputs": {**inputs.info, "pooled_tokens": pooled_tokens(tokenizer, inputs)},
        "scoring": stats.as_dict(),
        "weights": "reward-bench EXAMPLE_COUNTS @ ece3d67 (math-prm 984; spec 8.2)",
    }
    current = rb.comparison_rows(ev, rb.CARD_CURRENT)
    first = rb.comparison_rows(ev, rb.CARD_FIRST_REVISION, first_revision=True)
    comparison = {
        "input_mode": e.input_mode,
        "dtype": e.dtype,
        "card_revision": "current cards (spec 10.1)",
        "rows": current,
        "first_revision": {
            "card_revision": "June 2024 cards (spec 10.2); pre-2024-09 weights, "
            "Score = sum of sections / 4.5",
            "rows": first,
        },
    }
    out = paths.stage_dir(STAGE)
    write_pairs(paths.eval_pairs, inputs, chosen, rejected)
    write_json(paths.eval_scores, scores)
    write_json(paths.eval_comparison, comparison)
    md = out / "comparison.md"
    header = (
        f"RewardBench, {len(inputs.ids)} pairs, input mode `{e.input_mode}`, {e.dtype}. "
        "Percent; delta = reproduced - card; reachable: the card value as k / section size "
        "under the current weights.\n\n"
    )
    write_text(
        md,
        header
        + rb.comparison_markdown(current, "Current cards (spec 10.1)")
        + "\n"
        + rb.comparison_markdown(first, "First card revision, June 2024 (spec 10.2)"),
    )

    s = ev.current
    print(
        f"eval_rewardbench: Score {100 * s.score.score:.1f} "
        f"[{100 * s.score.ci_low:.1f}, {100 * s.score.ci_high:.1f}]; "
        + ", ".join(f"{k} {100 * v.score:.1f}" for k, v in s.sections.items())
        + f"; ties {ev.ties}; padding {100 * stats.padding_fraction:.1f}%; "
        f"{stats.sequences_per_s / 2:.1f} pairs/s -> {out}"
    )
    with stage_run(cfg, paths, STAGE) as tr:
        tr.set_tags({"input_mode": e.input_mode, "eval_dtype": e.dtype})
        tr.log_metrics(mlflow_metrics(scores))
        for f in (paths.eval_scores, paths.eval_comparison, md, paths.eval_pairs):
            tr.log_artifact(f)
        tr.log_file_ref("rm_model", model_dir)
        if e.input_mode == "training-format":
            tr.log_dataset("rewardbench", paths.prepared("rewardbench"), context="evaluation")
    return 0
