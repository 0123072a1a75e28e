"""RM training throughput: this trainer (packed and padded micro batches) vs TRL's RewardTrainer.

Same ~20M-parameter Llama (same initial weights), the same synthetic pairs with an
UltraFeedback-like length spread (lognormal prompt and response lengths, shared prompt), the same
updates (32 pairs each, faithful shuffled order, at least 8 of them), one CPU process, at two
precisions: fp32 (TRL with ``bf16=False``) and bf16 autocast with fp32 master weights (TRL's
RewardConfig default, ``bf16=True``; ours ``model.dtype=bfloat16``). All measured in this run:
each method trains in its own process (as users run it: the main thread of a fresh interpreter;
a worker thread cost our bf16 trainer 25% here) that stops after every update, and the methods
take turns update by update, the order rotating at every update, so a change of load on a shared
machine hits all of them alike. No assertions; run it on an otherwise idle machine::

    .venv/bin/python bench/train_rm_throughput.py                   # ~10 min on 2 idle cores
    .venv/bin/python bench/train_rm_throughput.py --precisions bf16   # one precision

Printed per method: wall time, pairs/s, non-pad tokens/s and its ratio to TRL, padding, and the
useful MFU: training FLOPs of the non-pad tokens (6 x non-embedding parameters per token plus the
causal attention of each sequence, 6 x layers x hidden x length^2 per sequence) per second, over
this machine's matmul peak of that precision, measured here (the best of several large GEMMs).

Lengths: UltraFeedback (Llama 3 tokens) has prompt median ~100-150 and response median ~250-350
tokens with a long tail; ``--scale`` (default 0.25) shrinks them so a CPU run stays short while
keeping the spread (sigma) that decides how much padding each method wastes. TRL's sampler draws
``randperm`` from seed 42 like ``batching.BatchPlan``'s ``seeded-randperm`` order (used here), so
the padded trainer pads exactly like TRL and all three train the same pairs in the same updates.
Packed micro batches hold at most ``--token-budget`` tokens (default 2048, below the padded micro
batch's worst case of ``2 x micro batch x max length`` = 8192, so packing never needs more
activation memory). Measured with the methods taking turns (fp32, 29 November 2026): 2048 and 4096
within noise of each other, 1024 9% slower (more calls), 8192 10% slower (its 50 MB activation
tensors come fresh from the kernel at each allocation: raising glibc's mmap threshold won back
half of it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

PAD = 511  # the tiny fixture tokenizer's pad id (TRL pads with processing_class.pad_token_id)
TRL, PADDED, PACKED = "TRL RewardTrainer", "this trainer, padded", "this trainer, packed"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


@dataclass
class Result:
    name: str
    pairs: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: less sensitive than wall time to other load
    tokens: int = 0
    padded: int = 0

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def padding(self) -> float:
        return 1.0 - self.tokens / self.padded


class Turns:
    """One method training in its own process (this script with ``--worker``), one update at a
    time: ``step()`` lets it run exactly one update and returns that update's wall and CPU seconds,
    measured in the worker (the only process computing then); ``finish()`` lets it end and returns
    its ``Result``. Commands go down the worker's stdin, JSON replies come up its stdout."""

    def __init__(self, method: str, prec: str, argv: list[str]):
        self.method = method
        cmd = [sys.executable, __file__, *argv, "--worker", method, "--precisions", prec]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reply()  # set-up and warm-up done (not timed)

    def _reply(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.method}: worker exited with {self._proc.wait()}")
        return json.loads(line)

    def step(self) -> tuple[float, float]:
        self._proc.stdin.write("go\n")
        self._proc.stdin.flush()
        reply = self._reply()
        return reply["wall"], reply["cpu"]

    def finish(self) -> Result:
        self._proc.stdin.write("go\n")
        self._proc.stdin.close()
        reply = self._reply()
        self._proc.wait()
        return Result(self.method, reply["pairs"], tokens=reply["tokens"], padded=reply["padded"])


