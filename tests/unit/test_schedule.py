"""EasyLM's joined linear warmup / linear decay schedule (spec 6.1), against hand-computed values."""

import math

import pytest

from paper_repro.config import load_config
from paper_repro.schedule import LRSchedule, lr_at, num_updates, num_warmup


def test_card_recipe_counts():
    # 60,416 <= kept < 60,928 pairs, 512 per update, 1 epoch -> 118 updates, ceil(3.54) = 4 warmup
    assert num_updates(60917, 512, 1) == 118
    assert num_updates(60416, 512, 1) == 118
    assert num_updates(60415, 512, 1) == 117
    assert num_warmup(118, 0.03) == 4
    assert num_updates(2400, 32, 2) == 150  # tiny preset: 75 per epoch, drop_last per epoch


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
    sched = LRSchedule.from_config(cfg.rm, 2400)
    assert (sched.total, sched.warmup) == (150, 5)
    assert sched(0) == 0.0 and sched(5) == pytest.approx(3e-3)
    assert sched(149) == pytest.approx(3e-3 - 2.7e-3 * 144 / 145)


def test_edge_cases():
    assert lr_at(0, peak=1.0, end_lr=0.5, warmup=0, total=10) == 1.0  # no warmup
    assert lr_at(3, peak=1.0, end_lr=0.5, warmup=4, total=4) == 0.75  # all warmup
    assert lr_at(4, peak=1.0, end_lr=0.5, warmup=4, total=4) == 1.0
    with pytest.raises(ValueError):
        lr_at(-1, peak=1.0, end_lr=0.5, warmup=4, total=10)
    assert math.isclose(lr_at(9, peak=1.0, end_lr=0.5, warmup=0, total=10), 0.55)
