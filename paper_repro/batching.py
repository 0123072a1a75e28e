"""Which pairs go into which update, micro batch and rank; and how a micro batch is padded.

EasyLM order (reproduction_spec.md section 3.8): a seeded shuffle with drop_last. An epoch is one
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

Each micro batch is one forward pass over ``[chosen; rejected]`` (spec section 5), right-padded with
the pad id to the longest row of that micro batch (EasyLM pads to ``seq_length``; positions and
pooling come from the mask, so the extra padding changes nothing but cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


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

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.n_pairs)


def collate_pairs(
    chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], pad_id: int
) -> PairBatch:
    """``[chosen; rejected]`` right-padded to the longest of all ``2 n`` rows."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"need as many chosen as rejected sides (> 0), got {len(chosen)} and {len(rejected)}"
        )
    rows = [*chosen, *rejected]
    if any(len(r) == 0 for r in rows):
        raise ValueError("empty token sequence in a pair (prepared rows are BOS ... EOS)")
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
        self.n_pairs, self.total_batch, self.micro_batch = n_pairs, total_batch, micro_batch
        self.world_size, self.epochs, self.seed, self.order = world_size, epochs, seed, order
        self.length_grouped = length_grouped
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.accumulation = total_batch // (micro_batch * world_size)
        self.updates_per_epoch = n_pairs // total_batch
        self.num_updates = epochs * self.updates_per_epoch

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

    def micro_batches(self, k: int, rank: int = 0) -> list[np.ndarray]:
        """The ``accumulation`` micro batches (pair indices) of ``rank`` at update ``k``."""
        if not 0 <= rank < self.world_size:
            raise IndexError(f"rank {rank} outside world size {self.world_size}")
        chunks = self.update_group(k).reshape(self.accumulation * self.world_size, self.micro_batch)
        return [chunks[a * self.world_size + rank] for a in range(self.accumulation)]


def make_batch(pairs, indices: np.ndarray, pad_id: int) -> PairBatch:
    """Collate pairs ``indices`` of a ``PairData``-like object (``.chosen``, ``.rejected``)."""
    return collate_pairs(
        [pairs.chosen[i] for i in indices], [pairs.rejected[i] for i in indices], pad_id
    )
