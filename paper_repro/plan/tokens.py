"""What ``paper-repro plan`` counts as trained: tokens of the prepared data (or an estimate before
it exists), and the tokens ZeRO-3 ranks pay when each micro step waits for the largest one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ReproConfig

# No prepared data yet: UltraFeedback (argilla cleaned, ~60.9k pairs) averages roughly 950
# non-pad Llama 3 tokens per pair (chosen + rejected, each with the shared prompt). Assumption,
# not a measurement: HuggingFaceH4/ultrafeedback_binarized stores ~6.4 kB of text per row
# (4 copies of the prompt + 3 responses), which at ~4.2 bytes per Llama 3 token gives prompts of
# ~150 and responses of ~310 tokens: 2 x 150 + 2 x 310 + ~20 format tokens. `prepare-data`
# replaces this with the exact count.
UF_TOKENS_PER_PAIR_ASSUMED = 950


@dataclass(frozen=True)
class Tokens:
    pairs: int
    nonpad: int  # chosen + rejected tokens over all epochs
    padded: int  # EasyLM: every row padded to max_length
    source: str


def token_counts(
    pairs: int, nonpad_per_epoch: int, max_length: int, epochs: int, source: str
) -> Tokens:
    return Tokens(
        pairs=pairs,
        nonpad=nonpad_per_epoch * epochs,
        padded=2 * pairs * max_length * epochs,
        source=source,
    )


def training_tokens(cfg: ReproConfig, run_dir: Path) -> Tokens:
    """Exact from prepared train parquet; else the data report's means; else the UF assumption."""
    from ..provenance.paths import RunPaths

    paths = RunPaths(run_dir)
    d, epochs = cfg.data, cfg.rm.epochs
    lengths = prepared_lengths(run_dir)
    if lengths is not None:
        n = int(lengths[0].sum() + lengths[1].sum())
        source = f"exact, {paths.prepared('train')}"
        return token_counts(len(lengths[0]), n, d.max_length, epochs, source)
    if paths.data_report.is_file():
        from ..provenance.io import read_json

        rep = read_json(paths.data_report)
        kept = int(rep["train"]["kept"])
        lengths = rep["preference"]["token_lengths"]
        mean = lengths["chosen"]["mean"] + lengths["rejected"]["mean"]
        return token_counts(
            kept,
            round(kept * mean),
            d.max_length,
            epochs,
            f"kept pairs x mean length, {paths.data_report}",
        )
    return token_counts(
        d.expected_pairs,
        d.expected_pairs * UF_TOKENS_PER_PAIR_ASSUMED,
        d.max_length,
        epochs,
        f"ASSUMED: {d.expected_pairs} pairs (none filtered) x "
        f"{UF_TOKENS_PER_PAIR_ASSUMED} tokens/pair (UltraFeedback estimate)",
    )


def prepared_lengths(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Chosen and rejected token counts of the prepared train split, if it exists."""
    from ..provenance.paths import RunPaths

    train = RunPaths(run_dir).prepared("train")
    if not train.is_file():
        return None
    import pyarrow.parquet as pq

    t = pq.read_table(train, columns=["chosen_len", "rejected_len"])
    return tuple(t.column(c).to_numpy().astype(np.int64) for c in ("chosen_len", "rejected_len"))


@dataclass(frozen=True)
class LockstepTokens:
    """Tokens paid when ZeRO-3 ranks run each micro step in lockstep: per step the largest rank's
    tokens, summed over every step of every update, times the world size."""

    packed: int  # token-budget micro batches (batching.BatchPlan with token_budget)
    padded: int  # micro_batch_pairs pairs, rows padded to the longest of each micro batch


def lockstep_tokens(chosen: np.ndarray, rejected: np.ndarray, rm, world: int) -> LockstepTokens:
    """``LockstepTokens`` of the run's own data order (same plan as ``train_rm``)."""
    from ..training.batching import BatchPlan

    tokens, widths = chosen + rejected, np.maximum(chosen, rejected)
    padded_plan = BatchPlan.from_config(rm, tokens, widths, world, packed=False)
    packed_plan = BatchPlan.from_config(rm, tokens, widths, world, packed=True)
    packed = padded = 0
    for k in range(padded_plan.num_updates):
        steps = zip(*(padded_plan.micro_batches(k, r) for r in range(world)), strict=True)
        padded += sum(max(2 * len(m) * int(widths[m].max()) for m in step) for step in steps)
        steps = zip(*packed_plan.packed_update(k), strict=True)
        packed += sum(max(int(tokens[m].sum()) for m in step) for step in steps)
    return LockstepTokens(packed * world, padded * world)
