"""PPO rollout throughput and step time on CPU: ``ppo.generation`` gathered vs synced, and the
one-process trainer against the pre-change code.

Part 1 (2 ranks, ZeRO-3 over gloo, ``torchrun``): one DeepSpeed PPO trainer per rank (policy and
value trainable, reference and RM frozen; a randomly initialised Llama of ~21M parameters and an
RM of the same shape), fp32. Both generation modes run in the same processes on the same engines
and take turns, the order rotating every round, so a change of load on a shared machine hits both
alike. Per round and mode: one rollout (rollout tokens/s = response tokens of both ranks, EOS
included, over the wall time of the slower rank) and one whole PPO step (rollout, scoring of every
mini-batch, one update per mini-batch). ``synced`` is the pre-change generation path.

Part 2 (one process, ``ppo.backend=torch``): the same PPO step with this checkout's code and with
the code of ``--baseline-rev`` (extracted with ``git archive`` into a temp folder), each in its own
process, taking turns step by step. Same models, prompts and seeds.

No assertions; run it on an otherwise idle machine::

    .venv/bin/python bench/ppo_throughput.py                 # both parts
    .venv/bin/python bench/ppo_throughput.py --skip-single   # part 1 only

Part 1 took 15 min wall on the 2-core machine on 5 December 2026 while other work held its load
average at ~15 (each rank got about a quarter of a core); part 2 took longer still there. Not yet
timed on idle cores; ``--skip-single`` and a smaller ``--new-tokens`` shorten it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
VOCAB, EOS, PAD = 512, 2, 511
MODES = ("gathered", "synced")


def ppo_config_kwargs(args) -> dict:
    """PPOConfig fields that the baseline code knows too (no ``generation``)."""
    return dict(
        prompts_per_step=args.prompts,
        mini_batch=args.prompts // 2,
        max_new_tokens=args.new_tokens,
        lr=1e-6,
        warmup_ratio=0.0,
        seed=0,
    )


def build_models(folder: Path, args) -> int:
    """A causal-LM policy and an RM of the same shape, random init, safetensors; -> policy params."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        num_labels=1,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    policy = LlamaForCausalLM(cfg).float()
    policy.save_pretrained(folder / "policy", safe_serialization=True)
    torch.manual_seed(1)
    LlamaForSequenceClassification(cfg).float().save_pretrained(
        folder / "rm", safe_serialization=True
    )
    return sum(p.numel() for p in policy.parameters())


def make_prompts(n: int, seed: int = 0) -> list[np.ndarray]:
    """Prompts of 16-48 random ids, none of them EOS or pad."""
    rng = np.random.default_rng(seed)
    return [rng.integers(3, VOCAB - 1, size=int(rng.integers(16, 49))) for _ in range(n)]


# --------------------------------------------------------------------------- part 1: ranks


def ranks_worker(args) -> None:
    from paper_repro.config import PPOConfig
    from paper_repro.ppo.distributed import DeepSpeedPPOTrainer, rank_slice

    folder = Path(args.ranks_worker)
    cfg = PPOConfig(**ppo_config_kwargs(args), backend="deepspeed", zero_stage=3)
    trainer = DeepSpeedPPOTrainer(
        cfg, folder / "policy", folder / "rm", eos_id=EOS, pad_id=PAD, warmup=0
    )
    mine = rank_slice(make_prompts(args.prompts), cfg.mini_batch, trainer.rank, trainer.world_size)

    def timed(fn):
        trainer.barrier()
        t = time.perf_counter()
        out = fn()
        trainer.barrier()
        return out, time.perf_counter() - t

    trainer.cfg = replace(cfg, max_new_tokens=8)  # warm-up: first-call costs out of the timings
    for mode in MODES:
        trainer.cfg = replace(trainer.cfg, generation=mode)
        trainer.rollout(mine, seed=0)
    rows: list[dict] = []
    for r in range(args.rounds):
        for mode in MODES[r % 2 :] + MODES[: r % 2]:
            trainer.cfg = replace(cfg, generation=mode)
            ro, gen_s = timed(lambda: trainer.rollout(mine, seed=1000 + r))  # noqa: B023
            tokens = int(trainer.all_sum(ro.response_mask.sum().reshape(1))[0])
            _, step_s = timed(lambda: trainer.step(r, mine, seed=2000 + r))  # noqa: B023
            rows.append({"mode": mode, "tokens": tokens, "gen_s": gen_s, "step_s": step_s})
    if trainer.rank == 0:
        (folder / "ranks.json").write_text(json.dumps(rows))
    trainer.close()
    sys.stdout.flush()
    os._exit(0)  # DeepSpeed's teardown can abort on CPU after the final barrier