def serve(args) -> None:
    """Worker: build the pairs and the model (seeded: the same in every worker), warm up, then
    train, pausing before the first update and after each one until told to go on."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the trainers print goes to stderr, away from the replies
    last = None

    def pause() -> None:
        nonlocal last
        now = time.perf_counter(), time.process_time()
        timing = {} if last is None else {"wall": now[0] - last[0], "cpu": now[1] - last[1]}
        print(json.dumps(timing), file=replies, flush=True)
        sys.stdin.readline()
        last = time.perf_counter(), time.process_time()

    dtype = DTYPES[args.precisions[0]]
    pairs = SyntheticPairs(args.pairs, args.scale, args.max_len, args.seed)
    model = build_model(args)
    warm_up(copy.deepcopy(model), pairs, args, dtype)
    result = Result(args.worker)
    RUNS[args.worker](model, pairs, args, dtype=dtype, result=result, pause=pause)
    done = {"pairs": result.pairs, "tokens": result.tokens, "padded": result.padded}
    print(json.dumps(done), file=replies, flush=True)


class SyntheticPairs:
    """``PairData``-shaped pairs: BOS + prompt + response + EOS, ids in [2, PAD)."""

    def __init__(self, n: int, scale: float, max_len: int, seed: int):
        rng = np.random.default_rng(seed)
        prompt = np.clip(rng.lognormal(np.log(120 * scale), 0.9, n), 4, None).astype(int)
        resp = np.clip(rng.lognormal(np.log(280 * scale), 0.7, (n, 2)), 2, None).astype(int)
        self.chosen, self.rejected = [], []
        for i in range(n):
            p = rng.integers(2, PAD, prompt[i])
            sides = []
            for j in range(2):
                seq = np.concatenate([[0], p, rng.integers(2, PAD, resp[i, j]), [1]])[:max_len]
                seq[-1] = 1  # EOS last, as prepared data always is
                sides.append(seq.astype(np.int32))
            self.chosen.append(sides[0])
            self.rejected.append(sides[1])

    def __len__(self) -> int:
        return len(self.chosen)


def build_model(args):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        num_labels=1,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    return LlamaForSequenceClassification(cfg).float()


def useful_flops(model, pairs) -> float:
    """Training FLOPs of the non-pad tokens: 6 x non-embedding parameters per token, plus the
    causal attention of each sequence (QK^T and AV, half of L x L each: 2 x hidden x L^2 per
    layer forward, x 3 with the backward)."""
    cfg = model.config
    dense = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    lengths = np.array([len(s) for s in (*pairs.chosen, *pairs.rejected)], dtype=np.float64)
    attention = 6.0 * cfg.num_hidden_layers * cfg.hidden_size * float((lengths**2).sum())
    return 6.0 * dense * float(lengths.sum()) + attention


def matmul_peak(dtype: torch.dtype, repeats: int = 3) -> float:
    """Best FLOP/s of square GEMMs on this machine (the MFU denominator)."""
    best = 0.0
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def ours_run(model, pairs, args, *, packed: bool, dtype: str, result: Result, pause) -> None:
    """This trainer, calling ``pause()`` before its first update and after each one; tokens and
    padding from its update metrics."""
    from paper_repro.config import RMTrainConfig
    from paper_repro.training.backends import TorchBackend
    from paper_repro.training.batching import BatchPlan, pair_tokens
    from paper_repro.training.engine import Trainer
    from paper_repro.training.schedule import LRSchedule

    rm = RMTrainConfig(
        lr=1e-5,
        end_lr=1e-6,
        total_batch_pairs=args.total_batch,
        micro_batch_pairs=args.micro_batch,
        activation_checkpointing=False,
        backend="torch",
    )
    backend = TorchBackend(model, rm, packed=packed, compute_dtype=dtype, device="cpu")
    plan = BatchPlan(
        len(pairs),
        total_batch=args.total_batch,
        micro_batch=args.micro_batch,
        seed=42,
        order="seeded-randperm",
        token_budget=args.token_budget if packed else None,
        tokens=pair_tokens(pairs),
    )

    def on_update(m) -> None:
        result.pairs += args.total_batch
        result.tokens += m.tokens
        result.padded += round(m.tokens / (1 - m.padding_fraction))
        pause()

    schedule = LRSchedule.from_config(rm, len(pairs))
    trainer = Trainer(backend, pairs, plan, schedule, PAD, on_update=on_update, progress=False)
    pause()
    trainer.fit()


def trl_run(model, pairs, args, *, dtype: str, result: Result, pause) -> None:
    """TRL's RewardTrainer, paused by a callback like ``ours_run``; its collator counts the tokens
    and padding it feeds."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from paper_repro.fixtures.tiny import load_tokenizer

    class Pause(TrainerCallback):
        def __init__(self, pause):
            self.pause = pause

        def on_train_begin(self, args, state, control, **kwargs):
            self.pause()

        def on_step_end(self, args, state, control, **kwargs):
            result.pairs += args.per_device_train_batch_size * args.gradient_accumulation_steps
            self.pause()

    tok = load_tokenizer()
    assert tok.pad_token_id == PAD
    base = DataCollatorForPreference(pad_token_id=PAD)

    def collate(examples):
        out = base(examples)
        result.tokens += int(out["attention_mask"].sum())
        result.padded += out["attention_mask"].numel()
        return out

    data = Dataset.from_dict(
        {
            "chosen_ids": [c.tolist() for c in pairs.chosen],
            "rejected_ids": [r.tolist() for r in pairs.rejected],
        }
    )
    cfg = RewardConfig(
        output_dir=args.trl_dir,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.total_batch // args.micro_batch,
        max_steps=len(pairs) // args.total_batch,
        learning_rate=1e-5,
        lr_scheduler_type="linear",
        warmup_steps=1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        weight_decay=0.0,
        max_length=None,
        use_cpu=True,
        bf16=dtype == "bfloat16",
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        seed=42,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
    )
    RewardTrainer(
        model=model,
        args=cfg,
        train_dataset=data,
        processing_class=tok,
        data_collator=collate,
        callbacks=[Pause(pause)],
    ).train()


