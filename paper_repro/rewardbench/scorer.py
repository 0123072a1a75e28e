"""Fast, batch-invariant reward scoring of token sequences.

Packed (the default wherever it is the model's own attention, ``modeling.supports_packed``):
sequences sorted by length, longest first, are concatenated into rows of at
most ``token_budget`` tokens with no padding at all; attention stays inside each sequence and the
reward is read at its last token (``modeling.packed_token_scores``). Padded (``packed=False``):
length-sorted batches whose padded size (rows x longest row) stays under the budget, with at most
5% padding. Either way rewards come back in the input order, and a reward does not depend on its
batch: positions restart for each sequence (packed) or come from the attention mask (padded), and
pooling is at the last real token (EasyLM, docs/fidelity.md §3), so the neighbours in a
batch and the padding side do not change the result (beyond float rounding).

reward-bench's ``run_rm.py`` instead scores fixed-size batches in dataset order padded to the
longest row (reward-bench run_rm.py, docs/fidelity.md §6); ``bench/eval_rewardbench_throughput.py`` compares the two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..training.batching import pack_sequences


@dataclass(frozen=True)
class BatchPlan:
    batches: list[np.ndarray]  # indices into the input sequences, longest batch first
    real_tokens: int
    padded_tokens: int  # sum over batches of rows x longest row (packed: = real_tokens)

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def plan_batches(lengths: Sequence[int], token_budget: int, max_padding: float = 0.05) -> BatchPlan:
    """Length-sorted batches with rows x longest row <= ``token_budget`` and at most
    ``max_padding`` of each batch's tokens being padding.

    Longest first, so an out-of-memory shows up in the first batch rather than at the end; ties
    broken by index, so the plan is deterministic. A batch is closed when the next (shorter) row
    would break the budget or the padding cap, so the padding fraction of the whole plan is at
    most ``max_padding`` too. A sequence longer than the budget gets a batch of its own (it cannot
    be split: pooling needs the whole sequence)."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size and lens.min() <= 0:
        raise ValueError(f"sequence {int(np.argmin(lens))} is empty")
    order = np.lexsort((np.arange(lens.size), -lens))  # by length descending, then index
    batches, start, padded = [], 0, 0
    while start < lens.size:
        width = int(lens[order[start]])  # the longest row of this batch (sorted descending)
        end, waste = start + 1, 0
        while end < lens.size and (end - start + 1) * width <= token_budget:
            extra = width - int(lens[order[end]])
            if waste + extra > max_padding * width * (end - start + 1):
                break
            waste += extra
            end += 1
        batches.append(order[start:end])
        padded += width * (end - start)
        start = end
    return BatchPlan(batches, int(lens.sum()), padded)


