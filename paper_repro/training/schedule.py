"""EasyLM's learning-rate schedule for RM training (docs/fidelity.md §3).

EasyLM's ``AdamWOptimizerFactory`` joins two optax linear schedules at the warmup boundary::

    lr_k = peak * k / W                              for k < W   (so the first update has lr 0)
    lr_k = peak + (end_lr - peak) * (k - W) / (D - W)   for k >= W

with ``D = epochs * floor(kept_pairs / total_batch)`` updates (``lr_decay_steps``, overwritten by
``llama_train_rm.py``) and ``W = ceil(warmup_ratio * D)``. ``k`` counts optimizer updates from 0.
``end_lr`` is an absolute learning rate; it is reached just after the last update (k = D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def num_updates(kept_pairs: int, total_batch_pairs: int, epochs: int) -> int:
    """Optimizer updates of a run: drop_last per epoch, so a partial update-group never runs."""
    return epochs * (kept_pairs // total_batch_pairs)


def num_warmup(updates: int, warmup_ratio: float) -> int:
    return math.ceil(warmup_ratio * updates)


def lr_at(k: int, *, peak: float, end_lr: float, warmup: int, total: int) -> float:
    """Learning rate of update ``k`` (0-based). optax's linear_schedule with zero transition
    steps is constant at its start value, hence the ``warmup == total`` branch."""
    if k < 0:
        raise ValueError(f"update index must be >= 0, got {k}")
    if k < warmup:
        return peak * k / warmup
    if total <= warmup:
        return peak
    return peak + (end_lr - peak) * (k - warmup) / (total - warmup)


@dataclass(frozen=True)
class LRSchedule:
    peak: float
    end_lr: float
    warmup: int  # W
    total: int  # D

    @classmethod
    def from_config(cls, rm, kept_pairs: int) -> LRSchedule:
        """``rm``: an ``RMTrainConfig``."""
        total = num_updates(kept_pairs, rm.total_batch_pairs, rm.epochs)
        return cls(rm.lr, rm.end_lr, num_warmup(total, rm.warmup_ratio), total)

    def __call__(self, k: int) -> float:
        return lr_at(k, peak=self.peak, end_lr=self.end_lr, warmup=self.warmup, total=self.total)
