"""Compare an evaluation's per-pair rewards with reward-bench's own scoring of the same model.

reward-bench 0.1.4 (PyPI) pins transformers 4.51.0, so its code runs in a side environment: a
``pip install --no-deps --target`` folder with rewardbench and the packages its import needs at
the versions its pin resolves to, first on ``PYTHONPATH`` over this environment (torch,
accelerate, numpy, pandas come from here). Built once into the user cache
(``paths.cache_root()/side-envs``, as the export cross-check's). ``rbside.py`` runs there.

    python -m paper_repro.rewardbench.rbcheck OUT_DIR --model DIR --run-dir results/tiny
    python -m paper_repro.rewardbench.rbcheck --envs-only      # build the side environment

OUT_DIR is what ``paper-repro eval-rewardbench CONFIG --model DIR --out OUT_DIR`` wrote in the
tokenizer-template input mode (reward-bench's CLI scores with the tokenizer's chat template);
the result (accuracy of both, max |reward difference|, disagreeing pairs) goes to
``OUT_DIR/rewardbench_check.json``. Batch size 1 by default: with larger batches reward-bench
pads on the left without position ids, so a model with absolute positions (GPT-2) gets another
reward for the same text depending on its neighbours in the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..provenance.io import read_json, write_json
from .model import EvalError

# rewardbench 0.1.4 and what ``import rewardbench`` needs beyond this environment, at versions
# compatible with its transformers==4.51.0 pin (tokenizers / huggingface_hub as that release
# resolves them; datasets and trl releases that import with huggingface_hub 0.x / 4.51).
REWARDBENCH_ENV = {
    "rewardbench": "0.1.4",
    "transformers": "4.51.0",
    "tokenizers": "0.21.4",
    "huggingface-hub": "0.36.2",
    "datasets": "4.0.0",
    "trl": "0.17.0",
    "fschat": "0.2.36",
    "sentencepiece": "0.2.3",
}
REWARD_ATOL = 1e-4  # fp32; another transformers and other kernels: summation order differs


def rewardbench_env(root: Path | None = None) -> Path:
    from ..export.crosscheck import build_env

    return build_env(f"rewardbench-{REWARDBENCH_ENV['rewardbench']}", REWARDBENCH_ENV, root)


def reward_bench_scores(
    folders: list[Path], rows: list[dict], env: Path, batch_size: int = 1
) -> list[dict]:
    """``rbside.py`` on ``rows`` (id, prompt, chosen, rejected) for each folder, in one process
    in the side environment; one result per folder, with the versions that ran it."""
    script = Path(__file__).with_name("rbside.py")
    environ = {**os.environ, "PYTHONPATH": str(env)}
    with tempfile.TemporaryDirectory() as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        keys = ("id", "prompt", "chosen", "rejected")
        request.write_text(
            json.dumps(
                {
                    "folders": [str(f) for f in folders],
                    "rows": [{k: r[k] for k in keys} for r in rows],
                    "batch_size": batch_size,
                }
            )
        )
        cmd = [sys.executable, str(script), str(request), str(result)]
        proc = subprocess.run(cmd, env=environ, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise EvalError(f"reward-bench's scoring failed: {tail}")
        got = json.loads(result.read_text())
    versions = {k: got[k] for k in ("rewardbench", "transformers", "torch")}
    return [{**m, "versions": versions, "batch_size": batch_size} for m in got["models"]]


def read_rows(rewardbench_jsonl: Path) -> list[dict]:
    with open(rewardbench_jsonl) as f:
        return [json.loads(line) for line in f if line.strip()]


def compare(out_dir: Path, theirs: dict) -> dict:
    """Our ``out_dir/pairs.parquet`` next to reward-bench's result for the same model and rows
    (one item of ``reward_bench_scores``); written to ``out_dir/rewardbench_check.json``."""
    import numpy as np
    import pyarrow.parquet as pq

    scores = read_json(out_dir / "scores.json")
    if scores["input_mode"] != "tokenizer-template":
        raise EvalError(
            f"{out_dir}: scored in {scores['input_mode']}; reward-bench's CLI uses the "
            "tokenizer's chat template (eval.input_mode=tokenizer-template)"
        )
    ours = pq.read_table(out_dir / "pairs.parquet").to_pandas()
    if [int(i) for i in theirs["ids"]] != ours["id"].tolist():
        raise EvalError(f"{out_dir}: pair ids differ from reward-bench's rows")
    tc, tr = np.asarray(theirs["scores_chosen"]), np.asarray(theirs["scores_rejected"])
    oc, orr = ours["reward_chosen"].to_numpy(), ours["reward_rejected"].to_numpy()
    diff = float(max(np.abs(tc - oc).max(), np.abs(tr - orr).max()))
    record: dict[str, Any] = {
        "pairs": len(ours),
        "batch_size": theirs["batch_size"],
        "ours_accuracy": float(ours["correct"].mean()),
        "rewardbench_accuracy": float((tc > tr).mean()),
        "reward_max_abs_diff": diff,
        "reward_tolerance": REWARD_ATOL,
        "pairs_judged_differently": int(((tc > tr) != ours["correct"].to_numpy()).sum()),
        "versions": theirs["versions"],
    }
    record["passed"] = diff <= REWARD_ATOL and record["pairs_judged_differently"] == 0
    write_json(out_dir / "rewardbench_check.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_repro.rewardbench.rbcheck")
    parser.add_argument("out_dir", nargs="?", help="the --out folder of eval-rewardbench --model")
    parser.add_argument("--model", help="the model folder that was scored")
    parser.add_argument("--run-dir", help="the run whose download_data/ was used")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--envs-only", action="store_true", help="only build the side env")
    args = parser.parse_args(argv)
    if args.envs_only:
        print(f"rewardbench {REWARDBENCH_ENV['rewardbench']}: {rewardbench_env()}")
        return 0
    if not (args.out_dir and args.model and args.run_dir):
        parser.error("OUT_DIR, --model and --run-dir are required")
    from ..provenance.paths import RunPaths

    try:
        source = RunPaths(Path(args.run_dir)).raw_data("rewardbench")
        env = rewardbench_env()
        theirs = reward_bench_scores([Path(args.model)], read_rows(source), env, args.batch_size)
        record = compare(Path(args.out_dir), theirs[0])
    except Exception as exc:  # one line: ReproError or a side-environment failure
        from ..errors import ReproError

        if not isinstance(exc, ReproError):
            raise
        print(f"rbcheck: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out_dir}: ours {100 * record['ours_accuracy']:.2f}%, reward-bench "
        f"{100 * record['rewardbench_accuracy']:.2f}% ({record['versions']['rewardbench']}, "
        f"transformers {record['versions']['transformers']}); reward max |diff| "
        f"{record['reward_max_abs_diff']:.3g}; {record['pairs_judged_differently']} pairs judged "
        "differently"
    )
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
