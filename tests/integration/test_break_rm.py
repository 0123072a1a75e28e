"""The break-the-RM probe: a reward model whose reward is read at the first token (the BOS) instead
of the last real token (the EOS) is trained on the tiny fixtures, then scored by the pipeline's
own RewardBench and pairwise-accuracy code. The BOS sees no answer (causal attention) and is the
same token on both sides, so every Bradley-Terry gradient is exactly zero: the broken run leaves
the freshly initialised head in place and its numbers fall to chance, while the same training
read at the EOS (the control) scores well above it. If the tiny fixtures carried no signal, or
the evaluation did not depend on the model, the two would not differ and these tests fail."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest


def read_first(scores, batch):
    """The break: the score at each sequence's first token (the BOS) instead of its EOS."""
    return scores[batch.first]


@dataclass(frozen=True)
class Probe:
    rewardbench_score: float  # RewardBench Score (section-weighted), fraction
    heldout_accuracy: float  # strict > on the held-out chat pairs
    arithmetic_accuracy: float  # strict > on the held-out arithmetic pairs


def _split_by_source(paths, pairs):
    """Indices of ``pairs`` whose raw row is an arithmetic row, and of the others."""
    raw = paths.raw_data("preference_heldout").read_text().splitlines()
    arith = np.array(
        [json.loads(raw[int(r)])["source"] == "fixture-arithmetic" for r in pairs.row], dtype=bool
    )
    return np.flatnonzero(arith), np.flatnonzero(~arith)


def _accuracy(model, pairs, idx, pad_id: int) -> float:
    from paper_repro.rewardbench import pair_correct
    from paper_repro.scoring import score_pairs

    c, r, _ = score_pairs(
        model,
        [pairs.chosen[i] for i in idx],
        [pairs.rejected[i] for i in idx],
        pad_id=pad_id,
        token_budget=8192,
        progress=False,
    )
    return float(pair_correct(c, r).mean())


def train_and_probe(paths, cfg, pool, n_train: int) -> Probe:
    """Train the tiny RM on the first ``n_train`` train pairs (one epoch, packed) with reward
    read-out ``pool``; evaluate with the pipeline's scorer, which reads the reward at the EOS."""
    from paper_repro import rewardbench as rb
    from paper_repro.backends import TorchBackend
    from paper_repro.batching import BatchPlan, pair_tokens
    from paper_repro.data import PairData, load_pairs
    from paper_repro.engine import Trainer
    from paper_repro.modeling import load_reward_model_from_base
    from paper_repro.schedule import LRSchedule
    from paper_repro.scoring import score_pairs

    rm, pad = replace(cfg.rm, epochs=1), cfg.data.pad_token_id
    full = load_pairs(paths.prepared("train"))
    train = PairData(full.chosen[:n_train], full.rejected[:n_train], full.row[:n_train])
    model = load_reward_model_from_base(
        paths.base_model, pad_token_id=pad, init_std=rm.head_init_std, seed=rm.seed
    )
    backend = TorchBackend(model, rm, packed=True, device="cpu")
    plan = BatchPlan(
        n_train,
        total_batch=rm.total_batch_pairs,
        micro_batch=rm.micro_batch_pairs,
        seed=rm.seed,
        token_budget=rm.token_budget,
        tokens=pair_tokens(train),
    )
    schedule = LRSchedule.from_config(rm, n_train)
    Trainer(backend, train, plan, schedule, pad, pool=pool, progress=False).fit()
    model.eval()

    bench = load_pairs(paths.prepared("rewardbench"))
    c, r, _ = score_pairs(model, bench.chosen, bench.rejected, pad_id=pad, token_budget=8192)
    ev = rb.evaluate(bench.subset, c, r, bootstrap_samples=10)
    heldout = load_pairs(paths.prepared("heldout"))
    arith, chat = _split_by_source(paths, heldout)
    return Probe(
        rewardbench_score=ev.current.score.score,
        heldout_accuracy=_accuracy(model, heldout, chat, pad),
        arithmetic_accuracy=_accuracy(model, heldout, arith, pad),
    )


def test_reward_read_at_first_token_falls_to_chance(tiny_run, tiny_cfg):
    """Seconds: 20 updates of 32 pairs on the tests' briefly trained base, both read-outs."""
    control = train_and_probe(tiny_run, tiny_cfg, _read_last(), n_train=640)
    broken = train_and_probe(tiny_run, tiny_cfg, read_first, n_train=640)
    print(f"control {control}\nbroken  {broken}")
    assert control.heldout_accuracy >= 0.9
    assert control.rewardbench_score >= 0.6
    assert abs(broken.heldout_accuracy - 0.5) <= 0.15
    assert abs(broken.rewardbench_score - 0.5) <= 0.15
    assert control.rewardbench_score - broken.rewardbench_score >= 0.15


@pytest.mark.slow
def test_full_tiny_rm_with_first_token_reward_loses_rewardbench_and_sums(tmp_path):
    """The tiny preset as shipped (full SFT base, the whole train split): the control learns to
    prefer right sums, the broken RM does not."""
    from paper_repro.config import load_config
    from paper_repro.paths import RunPaths
    from paper_repro.stages import download_base, download_data, prepare_data

    cfg = load_config("tiny", [])
    paths = RunPaths(tmp_path / "run")
    for stage in (download_base, download_data, prepare_data):
        assert stage.run(cfg, paths) == 0
    control = train_and_probe(paths, cfg, _read_last(), n_train=2400)
    broken = train_and_probe(paths, cfg, read_first, n_train=2400)
    print(f"control {control}\nbroken  {broken}")
    assert control.arithmetic_accuracy >= 0.8
    assert abs(broken.arithmetic_accuracy - 0.5) <= 0.15
    assert 0.6 <= control.rewardbench_score <= 0.9
    assert abs(broken.rewardbench_score - 0.5) <= 0.15


def _read_last():
    from paper_repro.engine import read_last

    return read_last