def token_cuts(costs: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """``[start, end)`` chunks of ``costs`` in order, each at most ``budget`` in total; an item
    over the budget gets a chunk of its own."""
    cuts, start, total = [], 0, 0
    for i, c in enumerate(costs.tolist()):
        if i > start and total + c > budget:
            cuts.append((start, i))
            start, total = i, 0
        total += c
    if len(costs):
        cuts.append((start, len(costs)))
    return cuts


def plan_packed(lengths: Sequence[int], token_budget: int) -> BatchPlan:
    """Sequences longest first (ties by index), cut in that order into rows of at most
    ``token_budget`` tokens; a sequence longer than the budget gets a row of its own."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size and lens.min() <= 0:
        raise ValueError(f"sequence {int(np.argmin(lens))} is empty")
    order = np.lexsort((np.arange(lens.size), -lens))
    batches = [order[a:b] for a, b in token_cuts(lens[order], token_budget)]
    real = int(lens.sum())
    return BatchPlan(batches, real, real)


@dataclass(frozen=True)
class ScoringStats:
    sequences: int
    batches: int
    real_tokens: int
    padded_tokens: int
    padding_fraction: float
    token_budget: int
    seconds: float
    packed: bool = True

    @property
    def sequences_per_s(self) -> float:
        return self.sequences / self.seconds if self.seconds else float("inf")

    def as_dict(self) -> dict[str, float]:
        return {
            "sequences": self.sequences,
            "batches": self.batches,
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "padding_fraction": self.padding_fraction,
            "token_budget": self.token_budget,
            "packed": self.packed,
            "seconds": self.seconds,
            "pairs_per_s": self.sequences_per_s / 2,
        }


def model_device(model):
    """Where inputs go: the embedding's device (also right for a ``device_map`` split model)."""
    return model.get_input_embeddings().weight.device


def score_sequences(
    model,
    seqs: Sequence[Sequence[int]],
    *,
    pad_id: int,
    token_budget: int,
    packed: bool | None = None,
    padding_side: str = "right",
    progress: bool = True,
    desc: str = "scoring",
    unit: str = "seq",
    unit_scale: float = 1.0,
    starts: Sequence[int] | None = None,
) -> tuple[np.ndarray, ScoringStats]:
    """Reward of every sequence (float64 array in input order) and throughput statistics.

    The model runs in whatever dtype it was loaded in; rewards are read out as float32 values.
    ``packed``: None packs wherever that gives the model's own rewards (``supports_packed``:
    a packable type, no sliding window shorter than the longest sequence). ``padding_side``
    applies to padded batches only. ``starts``: the position id of each sequence's first token
    (default 0)."""
    import contextlib

    import torch

    from ..progress import progress as progress_bar
    from ..training.modeling import (
        packed_attention_mode,
        packed_rewards,
        pad_batch,
        rewards,
        supports_packed,
    )

    lengths = [len(s) for s in seqs]
    if packed is None:
        packed = supports_packed(model, max(lengths, default=0))
    first = np.zeros(len(seqs), dtype=np.int64) if starts is None else np.asarray(starts)
    plan = plan_packed(lengths, token_budget) if packed else plan_batches(lengths, token_budget)
    out = np.empty(len(seqs), dtype=np.float64)
    device = model_device(model)
    bar = progress_bar(
        total=len(seqs),
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=not progress,
    )
    mode = packed_attention_mode(model) if packed else contextlib.nullcontext()
    start = time.perf_counter()
    with torch.inference_mode(), bar, mode:
        for batch in plan.batches:
            if packed:
                ids, lens = pack_sequences([seqs[i] for i in batch])
                r = packed_rewards(model, ids.to(device), lens, first[batch].tolist())
            else:
                ids, mask = pad_batch([list(seqs[i]) for i in batch], pad_id, side=padding_side)
                r = rewards(model, ids.to(device), mask.to(device), torch.from_numpy(first[batch]))
            out[batch] = r.float().cpu().numpy()
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    stats = ScoringStats(
        len(seqs),
        len(plan.batches),
        plan.real_tokens,
        plan.padded_tokens,
        plan.padding_fraction,
        token_budget,
        seconds,
        packed,
    )
    return out, stats


def score_pairs(
    model,
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    *,
    pad_id: int,
    token_budget: int,
    packed: bool | None = None,
    padding_side: str = "right",
    progress: bool = True,
    starts: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, ScoringStats]:
    """Rewards of both sides of every pair. Both sides share one length-sorted pool (better
    packing than scoring them separately); the progress bar counts pairs (two sequences each).
    ``starts``: (chosen, rejected) first position ids, as in ``score_sequences``."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected sequences")
    both, stats = score_sequences(
        model,
        list(chosen) + list(rejected),
        pad_id=pad_id,
        token_budget=token_budget,
        packed=packed,
        padding_side=padding_side,
        progress=progress,
        desc="rewardbench",
        unit="pair",
        unit_scale=0.5,
        starts=None if starts is None else [*starts[0], *starts[1]],
    )
    return both[: len(chosen)], both[len(chosen) :], stats
