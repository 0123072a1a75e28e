"""One RewardBench evaluation of one reward model: the function behind the stages
eval_rewardbench and eval_reference and ``paper-repro eval-rewardbench --model``, so every
number they print comes from the same code and the same ``eval`` settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ReproConfig
from ..provenance.paths import EvalFiles, RunPaths
from . import outputs
from . import sections as rb
from .inputs import EvalInputs, build_inputs, read_where_reward_bench_does
from .model import check_pad, filler_pad, load_model, reward_bench_pad

WEIGHTS = "reward-bench EXAMPLE_COUNTS @ ece3d67 (math-prm weight 984)"


@dataclass
class Evaluated:
    """An evaluation's results as written to ``files``."""

    files: EvalFiles
    evaluation: rb.Evaluation
    scores: dict[str, Any]
    inputs: EvalInputs
    chosen: np.ndarray
    rejected: np.ndarray

    def summary(self) -> str:
        s = self.evaluation.current
        sc = self.scores["scoring"]
        return (
            f"Score {100 * s.score.score:.1f} [{100 * s.score.ci_low:.1f}, "
            f"{100 * s.score.ci_high:.1f}]; "
            + ", ".join(f"{k} {100 * v.score:.1f}" for k, v in s.sections.items())
            + f"; ties {self.evaluation.ties}; padding {100 * sc['padding_fraction']:.1f}%; "
            f"{sc['pairs_per_s']:.1f} pairs/s -> {self.files.folder}"
        )


def evaluate_rm(
    model_dir: Path,
    cfg: ReproConfig,
    paths: RunPaths,
    files: EvalFiles,
    *,
    name: str,
    own_export: bool,
    as_reward_bench: bool = False,
    log: str = "eval",
) -> Evaluated:
    """Score every RewardBench pair with the model in ``model_dir`` under ``cfg.eval`` and write
    ``files``. ``name``: the leaderboard's model name. ``own_export``: the pipeline's exported RM
    (strict pad checks; training-format ids from prepare_data); any other model gets the same
    rendering from the raw pairs with its own tokenizer and a recorded filler pad.
    ``as_reward_bench`` (``--model``): in tokenizer-template mode the BOS is as the tokenizer gives
    it, not made one as in training (``inputs.template_ids``)."""
    import torch

    from ..data import load_tokenizer
    from .scorer import score_pairs

    e = cfg.eval
    torch.manual_seed(0)  # nothing is sampled; fixed anyway so a rerun is bit-identical
    model = load_model(model_dir, e.dtype, cfg.model.attn_implementation, strict=own_export)
    tokenizer = load_tokenizer(model_dir)
    if own_export:
        pad_id, pad_note = check_pad(model, tokenizer, model_dir), None
    else:
        pad_id, pad_note = filler_pad(model, tokenizer, model_dir)
    own_pad = pad_id if pad_note is None else None
    inputs = build_inputs(
        paths,
        tokenizer,
        model_dir,
        e.input_mode,
        e.template_max_length,
        own_export=own_export,
        pad_token_id=own_pad,
        as_tokenizer=as_reward_bench,
    )
    if e.input_mode == "tokenizer-template":
        read_where_reward_bench_does(inputs, reward_bench_pad(tokenizer, model_dir))
    rb.check_subsets(inputs.subsets)  # before the (long) scoring, not after
    if pad_note:
        print(f"{log}: NOTE {pad_note}")
    print(
        f"{log}: {name}: {len(inputs.ids)} pairs, input mode {e.input_mode}, {e.dtype}, "
        f"token budget {e.token_budget}"
    )
    chosen, rejected, stats = score_pairs(
        model,
        inputs.chosen,
        inputs.rejected,
        pad_id=pad_id,
        token_budget=e.token_budget,
        starts=inputs.starts,
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
        "model": name,
        "pad": {"id": pad_id, "note": pad_note},
        "inputs": {**inputs.info, "pooled_tokens": outputs.pooled_tokens(tokenizer, inputs)},
        "scoring": stats.as_dict(),
        "weights": WEIGHTS,
    }
    outputs.write_outputs(
        files,
        inputs,
        chosen,
        rejected,
        scores,
        outputs.comparison(ev, e.input_mode, e.dtype),
        outputs.leaderboard(ev, name, e.input_mode),
    )
    done = Evaluated(files, ev, scores, inputs, chosen, rejected)
    print(f"{log}: {done.summary()}")
    return done
