"""Rank program for tests/integration/test_ppo_deepspeed.py (run under torchrun, not collected).

``python ppo_ds_worker.py RUN_DIR ROLLOUT.pt OUT.pt ZERO_STAGE [ckpt]``: one PPO step on DeepSpeed engines
over a fixed rollout batch (generation bypassed), this rank taking its slice of every mini-batch
(``ckpt``: with ``ppo.activation_checkpointing``);
rank 0 saves the consolidated fp32 policy and value weights and the step metrics to OUT.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ppo_fixed import PPO_CFG, load_rollout, rows  # noqa: E402

from paper_repro.ppo.distributed import DeepSpeedPPOTrainer, rank_slice  # noqa: E402


def main() -> None:
    run_dir, rollout_file, out_file, zero = (
        Path(sys.argv[1]),
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
    )
    cfg = PPO_CFG(zero_stage=zero, activation_checkpointing=sys.argv[5:] == ["ckpt"])
    ro, eos_id, pad_id = load_rollout(rollout_file)
    trainer = DeepSpeedPPOTrainer(
        cfg,
        run_dir / "download_base" / "model",
        run_dir / "export_rm" / "model",
        eos_id=eos_id,
        pad_id=pad_id,
        warmup=0,
    )
    mine = rank_slice(list(range(len(ro))), cfg.mini_batch, trainer.rank, trainer.world_size)
    trainer.rollout = lambda prompts, seed: rows(ro, mine)  # generation bypassed
    stats = trainer.step(0, [None] * len(mine), seed=0)
    policy, value = trainer.full_state_dict("policy"), trainer.full_state_dict("value")
    if trainer.rank == 0:
        torch.save({"policy": policy, "value": value, "stats": stats.to_dict()}, out_file)
    trainer.close()
    sys.stdout.flush()
    os._exit(0)  # after the final barrier; avoids DeepSpeed's teardown abort on CPU


if __name__ == "__main__":
    main()
