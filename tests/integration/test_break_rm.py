"""The break-the-RM probe: a reward model whose reward is read at the first token (the BOS) instead
of the last real token (the EOS) is trained on the tiny fixtures, then scored by the pipeline's
own RewardBench and pairwise-accuracy code. The BOS sees no answer (causal attention) and is the
same token on both sides, so every Bradley-Terry gradient is exactly zero: the broken run leaves
the freshly initialised head in place and its numbers fall to chance, while the same training
read at the EOS (the control) scores well above it. If the tiny fixtures carried no signal, or
the evaluation did not depend on the model, the two would not differ and these tests fail."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from sources import arithmetic_mask, onpolicy_mask


def read_first(scores, batch):
    """The break: the score at each sequence's first token (the BOS) instead of its EOS."""
    return scores[batch.first]


@dataclass(frozen=True)
class Probe:
    rewardbench_score: float  # RewardBench Score (section-weighted), fraction
    heldout_accuracy: float  # strict > on the held-out chat pairs


def _accuracy(model, pairs, idx, pad_id: int) -> float:
    from paper_repro.rewardbench.scorer import score_pairs
    from paper_repro.rewardbench.sections import pair_correct

    c, r, _ = score_pairs(
        model,
        [pairs.chosen[i] for i in idx],
        [pairs.rejected[i] for i in idx],
        pad_id=pad_id,
        token_budget=8192,
        progress=False,
    )
    return float(pair_correct(c, r).mean())


def train_and_probe(paths, cfg, pool, n_train: int, epochs: int = 1) -> Probe:
    """Train the tiny RM on the first ``n_train`` hand-made train pairs (packed) with reward
    read-out ``pool``; evaluate with the pipeline's scorer, which reads the reward at the EOS.
    The probe's own short recipe: the on-policy arithmetic pairs are left out and the lr is the
    one the hand-made pairs learn from in 20 updates (the preset's 1e-3 suits its 484 updates)."""
    from paper_repro.data import PairData, load_pairs
    from paper_repro.rewardbench import sections as rb
    from paper_repro.rewardbench.scorer import score_pairs
    from paper_repro.training.backends import TorchBackend
    from paper_repro.training.batching import BatchPlan, pair_tokens
    from paper_repro.training.engine import Trainer
    from paper_repro.training.modeling import load_reward_model_from_base
    from paper_repro.training.schedule import LRSchedule

    rm = replace(cfg.rm, epochs=epochs, lr=3e-3, end_lr=3e-4)
    pad = cfg.data.pad_token_id
    full = load_pairs(paths.prepared("train"))
    idx = np.flatnonzero(~onpolicy_mask(paths, full))[:n_train]
    train = PairData([full.chosen[i] for i in idx], [full.rejected[i] for i in idx], full.row[idx])
    model = load_reward_model_from_base(
        paths.base_model, pad_token_id=pad, init_std=rm.head_init_std, seed=rm.seed
    )
    backend = TorchBackend(model, rm, packed=True, device="cpu")
    plan = BatchPlan(
        n_train,
        total_batch=rm.total_batch_pairs,
        micro_batch=rm.micro_batch_pairs,
        epochs=epochs,
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
    chat = np.flatnonzero(~arithmetic_mask(paths, heldout))
    return Probe(
        rewardbench_score=ev.current.score.score,
        heldout_accuracy=_accuracy(model, heldout, chat, pad),
    )


@pytest.mark.slow  # trains two RMs
def test_reward_read_at_first_token_falls_to_chance(tiny_run, tiny_cfg):
    """Seconds on an idle machine: 20 updates of 32 pairs on the tests' briefly trained base
    (60 SFT steps), both read-outs. Held-out accuracy on the chat pairs only: the tiny RM does
    not learn the arithmetic pairs (near chance with either read-out), so they show no fall.
    Measured: control held-out chat 1.00, RewardBench Score 0.69; broken 0.50 and 0.54."""
    control = train_and_probe(tiny_run, tiny_cfg, _read_last(), n_train=640)
    broken = train_and_probe(tiny_run, tiny_cfg, read_first, n_train=640)
    print(f"control {control}\nbroken  {broken}")
    assert control.heldout_accuracy >= 0.9
    assert abs(broken.heldout_accuracy - 0.5) <= 0.1
    assert control.rewardbench_score >= 0.65
    assert abs(broken.rewardbench_score - 0.5) <= 0.15
    assert control.rewardbench_score - broken.rewardbench_score >= 0.1


def _read_last():
    from paper_repro.training.engine import read_last

    return read_last
