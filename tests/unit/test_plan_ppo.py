"""`paper-repro plan --stage ppo` arithmetic against hand-computed values, the CLI output, and the
``ppo.generation`` / ``ppo.activation_checkpointing`` config keys."""

from __future__ import annotations

import pytest

from paper_repro.config import ConfigError, load_config, stage_hash
from paper_repro.plan import ppo as plan_ppo
from paper_repro.plan import train_rm as plan

S8 = plan.LLAMA3_SHAPES["llama3-8b"]
# Llama 3 8B as LlamaForCausalLM: the RM's 7,504,928,768 without its 4096-weight score head, plus
# the untied 128256 x 4096 = 525,336,576 LM head (the well-known 8.03B).
P8_LM = 7_504_928_768 - 4096 + 525_336_576


def hw(world: int = 8) -> plan_ppo.Hardware:
    # Round numbers: 10 TFLOP/s effective (peak 20 at MFU 0.5), 1 TB/s effective HBM, 10 GB/s.
    return plan_ppo.Hardware(
        world, tflops=20.0, mfu=0.5, hbm_tbps=2.0, decode_eff=0.5, allgather_gbps=10.0
    )


def test_causal_lm_count_hand_value_and_meta_model():
    assert plan_ppo.causal_lm_param_count(S8) == (P8_LM, 128256 * 4096)
    assert plan.meta_param_count(S8, causal_lm=True) == (P8_LM, 128256 * 4096)


def test_memory_pieces_hand_values():
    # 32 layers x (K and V) x 8 kv heads x 128 dims x 2 bytes = 131,072 bytes per position.
    assert plan_ppo.kv_cache_bytes(S8, 1, 1) == 131_072
    assert plan_ppo.kv_cache_bytes(S8, 16, 2048) == 16 * 2048 * 131_072
    m = plan_ppo.Model("m", 1000, 100)
    assert plan_ppo.frozen_bytes(m, 8) == 250 + 200  # 2000 B / 8 ranks + one module gathered


def test_rollout_time_model():
    h = hw(world=8)
    params = 10**9  # 2 GB in bf16
    # One all-gather moves 7/8 of 2 GB through a 10 GB/s link.
    assert plan_ppo.gather_seconds(params, 8, 10.0) == pytest.approx(0.175)
    # Tiny shape: the KV cache is negligible next to 2 GB of weights; 2 ms per token step.
    tiny = plan.LlamaShape(32, 8, 16, 1, 1, 1)
    # The rollout's mean context: prompt 10 + half of 100 new tokens.
    step = plan_ppo.decode_step_seconds(tiny, params, rows=4, context=60, hw=h)
    assert plan_ppo.kv_cache_bytes(tiny, 4, 60) == 4 * 60 * 2 * 8 * 2  # head_dim 8, 1 layer
    assert step == pytest.approx((2e9 + 7680) / 1e12, rel=1e-9)
    gathered = plan_ppo.rollout_seconds("gathered", tiny, params, 4, 10, 100, h)
    synced = plan_ppo.rollout_seconds("synced", tiny, params, 4, 10, 100, h)
    assert gathered == pytest.approx(0.175 + 100 * step, rel=1e-6)
    assert synced == pytest.approx(100 * 0.175, rel=1e-6)  # the gather per token dominates
    # Compute-bound decoding (many rows): 2 x params x rows FLOPs at 10 TFLOP/s.
    assert plan_ppo.decode_step_seconds(tiny, params, 1000, 10, h) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="vllm"):
        plan_ppo.rollout_seconds("vllm", tiny, params, 4, 10, 100, h)


def test_pass_time_is_the_longer_of_compute_and_traffic():
    h = hw(world=8)
    params = 10**9
    # Forward of 8,000 tokens: 2 x 1e9 x 1000 per GPU = 0.2 s compute vs one 0.175 s gather.
    assert plan_ppo.pass_seconds(params, 8000, backward=False, hw=h) == pytest.approx(0.2)
    # Backward: 6 x ... = 0.6 s; with recompute 0.8 s. Few tokens: 3 or 4 gathers win.
    assert plan_ppo.pass_seconds(params, 8000, backward=True, hw=h) == pytest.approx(0.6)
    assert plan_ppo.pass_seconds(
        params, 8000, backward=True, hw=h, recompute=True
    ) == pytest.approx(0.8)
    assert plan_ppo.pass_seconds(params, 8, backward=True, hw=h) == pytest.approx(3 * 0.175)
    assert plan_ppo.pass_seconds(params, 8, backward=True, hw=h, recompute=True) == pytest.approx(
        4 * 0.175
    )


def test_cli_prints_the_ppo_8b_plan(tmp_path, capsys):
    from paper_repro.cli.commands import main

    opts = ["--stage", "ppo", "--run-dir", str(tmp_path)]
    assert main(["plan", "llama3-70b-uf-ppo-8b", *opts]) == 0
    out = capsys.readouterr().out
    assert f"{P8_LM:,} parameters (llama3-8b LlamaForCausalLM" in out
    assert "69,503,041,536 parameters" in out  # the 70B RM and value model
    assert "4 node(s) x 8 GPU(s) = 32 GPUs" in out
    assert "118 steps of 512" in out  # (60,917 - 256) // 512
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "FITS" in lines["rollout"] and "FITS" in lines["update"]
    assert "DOES NOT FIT" not in out
    assert "<- ppo.generation" in lines["gathered"] and "GPU-hours" in lines["synced"]
    hours = {
        m: float(lines[m].split("->")[1].split()[0].replace(",", ""))
        for m in ("gathered", "synced")
    }
    assert hours["synced"] > 2 * hours["gathered"]
    # Without activation checkpointing the 70B value model's activations do not fit.
    main(["plan", "llama3-70b-uf-ppo-8b", "ppo.activation_checkpointing=false", *opts])
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "hint" in out


def test_generation_mode_is_part_of_the_ppo_identity():
    a = load_config("tiny", ["ppo.generation=gathered"])
    b = load_config("tiny", ["ppo.generation=synced"])
    assert a.ppo.generation == "gathered" and b.ppo.generation == "synced"
    assert stage_hash(a, "ppo") != stage_hash(b, "ppo")
    from paper_repro.tracking import stage_params

    assert stage_params(b, "ppo")["ppo.generation"] == "synced"  # an MLflow param of the run
    assert load_config("tiny").ppo.generation == "gathered"  # the default


def test_vllm_is_refused_in_one_line(capsys):
    from paper_repro.cli.commands import main

    with pytest.raises(ConfigError, match="ppo.generation.*vllm is not available yet"):
        load_config("tiny", ["ppo.generation=vllm"])
    assert main(["plan", "tiny", "ppo.generation=vllm", "--stage", "ppo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ppo.generation" in err
