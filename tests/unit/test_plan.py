"""`paper-repro plan` arithmetic against hand-computed values, and the CLI output."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from paper_repro.config import load_config
from paper_repro.plan import tokens as plan_tokens
from paper_repro.plan import train_rm as plan

# Hand-computed Llama 3 70B reward model (Llama 3 70B config.json shape, score head instead of lm_head):
# embedding 128256*8192 = 1,050,673,152; per layer q,o 2*8192^2 = 134,217,728, k,v
# 2*8192*1024 = 16,777,216, MLP 3*8192*28672 = 704,643,072, norms 2*8192 -> 855,654,400;
# total = 1,050,673,152 + 80*855,654,400 + 8192 (final norm) + 8192 (score) = 69,503,041,536.
P70 = 69_503_041_536
# 8B: 128256*4096 + 32*(2*4096^2 + 2*4096*1024 + 3*4096*14336 + 2*4096) + 4096 + 4096.
P8 = 7_504_928_768


def test_param_formula_hand_values():
    p = plan.rm_param_count(plan.LLAMA3_SHAPES["llama3-70b"])
    assert (p.total, p.embedding, p.per_layer, p.largest_layer) == (
        P70,
        1_050_673_152,
        855_654_400,
        1_050_673_152,
    )
    assert plan.rm_param_count(plan.LLAMA3_SHAPES["llama3-8b"]).total == P8


@pytest.mark.parametrize("arch", ["llama3-70b", "llama3-8b"])
def test_formula_matches_meta_device_model(arch):
    shape = plan.LLAMA3_SHAPES[arch]
    p = plan.rm_param_count(shape)
    assert plan.meta_param_count(shape) == (p.total, p.largest_layer)


def test_flops_and_gpu_hours():
    assert plan.train_flops(10, 7) == 420.0
    # 2 hours of one GPU at 989 TFLOPS and MFU 0.5.
    assert plan.gpu_hours(989e12 * 0.5 * 3600 * 2, 989.0, 0.5) == pytest.approx(2.0)


def test_token_counts():
    t = plan_tokens.token_counts(
        pairs=10, nonpad_per_epoch=1234, max_length=100, epochs=2, source="x"
    )
    assert (t.nonpad, t.padded) == (2468, 2 * 10 * 100 * 2)


def test_activation_bytes_hand_values():
    # checkpoints 2 layers x 4 rows x 8 tokens x 16 hidden x 2 B; one layer 34 x 4 x 8 x 16.
    a = plan.activation_bytes(2, 4, 8, 16, checkpointing=True)
    assert (a.checkpoints, a.working, a.total) == (2048, 17408, 19456)
    b = plan.activation_bytes(2, 4, 8, 16, checkpointing=False)
    assert (b.checkpoints, b.working) == (0, 34816)


def test_max_micro_pairs():
    per_pair = plan.activation_bytes(2, 2, 8, 16, checkpointing=True).total  # 9728 B per pair
    assert per_pair == 9728
    assert plan.max_micro_pairs(3 * per_pair, 2, 8, 16, True) == 3
    assert plan.max_micro_pairs(3 * per_pair, 2, 8, 16, True, pairs_per_rank=16) == 2
    assert plan.max_micro_pairs(per_pair - 1, 2, 8, 16, True) == 0


def test_zero3_numbers_are_deepspeeds():
    # no offload: 4 x largest + 18 x total / gpus; CPU 4 x largest x gpus_per_node x 1.5.
    rows = {r.offload: r for r in plan.zero3_model_states(1000, 10, 2, 1)}
    assert (rows["none"].per_gpu_bytes, rows["none"].per_cpu_bytes) == (40 + 9000, 120)
    # DeepSpeed's estimate_zero3_model_states_mem_needs: the 70B shape on 8 GPUs, no offload.
    big = plan.zero3_model_states(P70, 1_050_673_152, 8, 1)[0]
    assert round(big.per_gpu_bytes / plan.GIB, 2) == 149.56


def _write_pairs(path, lens):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"chosen_len": [c for c, _ in lens], "rejected_len": [r for _, r in lens]}), path
    )


def test_training_tokens_sources(tmp_path):
    cfg = load_config("llama3-70b-uf")
    assumed = plan_tokens.training_tokens(cfg, tmp_path)
    assert assumed.nonpad == 60917 * plan_tokens.UF_TOKENS_PER_PAIR_ASSUMED
    assert assumed.source.startswith("ASSUMED")

    report = {
        "train": {"kept": 100},
        "preference": {"token_lengths": {"chosen": {"mean": 300.5}, "rejected": {"mean": 250.0}}},
    }
    (tmp_path / "prepare_data").mkdir()
    (tmp_path / "prepare_data" / "data_report.json").write_text(json.dumps(report))
    from_report = plan_tokens.training_tokens(cfg, tmp_path)
    assert (from_report.pairs, from_report.nonpad) == (100, 55050)

    _write_pairs(tmp_path / "prepare_data" / "train.parquet", [(10, 20), (30, 5)])
    exact = plan_tokens.training_tokens(cfg, tmp_path)
    assert (exact.pairs, exact.nonpad, exact.padded) == (2, 65, 2 * 2 * 4096)
    assert exact.source.startswith("exact")


def test_cli_prints_the_70b_plan(tmp_path, capsys):
    from paper_repro.cli.commands import main

    rc = main(
        [
            "plan",
            "llama3-70b-uf",
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
            "--run-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "69,503,041,536" in out
    assert "4 node(s) x 8 GPU(s) = 32 GPUs" in out
    assert "offload none" in out and "per GPU" in out
    assert "GPU-hours" in out and "MFU 0.35" in out
    # 6 x 69,503,041,536 x (60917 x 950) with no prepared data
    assert f"{6 * P70 * 60917 * 950:.3e}" in out
    assert ("FITS" in out) or ("DOES NOT FIT" in out)


def test_lockstep_tokens_hand_values():
    # 8 equal pairs (10 + 6 tokens), 2 ranks, 4 pairs per update, micro batch 1 pair: each rank
    # holds 2 pairs (32 tokens) per update; a 20-token budget cuts them into 2 forwards of 16.
    rm = load_config("tiny").rm
    rm.total_batch_pairs, rm.micro_batch_pairs, rm.token_budget, rm.epochs = 4, 1, 20, 1
    chosen, rejected = np.full(8, 10), np.full(8, 6)
    lock = plan_tokens.lockstep_tokens(chosen, rejected, rm, world=2)
    assert lock.packed == 2 * (2 * 16) * 2  # updates x (steps x 16 tokens) x world
    assert lock.padded == 2 * (2 * 2 * 10) * 2  # updates x (steps x 2 rows x 10) x world


def test_cli_prints_packed_and_padded_hours_from_prepared_data(tmp_path, capsys):
    from paper_repro.cli.commands import main

    rng = np.random.default_rng(0)
    lens = rng.lognormal(np.log(450), 0.6, size=(1024, 2)).clip(20, 4096).astype(int)
    _write_pairs(tmp_path / "prepare_data" / "train.parquet", [tuple(x) for x in lens])
    args = ["plan", "llama3-70b-uf", "--nodes", "4", "--gpus-per-node", "8"]
    assert main([*args, "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(GPU-hours, \w+|in lockstep)\s+([\d,.]+) at MFU", out, re.M)
    hours = {label.split()[-1]: float(value.replace(",", "")) for label, value in rows}
    assert "rm.token_budget = 16,384 tokens" in out
    assert hours["packed"] <= hours["lockstep"] < hours["padded"] < hours["EasyLM"], hours