METHODS = (TRL, PADDED, PACKED)
RUNS = {
    TRL: trl_run,
    PADDED: partial(ours_run, packed=False),
    PACKED: partial(ours_run, packed=True),
}


def warm_up(model, pairs, args, dtype: str) -> None:
    """First-call allocations and kernel selection are charged to nobody."""
    from paper_repro.training.batching import make_batch
    from paper_repro.training.modeling import token_scores

    batch = make_batch(pairs, np.arange(args.micro_batch), PAD)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        token_scores(model, batch.input_ids, batch.attention_mask).sum().backward()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=256, help="pairs (a multiple of --total-batch)")
    p.add_argument("--total-batch", type=int, default=32, help="pairs per update")
    p.add_argument("--micro-batch", type=int, default=4, help="pairs per padded forward")
    p.add_argument("--scale", type=float, default=0.25, help="length scale vs UltraFeedback")
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--token-budget", type=int, default=2048, help="tokens per packed micro batch")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--trl-dir", default="/tmp/paper_repro_bench_trl")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = p.parse_args(argv)
    if args.worker:
        return serve(args)
    if args.pairs // args.total_batch < 8:
        p.error("run at least 8 updates: --pairs >= 8 x --total-batch")
    if args.token_budget > 2 * args.micro_batch * args.max_len:
        p.error("--token-budget above the padded micro batch's worst case (2 x micro x max len)")

    pairs = SyntheticPairs(args.pairs, args.scale, args.max_len, args.seed)
    init = build_model(args)
    n_params = sum(t.numel() for t in init.parameters())
    lengths = np.array([len(c) for c in pairs.chosen] + [len(r) for r in pairs.rejected])
    flops = useful_flops(init, pairs)
    print(
        f"model: Llama {n_params / 1e6:.1f}M parameters ({args.layers} layers, hidden "
        f"{args.hidden}); torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"data: {len(pairs)} pairs = {args.pairs // args.total_batch} updates of "
        f"{args.total_batch}; sequence length median {np.median(lengths):.0f}, p90 "
        f"{np.percentile(lengths, 90):.0f}, max {lengths.max()}; padded micro batch "
        f"{args.micro_batch} pairs, packed budget {args.token_budget} tokens; "
        f"useful training FLOPs {flops:.3e}"
    )

    peaks = {prec: 0.0 for prec in args.precisions}
    results: dict[tuple[str, str], Result] = {}
    for prec in args.precisions:
        dtype = DTYPES[prec]
        peaks[prec] = matmul_peak(getattr(torch, dtype))
        runs = {name: Turns(name, prec, argv) for name in METHODS}
        wall = dict.fromkeys(RUNS, 0.0)
        cpu = dict.fromkeys(RUNS, 0.0)
        for k in range(len(pairs) // args.total_batch):
            for name in METHODS[k % 3 :] + METHODS[: k % 3]:  # the order rotates every update
                w, c = runs[name].step()
                wall[name] += w
                cpu[name] += c
            print(f"{prec}: update {k + 1} done, load average {os.getloadavg()[0]:.2f}", flush=True)
        for name, run in runs.items():
            results[prec, name] = run.finish()
            results[prec, name].seconds, results[prec, name].cpu_seconds = wall[name], cpu[name]
        peaks[prec] = max(peaks[prec], matmul_peak(getattr(torch, dtype)))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")

    for prec in args.precisions:
        peak = peaks[prec]
        base = results[prec, TRL]
        print(f"\n{prec}: measured matmul peak {peak / 1e9:.0f} GFLOP/s (best square GEMM)")
        print(
            f"{'method':24s} {'wall s':>7s} {'pairs/s':>8s} {'tokens/s':>9s} {'vs TRL':>7s} "
            f"{'padding':>8s} {'GFLOP/s':>8s} {'MFU':>6s} {'cpu s':>7s}"
        )
        for name in METHODS:
            r = results[prec, name]
            useful = flops / r.seconds
            print(
                f"{r.name:24s} {r.seconds:7.1f} {r.pairs_per_s:8.2f} {r.tokens_per_s:9.0f} "
                f"{r.tokens_per_s / base.tokens_per_s:6.2f}x {r.padding:8.1%} "
                f"{useful / 1e9:8.1f} {useful / peak:6.1%} {r.cpu_seconds:7.1f}"
            )


if __name__ == "__main__":
    main()