def run_ranks(folder: Path, args) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        __file__,
        "--ranks-worker",
        str(folder),
        *common_argv(args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ranks failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads((folder / "ranks.json").read_text())


# --------------------------------------------------------------------------- part 2: one process


def single_worker(args) -> None:
    """One process, one PPO step per ``go`` line on stdin, a JSON line of timings back."""
    from paper_repro.config import PPOConfig
    from paper_repro.ppo.models import build_models as four_models
    from paper_repro.ppo.models import load_policy, load_reward_model
    from paper_repro.ppo.trainer import PPOTrainer

    folder = Path(args.single_worker)
    cfg = PPOConfig(**ppo_config_kwargs(args), backend="torch")
    models = four_models(load_policy(folder / "policy"), load_reward_model(folder / "rm"))
    trainer = PPOTrainer(cfg, models, eos_id=EOS, pad_id=PAD, warmup=0)
    prompts = make_prompts(args.prompts)
    step = 0
    while sys.stdin.readline().strip() == "go":
        t, c = time.perf_counter(), time.process_time()
        stats = trainer.step(step, prompts, seed=3000 + step)
        reply = {
            "seconds": time.perf_counter() - t,
            "cpu": time.process_time() - c,
            "response_len": stats.response_len,
            "reward": stats.reward_mean,
        }
        print(json.dumps(reply), flush=True)
        step += 1


def baseline_tree(rev: str, dest: Path) -> Path:
    """``paper_repro/`` of ``rev`` extracted into ``dest`` (the repository itself is untouched)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "paper_repro"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


@dataclass
class Single:
    label: str
    source: Path
    steps: list[dict] = field(default_factory=list)


def run_single(folder: Path, args, baseline: Path) -> list[Single]:
    procs = []
    runs = [Single("this checkout", ROOT), Single(f"pre-change ({args.baseline_rev})", baseline)]
    for run in runs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(run.source)}
        cmd = [sys.executable, __file__, "--single-worker", str(folder), *common_argv(args)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    for r in range(args.single_steps + 1):  # step 0 is a warm-up, not counted
        order = list(zip(runs, procs, strict=True))
        for run, proc in order[r % 2 :] + order[: r % 2]:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            if r:
                run.steps.append(reply)
    for proc in procs:
        proc.stdin.close()
        proc.wait()
    return runs


# --------------------------------------------------------------------------- report


def common_argv(args) -> list[str]:
    keys = ("hidden", "layers", "prompts", "new_tokens", "rounds", "single_steps")
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def report_ranks(rows: list[dict]) -> None:
    out = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        tokens, gen = sum(r["tokens"] for r in mine), sum(r["gen_s"] for r in mine)
        out[mode] = (tokens / gen, sum(r["step_s"] for r in mine) / len(mine), tokens / len(mine))
    print("\n2 ranks, ZeRO-3 over gloo (fp32, 1 thread per rank):")
    print(
        f"  {'ppo.generation':<16} {'rollout tokens/s':>17} {'ratio':>7} {'PPO step s':>11} ratio"
    )
    for mode in MODES:
        tps, step_s, tok = out[mode]
        print(
            f"  {mode:<16} {tps:>17,.1f} {tps / out['synced'][0]:>6.2f}x {step_s:>11.2f} "
            f"{out['synced'][1] / step_s:.2f}x  ({tok:,.0f} response tokens per rollout)"
        )


def report_single(runs: list[Single]) -> None:
    print("\nOne process (ppo.backend=torch, 1 thread), the same PPO steps, taking turns:")
    base = sum(s["seconds"] for s in runs[1].steps) / len(runs[1].steps)
    for run in runs:
        wall = sum(s["seconds"] for s in run.steps) / len(run.steps)
        cpu = sum(s["cpu"] for s in run.steps) / len(run.steps)
        same = [s["reward"] for s in run.steps] == [s["reward"] for s in runs[1].steps]
        print(
            f"  {run.label:<26} step {wall:6.2f} s wall ({cpu:6.2f} s CPU), "
            f"{base / wall:.2f}x the pre-change speed; rewards identical to it: {same}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per PPO step (2 mini-batches)")
    ap.add_argument("--new-tokens", type=int, default=256, help="max_new_tokens per response")
    ap.add_argument("--rounds", type=int, default=2, help="rollouts + steps per mode (2 ranks)")
    ap.add_argument("--single-steps", type=int, default=2, help="timed one-process steps each")
    ap.add_argument("--baseline-rev", default="d2ad3e0", help="pre-change commit for part 2")
    ap.add_argument("--skip-single", action="store_true", help="part 1 only")
    ap.add_argument("--ranks-worker", help=argparse.SUPPRESS)
    ap.add_argument("--single-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ranks_worker:
        return ranks_worker(args)
    if args.single_worker:
        return single_worker(args)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp:
        folder = Path(tmp)
        n = build_models(folder, args)
        print(
            f"policy: Llama, {n / 1e6:.1f}M parameters ({args.layers} layers x {args.hidden}); "
            f"RM the same shape; {args.prompts} prompts per step, up to {args.new_tokens} new "
            f"tokens each (temperature 0.7, top_k 50); {os.cpu_count()} CPU(s)"
        )
        t = time.time()
        report_ranks(run_ranks(folder, args))
        print(f"  (part 1 wall {time.time() - t:.0f} s)")
        if not args.skip_single:
            (folder / "baseline").mkdir()
            runs = run_single(folder, args, baseline_tree(args.baseline_rev, folder / "baseline"))
            report_single(runs)


if __name__ == "__main__":
    main()
