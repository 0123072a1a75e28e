"""Score RewardBench rows with reward-bench's own code, in its side environment (rewardbench 0.1.4
and its transformers 4.51.0 first on ``PYTHONPATH``). Run by ``rewardbench.rbcheck`` as a script
(``python rbside.py REQUEST.json RESULT.json``), so it imports nothing from paper_repro.

The calls are those of the ``rewardbench`` CLI (rewardbench/rewardbench.py, 0.1.4) for a
sequence classifier with ``--not_quantized --torch_dtype float32``: the text of each side from
``prepare_dialogue_from_tokenizer`` (the tokenizer's chat template), the model from
``REWARD_MODEL_CONFIG["default"]["model_builder"]``, the ``RewardBenchPipeline`` from its
``pipeline_builder``, left padding, the CLI's pad fallbacks and pipeline arguments, batches in
dataset order, the reward as the logit the pipeline returns. Two things differ: the rows come
from the request instead of the hub dataset (``load_eval_dataset`` downloads it), and the
pipeline's hard-coded ``.to("cuda")`` of the tokenized batch stays on the CPU when there is no
GPU (a device move; the tensors are the same).

REQUEST: ``{"folders": [...], "rows": [{"id", "prompt", "chosen", "rejected"}], "batch_size"}``.
RESULT: the versions and, per folder (in order), the texts and ``scores_chosen`` /
``scores_rejected`` in row order (one process for every folder: importing reward-bench is slow).
"""

from __future__ import annotations

import json
import sys


def keep_on_cpu() -> None:
    """``BatchEncoding.to("cuda")`` -> the CPU when torch has no GPU."""
    import torch
    from transformers import BatchEncoding

    if torch.cuda.is_available():
        return
    move = BatchEncoding.to

    def to(self, device, *args, **kwargs):
        if str(device).startswith("cuda"):
            device = "cpu"
        return move(self, device, *args, **kwargs)

    BatchEncoding.to = to


def score(folder: str, rows_in: list[dict], batch_size: int) -> dict:
    import torch
    from rewardbench import (
        REWARD_MODEL_CONFIG,
        check_tokenizer_chat_template,
        prepare_dialogue_from_tokenizer,
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not check_tokenizer_chat_template(tokenizer):
        raise SystemExit(f"{folder}: no chat template (the CLI would need --chat_template)")
    rows = [prepare_dialogue_from_tokenizer(dict(r), tokenizer) for r in rows_in]

    config = REWARD_MODEL_CONFIG["default"]
    model = config["model_builder"](folder, device_map="auto", torch_dtype=torch.float32)
    pipe = config["pipeline_builder"]("text-classification", model=model, tokenizer=tokenizer)
    tokenizer.padding_side = "left"
    kwargs = {
        "batch_size": batch_size,
        "truncation": False,
        "padding": True,
        "max_length": 512,
        "function_to_apply": "none",
        "return_token_type_ids": False,
    }
    if pipe.tokenizer.pad_token_id is None:
        pipe.model.config.pad_token_id = pipe.tokenizer.eos_token_id
        pipe.tokenizer.pad_token_id = pipe.tokenizer.eos_token_id
    if pipe.model.config.pad_token_id is None:
        pipe.model.config.pad_token_id = pipe.tokenizer.pad_token_id

    chosen: list[float] = []
    rejected: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        for key, out in (("text_chosen", chosen), ("text_rejected", rejected)):
            logits = pipe([r[key] for r in batch], **kwargs)
            out.extend(x[0] for x in logits.float().cpu().numpy().tolist())
    return {
        "ids": [r["id"] for r in rows],
        "text_chosen": [r["text_chosen"] for r in rows],
        "scores_chosen": chosen,
        "scores_rejected": rejected,
    }


def score_all(request: dict) -> dict:
    import rewardbench
    import torch
    import transformers

    keep_on_cpu()
    return {
        "rewardbench": rewardbench.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "models": [score(f, request["rows"], request["batch_size"]) for f in request["folders"]],
    }


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    with open(request_path) as f:
        request = json.load(f)
    with open(result_path, "w") as f:
        json.dump(score_all(request), f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
