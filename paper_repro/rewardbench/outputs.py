"""What an evaluation writes (``paths.EvalFiles``) and records in MLflow; pure builders plus
atomic writers. Accuracies are fractions in JSON, percent in markdown."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from ..provenance.io import atomic_path, write_json, write_text
from ..provenance.paths import EvalFiles
from . import sections as rb
from .inputs import EvalInputs

# reward-bench's value for every AutoModelForSequenceClassification RM (rewardbench/models
# REWARD_MODEL_CONFIG["default"]["model_type"] @ 2560a78).
MODEL_TYPE = "Seq. Classifier"
# run_rm.py writes "tokenizer" when the tokenizer's chat template was used, else the FastChat
# template name; the training format is the EasyLM rendering of the Tulu template.
CHAT_TEMPLATE = {"tokenizer-template": "tokenizer", "training-format": "tulu (EasyLM training)"}


def write_pairs(path, inputs: EvalInputs, chosen: np.ndarray, rejected: np.ndarray) -> None:
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


def leaderboard(ev: rb.Evaluation, name: str, input_mode: str) -> dict[str, Any]:
    """reward-bench's results file: ``results_grouped`` of scripts/run_rm.py (@ 2560a78) as
    ``save_to_hub`` writes it to ``results/eval-set/<model>.json`` (rewardbench/utils.py @
    a009692): model, model_type, chat_template and one accuracy per subset, nothing nested."""
    return {
        "model": name,
        "model_type": MODEL_TYPE,
        "chat_template": CHAT_TEMPLATE[input_mode],
        **{s: r.accuracy for s, r in ev.subsets.items()},
    }


def comparison(ev: rb.Evaluation, input_mode: str, dtype: str) -> dict[str, Any]:
    return {
        "input_mode": input_mode,
        "dtype": dtype,
        "card_revision": "current cards",
        "rows": rb.comparison_rows(ev, rb.CARD_CURRENT),
        "first_revision": {
            "card_revision": "June 2024 cards; pre-2024-09 weights, Score = sum of sections / 4.5",
            "rows": rb.comparison_rows(ev, rb.CARD_FIRST_REVISION, first_revision=True),
        },
    }


def comparison_markdown(comp: dict[str, Any], n_pairs: int) -> str:
    header = (
        f"RewardBench, {n_pairs} pairs, input mode `{comp['input_mode']}`, {comp['dtype']}. "
        "Percent; delta = this model - card; reachable: the card value as k / section size "
        "under the current weights.\n\n"
    )
    return (
        header
        + rb.comparison_markdown(comp["rows"], "Current cards")
        + "\n"
        + rb.comparison_markdown(comp["first_revision"]["rows"], "First card revision, June 2024")
    )


def write_outputs(
    files: EvalFiles,
    inputs: EvalInputs,
    chosen: np.ndarray,
    rejected: np.ndarray,
    scores: dict[str, Any],
    comp: dict[str, Any],
    board: dict[str, Any],
) -> None:
    write_pairs(files.pairs, inputs, chosen, rejected)
    write_json(files.scores, scores)
    write_json(files.comparison, comp)
    write_text(files.comparison_md, comparison_markdown(comp, len(inputs.ids)))
    # save_to_hub's own serialisation: indent 4, sorted keys
    write_text(files.leaderboard, json.dumps(board, indent=4, sort_keys=True) + "\n")


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
