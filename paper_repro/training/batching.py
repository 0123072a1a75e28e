"""Which pairs go into which update, micro batch and rank; and how a micro batch is padded.

EasyLM order (docs/fidelity.md §2): a seeded shuffle with drop_last. An epoch is one
permutation of the kept pairs (``epoch_order``), cut into update-groups of ``total_batch`` pairs;
the ``n mod total_batch`` pairs left over at the end of an epoch are dropped. Update ``k`` always
sees the same group, whatever the world size, so the order is a pure function of ``k``: resuming at
update ``k`` needs nothing but ``k``. Two permutations (``rm.data_order``):

* ``easylm``: exactly the one EasyLM's loader drew (``easylm_permutation``), so the update groups
  are the original run's, given the same kept pairs in the same order.
* ``seeded-randperm``: ``torch.randperm`` from a generator seeded with ``seed + epoch``.

An update-group is cut into ``accumulation x world`` micro batches of ``micro_batch`` pairs; micro
batch ``j`` goes to rank ``j % world`` (at accumulation step ``j // world``). With
``length_grouped`` the pairs of a group are first sorted by length: every update still uses exactly
the same pairs (same gradient up to summation order), but each micro batch pads far less, and
neighbouring ranks get similar lengths at each step.

Each micro batch is one forward pass over ``[chosen; rejected]`` (docs/fidelity.md §3). Padded
(``PairBatch``): right-padded with the pad id to the longest row of that micro batch (EasyLM pads to
``seq_length``; positions and pooling come from the mask, so the extra padding changes nothing but
cost). Packed (``PackedBatch``, with ``token_budget``): the update-group's pairs are spread over
micro batches of at most ``token_budget`` tokens, the same number on every rank (ZeRO-3 ranks
gather parameters in lockstep) and balanced by tokens (``balanced_micro_batches``); each is one row
holding its chosen sides then its rejected sides back to back, no padding at all
(``modeling.packed_token_scores`` keeps attention inside each sequence). A pair longer than the
budget on its own still trains, alone in its micro batch. Which micro batch a pair lands in changes
nothing but the summation order: the loss is the mean over the whole group either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .modeling import last_token_index


@dataclass(frozen=True)
class PairBatch:
    """One micro batch: rows ``[0, n_pairs)`` are the chosen sides, ``[n_pairs, 2 n_pairs)`` the
    rejected sides of the same pairs, in the same order."""

    input_ids: torch.Tensor  # [2 * n_pairs, T], right-padded
    attention_mask: torch.Tensor  # [2 * n_pairs, T], 1 on real tokens
    n_pairs: int

    @property
    def tokens(self) -> int:
        """Non-pad tokens (what the tokens/s metric counts)."""
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.attention_mask.numel()

    @property
    def last(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of each sequence's last real token (the EOS)."""
        rows = torch.arange(self.input_ids.shape[0], device=self.input_ids.device)
        return rows, last_token_index(self.attention_mask)

    @property
    def first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of each sequence's first token (the BOS; right padding)."""
        rows = torch.arange(self.input_ids.shape[0], device=self.input_ids.device)
        return rows, torch.zeros_like(rows)

    def model_inputs(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.n_pairs)


@dataclass(frozen=True)
class PackedBatch:
    """One micro batch as a single row without padding: the chosen sides of its pairs, then the
    rejected sides in the same order (sequence ``i`` and ``n_pairs + i`` are one pair)."""

    input_ids: torch.Tensor  # [1, sum(lengths)]
    lengths: tuple[int, ...]  # 2 * n_pairs sequence lengths
    n_pairs: int

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()  # == tokens: nothing is padded

    @property
    def last(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of each sequence's last token (the EOS)."""
        ends = torch.tensor(self.lengths, device=self.input_ids.device).cumsum(0)
        return torch.zeros_like(ends), ends - 1

    @property
    def first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of each sequence's first token (the BOS)."""
        lengths = torch.tensor(self.lengths, device=self.input_ids.device)
        return torch.zeros_like(lengths), lengths.cumsum(0) - lengths

    def model_inputs(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "lengths": self.lengths}

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.lengths, self.n_pairs)


Batch = PairBatch | PackedBatch


def _check_pairs(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]]) -> None:
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"need as many chosen as rejected sides (> 0), got {len(chosen)} and {len(rejected)}"
        )
    if any(len(r) == 0 for r in (*chosen, *rejected)):
        raise ValueError("empty token sequence in a pair (prepared rows are BOS ... EOS)")


