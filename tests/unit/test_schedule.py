"""EasyLM's joined linear warmup / linear decay schedule (docs/fidelity.md §3), against hand-computed values,
and the lr the training loop applies at each update."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from paper_repro.config import load_config
from paper_repro.training.schedule import LRSchedule, lr_at, num_updates, num_warmup


def test_card_recipe_counts():
    # 60,416 <= kept < 60,928 pairs, 512 per update, 1 epoch -> 118 updates, ceil(3.54) = 4 warmup
    assert num_updates(60917, 512, 1) == 118
    assert num_updates(60416, 512, 1) == 118
    assert num_updates(60415, 512, 1) == 117
    assert num_warmup(118, 0.03) == 4
    assert num_updates(3888, 32, 4) == 484  # tiny preset: 121 per epoch, drop_last per epoch


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (0, 0.0),  # the first update has lr 0 (optax linear warmup from init_lr 0)
        (1, 2.5e-6),  # 1e-5 * 1/4
        (3, 7.5e-6),
        (4, 1e-5),  # end of warmup: the peak
        (61, 5.5e-6),  # middle of the decay: 1e-5 - 9e-6 * 57/114
        (117, 1e-5 - 9e-6 * 113 / 114),  # last update = 1.0789...e-6
        (118, 1e-6),  # end_lr is reached just after the last update
    ],
)
def test_lr_values_d118_w4(k, expected):
    assert lr_at(k, peak=1e-5, end_lr=1e-6, warmup=4, total=118) == pytest.approx(
        expected, rel=1e-12
    )


def test_last_update_value_written_out():
    assert lr_at(117, peak=1e-5, end_lr=1e-6, warmup=4, total=118) == pytest.approx(1.0789473684e-6)


def test_schedule_from_config_matches_derived():
    cfg = load_config("tiny")
    sched = LRSchedule.from_config(cfg.rm, 3888)
    assert (sched.total, sched.warmup) == (484, 15)  # ceil(0.03 * 484) = 15
    assert sched(0) == 0.0 and sched(15) == pytest.approx(1e-3)
    assert sched(483) == pytest.approx(1e-3 - 9e-4 * 468 / 469)


def test_edge_cases():
    assert lr_at(0, peak=1.0, end_lr=0.5, warmup=0, total=10) == 1.0  # no warmup
    assert lr_at(3, peak=1.0, end_lr=0.5, warmup=4, total=4) == 0.75  # all warmup
    assert lr_at(4, peak=1.0, end_lr=0.5, warmup=4, total=4) == 1.0
    with pytest.raises(ValueError):
        lr_at(-1, peak=1.0, end_lr=0.5, warmup=4, total=10)
    assert math.isclose(lr_at(9, peak=1.0, end_lr=0.5, warmup=0, total=10), 0.55)


def test_the_training_loop_applies_update_ks_lr(tiny_model_factory):
    """engine.Trainer._update asks the schedule for the lr of update k: the optimizer must step
    with schedule(k), so the first update has lr 0 and leaves the weights unchanged. An off-by-one
    there (k + 1, k - 1) fails here, in well under a second."""
    from paper_repro.config import RMTrainConfig
    from paper_repro.training.backends import TorchBackend
    from paper_repro.training.batching import BatchPlan
    from paper_repro.training.engine import Trainer

    pad = 31  # tiny_model_factory's pad id
    model = tiny_model_factory().train()
    pairs = SimpleNamespace(
        chosen=[np.array([1, 3 + i % 7, 2]) for i in range(16)],
        rejected=[np.array([1, 10 + i % 5, 11, 2]) for i in range(16)],
    )
    rm = RMTrainConfig(activation_checkpointing=False, weight_decay=0.0)
    backend = TorchBackend(model, rm, device="cpu")
    plan = BatchPlan(16, total_batch=4, micro_batch=2)
    schedule = LRSchedule(peak=1e-3, end_lr=1e-4, warmup=2, total=plan.num_updates)
    before = [p.detach().clone() for p in model.parameters()]
    applied, unchanged = [], []

    def record(m):
        applied.append((m.lr, backend.optimizer.param_groups[0]["lr"]))
        if m.update == 0:
            unchanged.append(
                all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
            )

    Trainer(backend, pairs, plan, schedule, pad, on_update=record, progress=False).fit()
    want = [schedule(k) for k in range(plan.num_updates)]
    assert want == pytest.approx([0.0, 5e-4, 1e-3, 5.5e-4])
    assert applied == [(lr, lr) for lr in want]
    assert unchanged == [True]
