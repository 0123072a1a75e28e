"""Read an exported folder the way a user of *this* process's transformers does, and report it.

Run by ``export.crosscheck`` in a subprocess, once with the main environment and once per side
environment (another transformers version on ``PYTHONPATH``)::

    python -m paper_repro.export.sidecheck REQUEST.json RESULT.json

It imports nothing from paper_repro (only torch and transformers), so any transformers 4.x or 5.x
runs it unchanged. REQUEST: ``{"folder", "sequences": [[ids]], "conversation": [messages]}``.
RESULT: the versions, what AutoTokenizer made of the folder (class, special ids, decoded text and
its re-encoding, the rendered chat template), the rewards of AutoModelForSequenceClassification
in fp32 on the right-padded sequences (its own pooling, as reward-bench reads them), and the
rewards of the calls users make (``user_calls``). REQUEST may hold ``snippet``: the model card's
Python example, run as written.
"""

from __future__ import annotations

import json
import sys


def read(request: dict) -> dict:
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, seqs = request["folder"], request["sequences"]
    tok = AutoTokenizer.from_pretrained(folder)
    major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if major_minor >= (4, 56) else "torch_dtype"  # renamed in 4.56
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, use_safetensors=True, **{dtype_kw: torch.float32}
    ).eval()
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    texts = [
        tok.decode(s, skip_special_tokens=False, clean_up_tokenization_spaces=False) for s in seqs
    ]
    pad = config.pad_token_id
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()
    user = user_calls(folder, tok, model, texts, request.get("snippet"))
    return {
        **user,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__,
        "model_class": type(model).__name__,
        "tokenizer_class": type(tok).__name__,
        "rope_theta": getattr(config, "rope_theta", None) or rope.get("rope_theta"),
        "special_ids": {
            "bos": tok.bos_token_id,
            "eos": tok.eos_token_id,
            "pad": tok.pad_token_id,
            "config_pad": pad,
        },
        "vocab": len(tok),
        "texts": texts,
        "reencoded_equal": [
            tok(t, add_special_tokens=False)["input_ids"] == s
            for t, s in zip(texts, seqs, strict=True)
        ],
        "with_special_tokens": tok(texts[0])["input_ids"][:3],
        "chat_template": tok.apply_chat_template(request["conversation"], tokenize=False),
        "rewards": rewards,
    }


def user_calls(folder: str, tok, model, texts: list[str], snippet: str | None) -> dict:
    """The three ways users call a reward model, exactly as written (any exception propagates,
    so the cross-check fails): ``model(**tok(texts, return_tensors="pt", padding=True))``, the
    text-classification pipeline on the folder, and the model card's snippet (executed as
    shipped, MODEL_DIR = the folder). ``texts`` are the decoded sequences; a tokenizer that adds
    BOS by itself gets them without their leading BOS, so every call sees the same ids."""
    import torch
    from transformers import pipeline

    if tok.bos_token and tok("")["input_ids"][:1] == [tok.bos_token_id]:
        texts = [t.removeprefix(tok.bos_token) for t in texts]
    with torch.no_grad():
        direct = model(**tok(texts, return_tensors="pt", padding=True)).logits[:, 0].tolist()
    pipe = pipeline("text-classification", model=folder, tokenizer=folder)
    piped = [r["score"] for r in pipe(texts, function_to_apply="none")]
    out = {"user_call_rewards": direct, "pipeline_rewards": piped}
    if snippet is not None:
        scope: dict = {"MODEL_DIR": folder}
        exec(snippet, scope)  # the card's own text: the project's code, not the model's
        out["snippet_reward"] = float(scope["reward"][0])
    return out


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    with open(request_path) as f:
        request = json.load(f)
    with open(result_path, "w") as f:
        json.dump(read(request), f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
