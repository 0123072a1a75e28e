"""Global-norm clipping on the DeepSpeed backends (ZeRO-3, 2 gloo ranks on CPU), against EasyLM's
clipped AdamW update written out by hand (tests/faithful_reference.py): RM training
(``backends.DeepSpeedBackend``) and PPO (``ppo.distributed.DeepSpeedPPOTrainer``). Gradient norms
are far above the clip (1.0); the returned / logged norms are the pre-clip ones."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faithful_reference import (
    CHOSEN,
    CLIP,
    EOS,
    PAD,
    REJECTED,
    RM_LRS,
    ReferenceAdamW,
    fixed_rollout,
    ppo_reference_update,
    rm_loss,
    tiny_policy,
    tiny_rm,
)
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from clip_ds_worker import PPO_CFG, RM_CFG  # noqa: E402

from paper_repro.training.batching import collate_pairs  # noqa: E402

pytestmark = pytest.mark.slow


def run_ranks(which: str, models: Path, out: Path) -> tuple[dict, list[float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        str(HERE / "clip_ds_worker.py"),
        which,
        str(models),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return load_file(str(out / "weights.safetensors")), json.loads((out / "norms.json").read_text())


def worst(weights: dict, model: torch.nn.Module, prefix: str = "") -> float:
    return max(
        float((weights[prefix + n] - p.detach()).abs().max()) for n, p in model.named_parameters()
    )


def test_deepspeed_rm_backend_clips_the_global_norm_like_easylm(tmp_path):
    model = tiny_rm(head_scale=200.0)
    model.save_pretrained(tmp_path / "rm", safe_serialization=True)
    weights, norms = run_ranks("rm", tmp_path, tmp_path)

    clipped, unclipped = copy.deepcopy(model), copy.deepcopy(model)
    ref = ReferenceAdamW(clipped, RM_CFG.betas, RM_CFG.eps, RM_CFG.weight_decay)
    ref_free = ReferenceAdamW(unclipped, RM_CFG.betas, RM_CFG.eps, RM_CFG.weight_decay)
    expected = []
    for lr, chosen, rejected in zip(RM_LRS, CHOSEN, REJECTED, strict=True):
        batch = collate_pairs(chosen, rejected, PAD)
        rm_loss(clipped, batch).backward()
        expected.append(ref.step(lr, CLIP))
        rm_loss(unclipped, batch).backward()
        ref_free.step(lr, None)
    assert min(expected) > 5 * CLIP
    assert norms == pytest.approx(expected, rel=1e-4)
    assert worst(weights, clipped) < 5e-6
    assert worst(weights, unclipped) > 1e-4


def test_deepspeed_ppo_clips_each_model_like_easylm_and_logs_the_pre_clip_norms(tmp_path):
    from paper_repro.ppo.models import build_models, load_policy, load_reward_model
    from paper_repro.ppo.trainer import PPOTrainer

    tiny_policy().save_pretrained(tmp_path / "policy", safe_serialization=True)
    tiny_rm(head_scale=50.0).save_pretrained(tmp_path / "rm", safe_serialization=True)
    weights, norms = run_ranks("ppo", tmp_path, tmp_path)

    models = build_models(load_policy(tmp_path / "policy"), load_reward_model(tmp_path / "rm"))
    cfg = PPO_CFG
    torch_trainer = PPOTrainer(cfg, models, eos_id=EOS, pad_id=PAD, warmup=0)
    exp = torch_trainer.score(fixed_rollout())  # the step's scoring, before any update
    ref = {"policy": models.policy, "value": models.value}
    free = {k: copy.deepcopy(v) for k, v in ref.items()}
    expected = ppo_reference_update(ref, exp, cfg, CLIP)
    ppo_reference_update(free, exp, cfg, None)

    assert min(expected) > 1.5 * CLIP  # the clip binds for both models
    assert norms == pytest.approx(expected, rel=1e-4)
    for k in ("policy", "value"):
        assert worst(weights, ref[k], f"{k}.") < 5e-6, k
        assert worst(weights, free[k], f"{k}.") > 1e-4, k
