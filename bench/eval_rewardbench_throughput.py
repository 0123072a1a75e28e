"""RewardBench scoring throughput: our length-sorted, token-budget scorer vs reward-bench's
leaderboard method, on the same ~20M-parameter Llama RM, the same inputs, in the same run.

reward-bench's ``scripts/run_rm.py`` (docs/fidelity.md §6), reimplemented here from
the spec (the ``rewardbench`` package pins transformers 4.51 and hard-codes CUDA): fixed-size
batches of pairs in dataset order; the chosen texts of a batch in one forward, the rejected texts
in another, each padded (right, the tokenizer default) to the longest row of that batch; the
reward is the HF ``LlamaForSequenceClassification`` logit (its own pooling at the rightmost
non-pad token, arange position ids). Our scorer: ``paper_repro.rewardbench.scorer.score_pairs``, packed (the
default: longest first into rows of at most ``--token-budget`` tokens, no padding, attention per
sequence).

Inputs are synthetic token ids with a RewardBench-like length spread: a shared prompt and two
responses, each lognormal, clipped so a side is at most 2048 tokens (run_rm.py's max_length, so
its left truncation never applies and both methods see identical ids); pairs come in random order
as dataset order. Prints seconds, pairs/s, padding and the speed ratio; checks that both methods
rank every pair the same way. No assertions on time.

    .venv/bin/python bench/eval_rewardbench_throughput.py               # 48 pairs, fp32, CPU
    .venv/bin/python bench/eval_rewardbench_throughput.py --pairs 2985  # the full size (slow on CPU)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from paper_repro.rewardbench.scorer import score_pairs

BOS, EOS, PAD, VOCAB = 0, 1, 511, 512  # the tiny tokenizer's ids (pad never occurs in text)
RUN_RM_MAX_LENGTH = 2048


def build_model(dtype: torch.dtype, seed: int = 0):
    """A ~20M-parameter Llama RM (6 layers, width 512) with a random O(1) head."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        num_labels=1,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return model.to(dtype).eval()


def synthetic_pairs(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """BOS + prompt + response + EOS per side; lognormal lengths (median prompt ~80 tokens,
    response ~180, long tail), both sides share the prompt as RewardBench pairs do."""
    rng = np.random.default_rng(seed)
    limit = RUN_RM_MAX_LENGTH - 2

    def tokens(k: int) -> list[int]:
        return rng.integers(2, PAD, size=int(k)).tolist()

    chosen, rejected = [], []
    for _ in range(n):
        prompt = tokens(min(rng.lognormal(np.log(80), 1.0), limit // 2))
        sides = []
        for _ in range(2):
            room = limit - len(prompt)
            sides.append(
                [BOS, *prompt, *tokens(max(1, min(rng.lognormal(np.log(180), 0.9), room))), EOS]
            )
        chosen.append(sides[0])
        rejected.append(sides[1])
    return chosen, rejected


def run_rm_scores(model, chosen, rejected, batch_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """reward-bench run_rm.py: dataset order, fixed batches, pad to the longest, HF pooling."""
    from paper_repro.training.modeling import pad_batch

    out_c, out_r, padded = [], [], 0
    with torch.inference_mode():
        for i in range(0, len(chosen), batch_size):
            for side, out in ((chosen, out_c), (rejected, out_r)):
                ids, mask = pad_batch(side[i : i + batch_size], PAD, side="right")
                padded += ids.numel()
                out.append(model(input_ids=ids, attention_mask=mask).logits[:, 0].float().numpy())
    return (
        np.concatenate(out_c).astype(np.float64),
        np.concatenate(out_r).astype(np.float64),
        padded,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=48, help="pairs to score (RewardBench has 2985)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per method (best kept)")
    ap.add_argument(
        "--baseline-batch",
        type=int,
        default=8,
        help="run_rm.py batch size (CLI default 8; leaderboard config: 2 for 70B)",
    )
    ap.add_argument(
        "--token-budget",
        type=int,
        default=4096,
        help="our tokens per packed row (4096 suits a CPU; the 70B preset uses 16384)",
    )
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dtype = getattr(torch, args.dtype)
    model = build_model(dtype, args.seed)
    chosen, rejected = synthetic_pairs(args.pairs, args.seed)
    lengths = np.array([len(s) for s in chosen + rejected])
    real = int(lengths.sum())
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Llama RM, {n_params / 1e6:.1f}M parameters, {args.dtype}, "
        f"{torch.get_num_threads()} threads; {args.pairs} pairs, {real} real tokens, side length "
        f"median {np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, "
        f"max {lengths.max()}"
    )

    warm = chosen[:4], rejected[:4]  # first-call overheads (allocator, kernels) out of the timing
    run_rm_scores(model, *warm, args.baseline_batch)
    score_pairs(model, *warm, pad_id=PAD, token_budget=args.token_budget, progress=False)

    # Alternate the two methods (A B B A ...) and keep each one's fastest run, so load from
    # other processes on a shared machine does not favour whichever happened to run first. CPU
    # time of this process is reported too: on a shared machine it is the steadier measure.
    wall: dict[str, list[float]] = {"base": [], "ours": []}
    cpu: dict[str, list[float]] = {"base": [], "ours": []}
    for rep in range(args.repeats):
        for method in ("base", "ours") if rep % 2 == 0 else ("ours", "base"):
            t0, c0 = time.perf_counter(), time.process_time()
            if method == "base":
                base_c, base_r, base_padded = run_rm_scores(
                    model, chosen, rejected, args.baseline_batch
                )
            else:
                ours_c, ours_r, stats = score_pairs(
                    model,
                    chosen,
                    rejected,
                    pad_id=PAD,
                    token_budget=args.token_budget,
                    progress=False,
                )
            wall[method].append(time.perf_counter() - t0)
            cpu[method].append(time.process_time() - c0)
    t_base, t_ours = min(wall["base"]), min(wall["ours"])
    c_base, c_ours = min(cpu["base"]), min(cpu["ours"])

    base_ok, ours_ok = base_c > base_r, ours_c > ours_r
    print(
        f"run_rm.py method (batch {args.baseline_batch}, dataset order): {t_base:8.2f} s, "
        f"{args.pairs / t_base:7.2f} pairs/s, padding {1 - real / base_padded:6.1%}"
    )
    print(
        f"paper_repro scorer (packed, budget {args.token_budget}):   {t_ours:8.2f} s, "
        f"{args.pairs / t_ours:7.2f} pairs/s, padding {stats.padding_fraction:6.1%}, "
        f"{stats.batches} rows"
    )
    print(
        f"speed-up: {t_base / t_ours:.2f}x wall clock, {c_base / c_ours:.2f}x CPU time "
        f"({c_base:.1f} s vs {c_ours:.1f} s; best of {args.repeats} alternating runs each)"
    )
    max_diff = float(max(np.abs(base_c - ours_c).max(), np.abs(base_r - ours_r).max()))
    same = bool(np.array_equal(base_ok, ours_ok))
    print(
        f"accuracy: run_rm.py {base_ok.mean():.4f}, ours {ours_ok.mean():.4f}; same ranking of "
        f"every pair: {same}; max |reward diff| {max_diff:.2e}"
    )
    if not same:
        raise SystemExit("the two methods rank some pair differently")


if __name__ == "__main__":
    main()
