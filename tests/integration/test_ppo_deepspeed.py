"""PPO on DeepSpeed: real ranks (torchrun, gloo on CPU), real tiny Llamas, fp32.

1. One PPO step (2 optimizer updates) on a fixed rollout batch under ZeRO-3 on 2 ranks gives the
   plain-torch trainer's policy and value weights and step metrics (tolerance ``ATOL``), with and
   without ``ppo.activation_checkpointing`` on the ranks.
2. The tiny-preset ppo stage with ``ppo.backend=deepspeed`` on 2 ranks runs end to end.
3. SIGTERM mid-run -> checkpoint + exit 75 -> the rerun on 2 ranks resumes and ends bitwise equal
   to an uninterrupted run (``ppo.generation=gathered``, the default).
4. ``ppo.generation`` ``gathered`` and ``synced`` sample the same tokens and score them the same
   (log-probs, values, rewards) under ZeRO-3 on 2 ranks whose responses end at different lengths.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ppo_fixed import PPO_CFG, save_rollout
from test_ppo import new_run, ppo_inputs  # noqa: F401 - the shared session fixture

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# fp32 on both sides; the remaining difference is summation order (ranks all-reduce partial
# gradients, whitening statistics and token counts). Measured max abs difference: see the test.
ATOL = 1e-5
# Adam divides by sqrt(v) + eps (1e-8): a weight whose gradient is near eps turns that summation
# noise into a visible share of its step. So each model may differ by up to 2% of how far it moved
# (measured on the tiny fixtures: policy 2.7e-6 and value 1.1e-5 of 2.0e-3, at most 0.6%); a
# wiring error (a gradient not averaged over ranks, a missed update) differs by the order of the
# whole move.
MOVE_SHARE = 0.02


def torchrun(*args: str) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        *args,
    ]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("ckpt", [False, True], ids=["plain", "activation-checkpointing"])
def test_zero3_two_ranks_match_torch_on_fixed_rollouts(ppo_inputs, tmp_path, ckpt):  # noqa: F811
    import torch

    from paper_repro.data import load_prompts, load_tokenizer
    from paper_repro.ppo.models import build_models, load_policy, load_reward_model
    from paper_repro.ppo.rollout import generate
    from paper_repro.ppo.trainer import PPOTrainer

    cfg = PPO_CFG(zero_stage=3)
    base = ppo_inputs / "download_base" / "model"
    tok = load_tokenizer(base)
    prompts = list(load_prompts(ppo_inputs / "prepare_data" / "ppo_prompts.parquet").input_ids)
    policy = load_policy(base)
    ro = generate(
        policy,
        prompts[: cfg.prompts_per_step],
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        seed=cfg.seed,
    )
    assert ro.has_eos.any() and len(set(ro.response_mask.sum(-1).tolist())) > 1  # ragged rows
    save_rollout(tmp_path / "rollout.pt", ro, tok.eos_token_id, tok.pad_token_id)

    t = time.time()
    proc = subprocess.run(
        torchrun(
            str(HERE / "ppo_ds_worker.py"),
            str(ppo_inputs),
            str(tmp_path / "rollout.pt"),
            str(tmp_path / "ds.pt"),
            "3",
            *(["ckpt"] if ckpt else []),
        ),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    ds_seconds = time.time() - t
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ds = torch.load(tmp_path / "ds.pt", weights_only=True)

    models = build_models(policy, load_reward_model(ppo_inputs / "export_rm" / "model"))
    named = {"policy": models.policy, "value": models.value}
    initial = {
        w: {k: v.detach().clone() for k, v in m.named_parameters()} for w, m in named.items()
    }
    trainer = PPOTrainer(cfg, models, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, warmup=0)
    trainer.rollout = lambda p, s: ro  # generation bypassed, as on the ranks
    stats = trainer.step(0, [None] * len(ro), seed=0).to_dict()

    worst, moved = {}, {}
    for which, model in named.items():
        ref = {k: v.detach() for k, v in model.named_parameters()}
        assert ds[which].keys() == ref.keys(), which
        worst[which] = max(float((ds[which][k] - ref[k]).abs().max()) for k in ref)
        moved[which] = max(float((initial[which][k] - ref[k]).abs().max()) for k in ref)
    print(
        f"ZeRO-3 x2 vs torch after {stats['updates']} updates: max |dW| policy "
        f"{worst['policy']:.2e} (moved {moved['policy']:.2e}), value {worst['value']:.2e} "
        f"(moved {moved['value']:.2e}); torchrun wall {ds_seconds:.1f} s"
    )
    assert stats["updates"] == ds["stats"]["updates"] == 2
    for which in named:
        assert moved[which] > 100 * ATOL, which  # not a comparison of two untouched models
        assert worst[which] <= max(ATOL, MOVE_SHARE * moved[which]), (which, worst, moved)
    for key, value in stats.items():
        assert ds["stats"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def stage_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return torchrun(
        "-m",
        "paper_repro.cli",
        "ppo",
        "tiny",
        "ppo.backend=deepspeed",
        "ppo.zero_stage=3",
        "ppo.eval_prompts=16",
        *overrides,
        "--run-dir",
        str(run_dir),
    )


@pytest.mark.slow
def test_stage_deepspeed_two_ranks_end_to_end(ppo_inputs, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    paths = new_run(ppo_inputs, tmp_path)
    t = time.time()
    proc = subprocess.run(
        stage_cmd(paths.root, "ppo.max_steps=3"),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"ppo stage, deepspeed ZeRO-3 x2, 3 steps: {time.time() - t:.1f} s wall")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    lines = [json.loads(x) for x in paths.ppo_metrics.read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]  # rank 0 alone wrote the file
    assert all(math.isfinite(x["reward_mean"]) and math.isfinite(x["kl"]) for x in lines)
    assert lines[-1]["updates"] == 3 * 32 // 8  # global mini-batches, whatever the world size
    summary = json.loads(paths.ppo_summary.read_text())
    assert summary["backend"] == "deepspeed" and summary["world_size"] == 2
    assert math.isfinite(summary["eval_reward_after"])
    trained = load_file(paths.ppo_policy / "model.safetensors")
    base = load_file(paths.base_model / "model.safetensors")
    assert trained.keys() == base.keys()
    assert any(not (trained[k] == base[k]).all() for k in trained)
    assert (paths.ppo_policy / "config.json").is_file()


@pytest.mark.slow
def test_stage_deepspeed_sigterm_then_resume(ppo_inputs, tmp_path):  # noqa: F811
    import torch
    from safetensors.torch import load_file

    overrides = ("ppo.max_steps=6", "ppo.checkpoint_every=100", "ppo.generation=gathered")
    full = new_run(ppo_inputs, tmp_path / "full")
    proc = subprocess.run(
        stage_cmd(full.root, *overrides),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    paths = new_run(ppo_inputs, tmp_path / "cut")
    proc = subprocess.Popen(
        stage_cmd(paths.root, *overrides),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if paths.ppo_metrics.is_file() and len(paths.ppo_metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "ended before it could be interrupted:\n" + proc.stdout.read()
    # torchrun forwards SIGTERM to both ranks, which checkpoint and exit 75; torchrun itself then
    # exits 1 (it re-raises the signal), so the ranks' message is what shows the preemption.
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "preempted:" in out, out[-5000:]
    root = paths.checkpoints("ppo")
    folder = root / (root / "latest").read_text().strip()
    meta = json.loads((folder / "meta.json").read_text())
    assert 2 <= meta["next_step"] < 6
    assert json.loads((root / "identity.json").read_text())["world"] == "deepspeed x2"
    assert (folder / "policy" / "deepspeed").is_dir() and (folder / "value" / "deepspeed").is_dir()
    assert not paths.ppo_summary.exists()

    # Another world size never takes over the ZeRO shards: a different identity, so (on a copy)
    # the shards are moved aside, kept and named, and nothing is resumed.
    from dataclasses import replace

    from paper_repro.ppo.checkpoint import PPOCheckpoints
    from paper_repro.provenance.identity import StageIdentity

    other = tmp_path / "copy" / "ppo"
    shutil.copytree(root, other)
    two = StageIdentity.from_json(json.loads((root / "identity.json").read_text()))
    assert PPOCheckpoints(other, replace(two, world="deepspeed x1")).resume_point() is None
    (aside,) = other.parent.glob("ppo.superseded-*")
    assert (aside / folder.name / "meta.json").is_file()
    assert PPOCheckpoints(root, two).dir.candidates()[0] == folder  # the original is untouched

    proc = subprocess.run(
        stage_cmd(paths.root, *overrides),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "resumed from" in proc.stdout + proc.stderr
    lines = [json.loads(x) for x in paths.ppo_metrics.read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(6))
    assert json.loads(paths.ppo_summary.read_text())["updates"] == 6 * 32 // 8
    # Bitwise the uninterrupted run: metrics, held-out rewards and the final policy.
    assert paths.ppo_metrics.read_text() == full.ppo_metrics.read_text()
    sa, sb = json.loads(full.ppo_summary.read_text()), json.loads(paths.ppo_summary.read_text())
    for key in ("eval_reward_before", "eval_reward_after", "kl_final", "no_eos_frac_final"):
        assert sa[key] == sb[key], key
    a, b = (
        load_file(full.ppo_policy / "model.safetensors"),
        load_file(paths.ppo_policy / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_gathered_and_synced_generation_agree(ppo_inputs, tmp_path):  # noqa: F811
    import torch

    proc = subprocess.run(
        torchrun(str(HERE / "ppo_gen_worker.py"), str(ppo_inputs), str(tmp_path / "gen")),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [torch.load(tmp_path / f"gen.rank{r}.pt", weights_only=True) for r in (0, 1)]
    # The ranks' longest responses differ, so under `synced` one rank ran forwards for the other.
    longest = [int(r["synced"]["response_mask"].sum(-1).max()) for r in ranks]
    assert longest[0] != longest[1], longest
    for r in ranks:
        synced, gathered = r["synced"], r["gathered"]
        assert synced.keys() == gathered.keys()
        for key, value in synced.items():
            assert torch.equal(value, gathered[key]), key  # bitwise: same tokens, same numbers
        assert math.isfinite(r["step"]["reward_mean"]) and r["step"]["updates"] == 2