def pack_sequences(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The sequences back to back in one ``[1, total]`` row, and their lengths."""
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    return torch.from_numpy(ids).unsqueeze(0), tuple(len(s) for s in seqs)


def pack_pairs(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]]) -> PackedBatch:
    """``[chosen; rejected]`` concatenated into one row, no padding."""
    _check_pairs(chosen, rejected)
    return PackedBatch(*pack_sequences([*chosen, *rejected]), len(chosen))


def collate_pairs(
    chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], pad_id: int
) -> PairBatch:
    """``[chosen; rejected]`` right-padded to the longest of all ``2 n`` rows."""
    _check_pairs(chosen, rejected)
    rows = [*chosen, *rejected]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return PairBatch(torch.from_numpy(ids), torch.from_numpy(mask), len(chosen))


def pair_lengths(pairs) -> np.ndarray:
    """Padding cost key of each pair: the longer of its two sides."""
    return np.fromiter(
        (max(len(c), len(r)) for c, r in zip(pairs.chosen, pairs.rejected, strict=True)),
        dtype=np.int64,
        count=len(pairs.chosen),
    )


def pair_tokens(pairs) -> np.ndarray:
    """Packed cost of each pair: the tokens of both sides."""
    return np.fromiter(
        (len(c) + len(r) for c, r in zip(pairs.chosen, pairs.rejected, strict=True)),
        dtype=np.int64,
        count=len(pairs.chosen),
    )


def balanced_micro_batches(costs: np.ndarray, world: int, budget: int) -> list[list[np.ndarray]]:
    """Positions ``0 .. len(costs) - 1`` of one update's pairs split into ``n`` micro batches per
    rank, ``n`` the smallest for which every micro batch of two or more pairs stays within
    ``budget`` tokens. The ``world x n`` micro batches are filled longest pair first into the one
    with the fewest tokens so far (LPT scheduling), so the ranks, which run each micro step in
    lockstep under ZeRO-3, carry nearly equal tokens at every step; every micro batch holds at
    least one pair. Returns ``[rank][step]`` arrays of positions in ascending order."""
    costs = np.asarray(costs, dtype=np.int64)
    if not len(costs) or len(costs) % world:
        raise ValueError(f"{len(costs)} pairs do not split evenly over {world} ranks")
    order = np.argsort(-costs, kind="stable")
    n = min(math.ceil(int(costs.sum()) / (world * budget)), len(costs) // world)
    while True:  # ends at the latest with one pair per micro batch (n = len / world)
        slots = world * n
        load, members = np.zeros(slots, dtype=np.int64), [[] for _ in range(slots)]
        for i in order:  # the first `slots` pairs each open an empty micro batch
            s = int(np.argmin(load))
            load[s] += costs[i]
            members[s].append(i)
        if all(load[s] <= budget or len(members[s]) == 1 for s in range(slots)):
            break
        n += 1
    return [[np.sort(members[m * world + r]) for m in range(n)] for r in range(world)]


DATA_ORDERS = ("easylm", "seeded-randperm")


def _draw_int64(gen: torch.Generator) -> int:
    return int(torch.empty((), dtype=torch.int64).random_(generator=gen).item())


def easylm_permutation(n: int, epoch: int, seed: int = 42) -> np.ndarray:
    """The order of epoch ``epoch`` of EasyLM's RM training data.

    ``DatasetFactory.load_dataset`` (``EasyLM/data.py`` lines 72-82, ``preference_json_torch``) calls
    ``torch.manual_seed(42)`` and returns ``DataLoader(dataset, shuffle=True, drop_last=True)``; the
    RM trainer (``EasyLM/models/llama/llama_train_rm.py`` lines 322-323) iterates it once per
    epoch, and nothing in between draws from torch's global generator. Each new iterator draws one
    int64 from it for its worker seeds (``_BaseDataLoaderIter._base_seed``), then, at the first
    batch, ``RandomSampler`` draws another that seeds its own generator for ``randperm(n)``.
    ``drop_last`` only cuts the tail of that permutation. (With more than one epoch, EasyLM's
    ``optax.MultiSteps`` accumulation could straddle an epoch boundary when floor(n / micro batch)
    is not a multiple of the accumulation; the plan keeps every update-group inside an epoch.)"""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epoch + 1):
        _draw_int64(gen)  # the DataLoader iterator's base seed
        sampler_seed = _draw_int64(gen)  # RandomSampler.__iter__
    return torch.randperm(n, generator=torch.Generator().manual_seed(sampler_seed)).numpy()


class BatchPlan:
    """The data order of a run: ``micro_batches(k, rank)`` lists the pair indices each rank uses
    at update ``k``. Pure function of its arguments (no hidden iterator state)."""

    def __init__(
        self,
        n_pairs: int,
        *,
        total_batch: int,
        micro_batch: int,
        world_size: int = 1,
        epochs: int = 1,
        seed: int = 42,
        order: str = "easylm",
        length_grouped: bool = False,
        lengths: np.ndarray | None = None,
        token_budget: int | None = None,
        tokens: np.ndarray | None = None,
    ):
        if order not in DATA_ORDERS:
            raise ValueError(f"data order {order!r}: choose one of {', '.join(DATA_ORDERS)}")
        if total_batch % (micro_batch * world_size):
            raise ValueError(
                f"total batch {total_batch} pairs is not divisible by micro batch x world size "
                f"({micro_batch} x {world_size})"
            )
        if length_grouped and (lengths is None or len(lengths) != n_pairs):
            raise ValueError("length_grouped needs one length per pair")
        if token_budget is not None and (tokens is None or len(tokens) != n_pairs):
            raise ValueError("a token budget needs the token count of every pair")
        if token_budget is not None and token_budget <= 0:
            raise ValueError(f"token budget must be positive, got {token_budget}")
        self.n_pairs, self.total_batch, self.micro_batch = n_pairs, total_batch, micro_batch
        self.world_size, self.epochs, self.seed, self.order = world_size, epochs, seed, order
        self.length_grouped = length_grouped
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.token_budget = token_budget
        self.tokens = None if tokens is None else np.asarray(tokens)
        self.accumulation = total_batch // (micro_batch * world_size)
        self.updates_per_epoch = n_pairs // total_batch
        self.num_updates = epochs * self.updates_per_epoch

    @classmethod
    def from_config(
        cls,
        rm,
        tokens: np.ndarray,
        widths: np.ndarray,
        world_size: int = 1,
        *,
        packed: bool | None = None,
    ) -> BatchPlan:
        """The plan of the ``rm`` config section (``RMTrainConfig``) over pairs of ``tokens``
        (``pair_tokens``) and ``widths`` (``pair_lengths``): train_rm's, the tiny reference
        stand-in's (another seed) and the plan's token counts (``packed`` overrides rm.packing)."""
        packed = rm.packing if packed is None else packed
        return cls(
            len(tokens),
            total_batch=rm.total_batch_pairs,
            micro_batch=rm.micro_batch_pairs,
            world_size=world_size,
            epochs=rm.epochs,
            seed=rm.seed,
            order=rm.data_order,
            length_grouped=rm.length_grouped,
            lengths=widths,
            token_budget=rm.token_budget if packed else None,
            tokens=tokens if packed else None,
        )

    @lru_cache(maxsize=2)  # noqa: B019 - one plan per run; caches the current epoch's permutation
    def epoch_order(self, epoch: int) -> np.ndarray:
        if self.order == "easylm":
            return easylm_permutation(self.n_pairs, epoch, self.seed)
        gen = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n_pairs, generator=gen).numpy()

    def update_group(self, k: int) -> np.ndarray:
        """The ``total_batch`` pair indices of update ``k``."""
        if not 0 <= k < self.num_updates:
            raise IndexError(f"update {k} outside [0, {self.num_updates})")
        epoch, j = divmod(k, self.updates_per_epoch)
        group = self.epoch_order(epoch)[j * self.total_batch : (j + 1) * self.total_batch]
        if self.length_grouped:
            group = group[np.argsort(self.lengths[group], kind="stable")]
        return group

    @property
    def packed(self) -> bool:
        return self.token_budget is not None

    @lru_cache(maxsize=2)  # noqa: B019 - the current update's split, shared by its ranks' calls
    def packed_update(self, k: int) -> list[list[np.ndarray]]:
        """``[rank][step]`` pair indices of update ``k`` with a token budget."""
        group = self.update_group(k)
        cuts = balanced_micro_batches(self.tokens[group], self.world_size, self.token_budget)
        return [[group[positions] for positions in rank] for rank in cuts]

    def micro_batches(self, k: int, rank: int = 0) -> list[np.ndarray]:
        """Pair indices of each forward of ``rank`` at update ``k``. Padded: ``accumulation``
        micro batches of ``micro_batch`` pairs, micro batch ``j`` of the group on rank
        ``j % world``. Packed: the group's pairs balanced by tokens over the ranks
        (``balanced_micro_batches``), as many forwards on every rank."""
        if not 0 <= rank < self.world_size:
            raise IndexError(f"rank {rank} outside world size {self.world_size}")
        if self.packed:
            return self.packed_update(k)[rank]
        group = self.update_group(k)
        chunks = group.reshape(self.accumulation * self.world_size, self.micro_batch)
        return [chunks[a * self.world_size + rank] for a in range(self.accumulation)]


def make_batch(pairs, indices: np.ndarray, pad_id: int, *, packed: bool = False) -> Batch:
    """Collate pairs ``indices`` of a ``PairData``-like object (``.chosen``, ``.rejected``),
    packed or padded."""
    chosen = [pairs.chosen[i] for i in indices]
    rejected = [pairs.rejected[i] for i in indices]
    return pack_pairs(chosen, rejected) if packed else collate_pairs(chosen, rejected, pad_id)
