"""The model card (README.md) shipped with every exported reward model."""

from __future__ import annotations

import json
from typing import Any

from ..config import ReproConfig, to_dict
from .verify import Verification

ARCH_NAMES = {"llama3-70b": "70B", "llama3-8b": "8B", "tiny": "tiny"}


def model_name(cfg: ReproConfig) -> str:
    """The Llama 3 license requires derivative model names to start with "Llama 3"."""
    return f"Llama 3 Tulu 2 {ARCH_NAMES[cfg.model.arch]} UF mean RM (paper-repro, {cfg.preset})"


def _flat_metrics(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_metrics(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float | str | bool) or obj is None:
        out[prefix[:-1]] = obj
    return out


def model_card(
    cfg: ReproConfig,
    summary: dict[str, Any],
    verification: Verification,
    provenance: dict[str, Any],
) -> str:
    import yaml

    name = model_name(cfg)
    metrics = "\n".join(
        f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in _flat_metrics(summary).items()
    )
    v = verification.numbers
    resolved = yaml.safe_dump(
        {k: to_dict(cfg)[k] for k in ("model", "data", "rm")}, sort_keys=False
    )
    tiny_note = (
        "\n> **Smoke-scale model.** The tiny presets build a small Llama locally; it is not derived "
        "from Meta Llama 3 weights and its numbers say nothing about the 70B model.\n"
        if cfg.model.arch == "tiny"
        else ""
    )
    front = {
        "license": "llama3",
        "license_name": "Meta Llama 3 Community License",
        "license_link": "llama_3_license.txt",
        "base_model": cfg.model.hub_id,
        "datasets": [cfg.data.preference.hub_id],
        "language": ["en"],
        "tags": ["reward-model", "tulu-2.5", "paper-repro"],
        "pipeline_tag": "text-classification",
    }
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {name}

A Bradley-Terry reward model reproducing `allenai/llama-3-tulu-2-70b-uf-mean-rm` (Ivison et al.,
"Unpacking DPO and PPO", arXiv 2406.09279) with the paper-repro pipeline: the SFT base
`{cfg.model.hub_id}` with its LM head replaced by a bias-free linear `score` head, trained on
`{cfg.data.preference.hub_id}` / `{cfg.data.preference.split}`.
{tiny_note}
**Built with Meta Llama 3.** Meta Llama 3 is licensed under the Meta Llama 3 Community License,
Copyright © Meta Platforms, Inc. All Rights Reserved; the license is included as
`llama_3_license.txt`, with attribution in `NOTICE`.

## How to score (the training format)

The reward was trained on **BOS + Tulu text ending in EOS, no trailing newline**, read at the EOS
(the last non-pad token). Build that string yourself and tokenize it with
`add_special_tokens=False`:

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained(MODEL_DIR)
rm = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR, dtype=torch.{cfg.model.dtype})
text = tok.bos_token + "<|user|>\\nHow are you?\\n<|assistant|>\\nFine, thanks." + tok.eos_token
batch = tok([text], add_special_tokens=False, padding=True, return_tensors="pt")
reward = rm(**batch).logits[:, 0]  # pooled at the last non-pad token = the EOS
```

Multi-turn: `<|system|>\\n…\\n`, `<|user|>\\n…\\n`, `<|assistant|>\\n…<EOS>\\n` per turn, contents
stripped, the whole string stripped, BOS prepended. The pad token is
`{verification.numbers.get("pad_token")}` (id {cfg.data.pad_token_id}), set in both `config.json`
and the tokenizer; it never occurs in text, so HF's pooling lands on the EOS with either padding
side. The tokenizer's chat template (Tulu) renders a newline **after** the EOS and no BOS; add the
BOS and drop that newline to match training (reproduction_spec.md pitfalls 1 and 4).

## Final training metrics (`train_rm/summary.json`)

| metric | value |
|---|---|
{metrics}

## Export verification (`export_rm/verification.json`)

Weights ({verification.dtype}): every tensor equals the trained fp32 weights
{"bitwise" if verification.dtype == "float32" else "cast to bf16 (cast-exact)"}; the reloaded
folder has every weight including `score.weight`. On {v["verify_pairs"]} `{v["verify_split"]}` pairs
the rewards differ from the in-training fp32 model by at most {v["reward_max_abs_diff"]:.3g}
(tolerance {v["reward_tolerance"]:.3g}); HF's pooling agrees with attention-mask pooling to
{v["hf_pooling_max_abs_diff"]:.3g}. Pairwise accuracy: training model
{v["accuracy_training_model"]:.4f}, exported {v["accuracy_exported"]:.4f}. Checked with transformers
{v["checked_with"]["transformers"]}; `config.json` also carries `rope_theta` at the top level and
`tokenizer_config.json` names `PreTrainedTokenizerFast`, so transformers 4.x (reward-bench pins
4.51.0) reads the same model and tokenizer (`python -m paper_repro.export.crosscheck` checks it).

## Resolved configuration

```yaml
{resolved.strip()}
```

## Provenance

```json
{json.dumps(provenance, indent=2, sort_keys=True)}
```
"""
