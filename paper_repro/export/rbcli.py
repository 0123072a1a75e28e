"""reward-bench's own CLI on an exported folder, offline, next to this project's rewards.

``rewardbench --model DIR --dataset PAIRS.jsonl --load_json`` (rewardbench/rewardbench.py, 0.1.4)
is what a user of the exported model runs: it loads the tokenizer and the model itself, renders
each side with the tokenizer's chat template (``load_and_process_dataset`` ->
``prepare_dialogue_from_tokenizer``) and scores it with its ``RewardBenchPipeline``. A local JSON
file is one of its documented inputs, so it runs offline (``HF_HUB_OFFLINE=1``) on a handful of
fixed pairs. It runs in reward-bench's side environment (``rewardbench.rbcheck``) plus a small one
with what the CLI module imports beyond the scoring code (``pkg_resources``, ``wandb``). One
change: the pipeline's hard-coded ``.to("cuda")`` stays on the CPU without a GPU
(``rbside.keep_on_cpu``, a device move).

Ours: the same conversations through ``rewardbench.inputs.template_ids`` (the ``--model`` path,
ids as the tokenizer gives them) and ``rewardbench.model.load_model`` in fp32, one pair side at a
time. A folder reward-bench cannot load or score makes the CLI exit non-zero: an ``ExportError``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .build import ExportError

# What ``rewardbench/rewardbench.py`` imports beyond reward-bench's scoring code: pkg_resources
# (setuptools before 81 ships it) and wandb (imported at the top, used only with --wandb_run)
# with sentry-sdk, the one wandb requirement this environment lacks.
CLI_ENV = {"setuptools": "80.9.0", "wandb": "0.31.0", "sentry-sdk": "2.76.0"}
CLI_ATOL = 1e-4  # fp32, transformers 4.51 vs this environment's: summation order differs
# (prompt, chosen, rejected): plain, multi-line, non-ASCII; the chosen side is the helpful one.
PAIRS = [
    ("What is 2 + 2?", "2 + 2 = 4.", "It is 5."),
    ("Name a primary colour.", "Red is a primary colour.", "Banana."),
    ("Écris « bonjour » en japonais.", "こんにちは (konnichiwa).", "No."),
    ("List two fruits.", "- apple\n- pear", "I cannot help with that."),
]
# Run in the side environment: the CLI's own entry point with the device move only.
RUNNER = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import rbside
rbside.keep_on_cpu()
from rewardbench.rewardbench import main
sys.argv[0] = "rewardbench"
main()
"""


def cli_env(root: Path | None = None) -> Path:
    from .crosscheck import build_env

    return build_env("rewardbench-cli", CLI_ENV, root)


def run_cli(folder: Path, cache: Path | None = None) -> dict[str, Any]:
    """``rewardbench`` on ``folder`` with ``PAIRS`` as a local JSON file, batch size 1, fp32; its
    per-pair scores and accuracy as it writes them (``<model>_outputs.jsonl``, ``<model>.json``)."""
    from ..rewardbench.rbcheck import rewardbench_env

    envs = [rewardbench_env(cache), cli_env(cache)]
    side = str(Path(__file__).resolve().parents[1] / "rewardbench")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # the CLI names its outputs after --model: a short relative name keeps them in out/
        (work / "model").symlink_to(Path(folder).resolve(), target_is_directory=True)
        with open(work / "pairs.jsonl", "w") as f:
            for prompt, chosen, rejected in PAIRS:
                user = {"role": "user", "content": prompt}
                sides = [[user, {"role": "assistant", "content": r}] for r in (chosen, rejected)]
                f.write(json.dumps({"chosen": sides[0], "rejected": sides[1]}) + "\n")
        args = ["--model", "model", "--dataset", "pairs.jsonl", "--load_json", "--split", "train"]
        args += ["--not_quantized", "--torch_dtype", "float32", "--batch_size", "1"]
        args += ["--output_dir", "out/"]
        environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(map(str, envs)),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(work / "hf"),
            "WANDB_MODE": "disabled",
        }
        cmd = [sys.executable, "-c", RUNNER, side, *args]
        proc = subprocess.run(cmd, cwd=work, env=environ, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.strip().splitlines() if "Warning" not in x]
            raise ExportError(
                f"reward-bench's CLI cannot score {folder}: {' | '.join(lines[-3:]) or '?'}"
            )
        with open(work / "out" / "model_outputs.jsonl") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        summary = json.loads((work / "out" / "model.json").read_text())
    return {
        "scores_chosen": [r["scores_chosen"] for r in rows],
        "scores_rejected": [r["scores_rejected"] for r in rows],
        "accuracy": summary["accuracy"],
    }


def our_scores(folder: Path) -> dict[str, list[float]]:
    """``PAIRS`` scored the project's ``--model`` way (tokenizer template, fp32, unpadded)."""
    import torch
    from transformers import AutoTokenizer

    from ..data.formatting import rewardbench_messages
    from ..rewardbench.inputs import template_ids
    from ..rewardbench.model import load_model

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = load_model(Path(folder), "float32")
    out: dict[str, list[float]] = {"chosen": [], "rejected": []}
    with torch.no_grad():
        for prompt, *responses in PAIRS:
            for key, response in zip(out, responses, strict=True):
                ids, _ = template_ids(
                    tok, rewardbench_messages(prompt, response), as_tokenizer=True
                )
                out[key].append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    return out


def check(folder: Path, cache: Path | None = None) -> dict[str, Any]:
    """reward-bench's CLI vs ours on ``PAIRS``: the record ``crosscheck.json`` keeps."""
    theirs = run_cli(folder, cache)
    ours = our_scores(folder)
    pairs = zip(
        theirs["scores_chosen"] + theirs["scores_rejected"],
        ours["chosen"] + ours["rejected"],
        strict=True,
    )
    diff = max(abs(a - b) for a, b in pairs)
    ours_acc = sum(c > r for c, r in zip(ours["chosen"], ours["rejected"], strict=True)) / len(
        PAIRS
    )
    return {
        "passed": diff <= CLI_ATOL and theirs["accuracy"] == ours_acc,
        "pairs": len(PAIRS),
        "reward_max_abs_diff": diff,
        "reward_tolerance": CLI_ATOL,
        "rewardbench_accuracy": theirs["accuracy"],
        "ours_accuracy": ours_acc,
        "rewardbench_scores": {
            "chosen": theirs["scores_chosen"],
            "rejected": theirs["scores_rejected"],
        },
        "our_scores": ours,
    }
