"""Rank program for tests/integration/test_ppo_deepspeed.py (run under torchrun, not collected).

``python ppo_gen_worker.py RUN_DIR OUT_PREFIX``: under ZeRO-3, this rank samples its slice of one
step's prompts with ``ppo.generation=synced`` and then ``gathered`` (same seed), scores both
rollouts (RM reward, policy and reference log-probs, values) and saves them to
``OUT_PREFIX.rank<r>.pt``; then one PPO step runs with ``gathered``, to show that training still
works once ZeRO's hooks are back.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ppo_fixed import PPO_CFG  # noqa: E402

from paper_repro.data import load_prompts, load_tokenizer  # noqa: E402
from paper_repro.ppo.distributed import DeepSpeedPPOTrainer, rank_slice  # noqa: E402

FIELDS = ("old_logps", "ref_logps", "old_values", "raw_reward", "reward", "advantages")


def main() -> None:
    run_dir, out_prefix = Path(sys.argv[1]), sys.argv[2]
    cfg = PPO_CFG(zero_stage=3, max_new_tokens=32)
    base = run_dir / "download_base" / "model"
    tok = load_tokenizer(base)
    prompts = list(load_prompts(run_dir / "prepare_data" / "ppo_prompts.parquet").input_ids)
    trainer = DeepSpeedPPOTrainer(
        cfg,
        base,
        run_dir / "export_rm" / "model",
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        warmup=0,
    )
    mine = rank_slice(prompts[: cfg.prompts_per_step], cfg.mini_batch, trainer.rank, 2)
    out = {}
    for mode in ("synced", "gathered"):
        trainer.cfg = replace(cfg, generation=mode)
        ro = trainer.rollout(mine, seed=12)  # the ranks' longest responses differ at this seed
        exp = trainer.score(ro)
        out[mode] = {
            "input_ids": ro.input_ids,
            "response_mask": ro.response_mask,
            **{f: getattr(exp, f) for f in FIELDS},
        }
    stats = trainer.step(0, mine, seed=12)
    out["step"] = stats.to_dict()
    torch.save(out, f"{out_prefix}.rank{trainer.rank}.pt")
    trainer.close()
    sys.stdout.flush()
    os._exit(0)  # after the final barrier; avoids DeepSpeed's teardown abort on CPU


if __name__ == "__main__":
    main()
