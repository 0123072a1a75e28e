"""Rank program for tests/integration/test_clip_deepspeed.py (run under torchrun, not collected).

``python clip_ds_worker.py rm|ppo MODELS_DIR OUT_DIR``: the DeepSpeed (ZeRO-3) side of the
clipping tests. ``rm``: two RM updates of ``faithful_reference.CHOSEN/REJECTED`` through
``backends.DeepSpeedBackend``, each rank taking half of every batch. ``ppo``: one PPO step on the
fixed rollout through ``ppo.distributed.DeepSpeedPPOTrainer``, each rank taking its slice. Rank 0
writes the consolidated fp32 weights (safetensors) and the pre-clip norms (JSON) to OUT_DIR.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: faithful_reference

from faithful_reference import CHOSEN, EOS, PAD, REJECTED, RM_LRS, fixed_rollout  # noqa: E402

from paper_repro.config import PPOConfig, RMTrainConfig  # noqa: E402

RM_CFG = RMTrainConfig(
    activation_checkpointing=False,
    betas=[0.9, 0.95],
    eps=1e-8,
    weight_decay=0.1,
    total_batch_pairs=4,
    micro_batch_pairs=2,
    zero_stage=3,
)
PPO_CFG = PPOConfig(
    prompts_per_step=4,
    mini_batch=4,
    lr=1e-2,
    warmup_ratio=0.0,
    betas=[0.9, 0.95],
    weight_decay=0.1,
    zero_stage=3,
)


def run_rm(models: Path) -> tuple[dict, dict]:
    from transformers import AutoModelForSequenceClassification

    from paper_repro.training.backends import DeepSpeedBackend
    from paper_repro.training.batching import collate_pairs
    from paper_repro.training.engine import read_last
    from paper_repro.training.modeling import pair_losses

    def load():
        return AutoModelForSequenceClassification.from_pretrained(
            models / "rm", dtype=torch.float32, use_safetensors=True
        )

    b = DeepSpeedBackend(load, RM_CFG)
    b.train()
    norms = []
    for lr, chosen, rejected in zip(RM_LRS, CHOSEN, REJECTED, strict=True):
        half = slice(2 * b.rank, 2 * b.rank + 2)
        batch = collate_pairs(chosen[half], rejected[half], PAD).to(b.device)
        r = read_last(b.scores(batch), batch)
        loss = pair_losses(r[: batch.n_pairs], r[batch.n_pairs :]).sum() / len(chosen)
        b.backward(loss, last=True)
        norms.append(b.step(lr))
    return b.full_state_dict(), {"norms": norms, "rank": b.rank, "close": b.close}


def run_ppo(models: Path) -> tuple[dict, dict]:
    from paper_repro.ppo.distributed import DeepSpeedPPOTrainer, rank_slice

    trainer = DeepSpeedPPOTrainer(
        PPO_CFG, models / "policy", models / "rm", eos_id=EOS, pad_id=PAD, warmup=0
    )
    ro = fixed_rollout()
    mine = torch.tensor(rank_slice(list(range(len(ro))), 4, trainer.rank, trainer.world_size))
    sub = type(ro)(
        ro.input_ids[mine],
        ro.attention_mask[mine],
        ro.prompt_width,
        ro.response_mask[mine],
        ro.has_eos[mine],
    )
    trainer.rollout = lambda prompts, seed: sub  # generation bypassed
    stats = trainer.step(0, [None] * len(sub), seed=0)
    policy, value = trainer.full_state_dict("policy"), trainer.full_state_dict("value")
    weights = None
    if trainer.rank == 0:
        weights = {**{f"policy.{k}": v for k, v in policy.items()}}
        weights.update({f"value.{k}": v for k, v in value.items()})
    norms = [stats.grad_norm_policy[0], stats.grad_norm_value[0]]
    return weights, {"norms": norms, "rank": trainer.rank, "close": trainer.close}


def main() -> None:
    which, models, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    weights, info = (run_rm if which == "rm" else run_ppo)(models)
    if info["rank"] == 0:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "weights.safetensors"))
        (out / "norms.json").write_text(json.dumps(info["norms"]))
    info["close"]()
    sys.stdout.flush()
    os._exit(0)  # after the final barrier; avoids DeepSpeed's teardown abort on CPU


if __name__ == "__main__":
    main()
