"""Which SDPA kernel the packed attention should call for one sequence, by length and precision.

``modeling.packed_attention`` runs torch's ``scaled_dot_product_attention`` once per packed
sequence (causal, ``[1, 8 heads, length, 64]``, the bench models' shape). This measures the flash
and the math kernel on the same inputs, forward + backward (training) and forward alone
(scoring), and prints each one's attention FLOP/s (causal: 2 x hidden x length^2 forward, x 3
with the backward) and the ratio math / flash. ``modeling._CPU_BF16_TRAIN_MATH_BELOW`` comes
from this table: on the development CPU (2 cores with AMX, torch 2.13) the math kernel wins
training in bf16 below 256 tokens and loses everywhere else. No assertions::

    .venv/bin/python bench/attention_kernels.py      # ~1 min
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}


def seconds(kernel, inputs, train: bool, repeats: int = 3) -> float:
    """Best of ``repeats`` passes over ``inputs`` (one SDPA call, and its backward, each)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        with sdpa_kernel(kernel), torch.set_grad_enabled(train):
            for q, k, v in inputs:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                if train:
                    out.sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024, 2048])
    p.add_argument("--tokens", type=int, default=8192, help="tokens per length (sum of calls)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; heads 8, head dim 64")
    print(
        f"{'dtype':9s} {'pass':9s} {'length':>6s} {'flash GF/s':>10s} {'math GF/s':>9s} "
        f"{'math/flash':>10s}"
    )
    for dtype in (torch.float32, torch.bfloat16):
        for train in (True, False):
            for n in args.lengths:
                calls = max(1, args.tokens // n)
                inputs = [
                    [torch.randn(1, 8, n, 64, dtype=dtype, requires_grad=train) for _ in range(3)]
                    for _ in range(calls)
                ]
                flops = calls * 2 * 512 * n * n * (3 if train else 1)
                rate = {
                    k: flops / seconds(kern, inputs, train) / 1e9 for k, kern in KERNELS.items()
                }
                print(
                    f"{str(dtype)[6:]:9s} {'fwd+bwd' if train else 'fwd':9s} {n:6d} "
                    f"{rate['flash']:10.1f} {rate['math']:9.1f} {rate['math'] / rate['flash']:9.2f}x"
                )


if __name__ == "__main__":
    main()
