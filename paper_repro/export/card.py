"""The model card (README.md) shipped with every exported reward model.

export_rm writes it; eval_rewardbench fills in its RewardBench section once the model has been
evaluated (``update_card_results``), and the same numbers as ``model-index`` metadata in the YAML
front matter (the Hugging Face format that the hub renders as an evaluation widget and that
leaderboards read). The card is documentation, not weights: it is the one file
left out of the export's recorded sha256 list, so that update changes no content identity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import ReproConfig, to_dict
from ..provenance.io import write_text
from ..rewardbench import sections as rb
from .verify import Verification

ARCH_NAMES = {"llama3-70b": "70B", "llama3-8b": "8B", "tiny": "tiny"}
CARD_FILE = "README.md"
RESULTS_BEGIN = "<!-- rewardbench:begin -->"
RESULTS_END = "<!-- rewardbench:end -->"
NOT_EVALUATED = "Not evaluated yet: the eval_rewardbench stage writes this model's results here."
TARGET = "llama-3-tulu-2-70b-uf-mean-rm"


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


def score_snippet(dtype: str, model_dir: str = "MODEL_DIR") -> str:
    """The card's Python example. ``torch_dtype=``: transformers 4.x (reward-bench 0.1.4 pins
    4.51.0) rejects ``dtype=``, 5.x still takes ``torch_dtype=`` (with a deprecation note). The
    export cross-check runs exactly this text in every version it checks."""
    return f"""import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained({model_dir})
rm = AutoModelForSequenceClassification.from_pretrained({model_dir}, torch_dtype=torch.{dtype})
text = tok.bos_token + "<|user|>\\nHow are you?\\n<|assistant|>\\nFine, thanks." + tok.eos_token
batch = tok([text], add_special_tokens=False, padding=True, return_tensors="pt")
reward = rm(**batch).logits[:, 0]  # pooled at the last non-pad token = the EOS
"""


def model_card(
    cfg: ReproConfig,
    summary: dict[str, Any],
    verification: Verification,
    provenance: dict[str, Any],
) -> str:
    import yaml

    name = model_name(cfg)
    base = (
        f"`{cfg.model.hub_id}` (hub revision `{cfg.model.revision}`)"
        if cfg.model.source == "hub"
        else f"`{cfg.model.hub_id}`"
    )
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
{base} with its LM head replaced by a bias-free linear `score` head, trained on
`{cfg.data.preference.hub_id}` / `{cfg.data.preference.split}`.
{tiny_note}
## RewardBench

{RESULTS_BEGIN}
{NOT_EVALUATED}
{RESULTS_END}

**Built with Meta Llama 3.** Meta Llama 3 is licensed under the Meta Llama 3 Community License,
Copyright © Meta Platforms, Inc. All Rights Reserved; the license is included as
`llama_3_license.txt`, with attribution in `NOTICE`.

## How to score (the training format)

The reward was trained on **BOS + Tulu text ending in EOS, no trailing newline**, read at the EOS
(the last non-pad token). Build that string yourself and tokenize it with
`add_special_tokens=False`:

```python
{score_snippet(cfg.model.dtype)}```

Multi-turn: `<|system|>\\n…\\n`, `<|user|>\\n…\\n`, `<|assistant|>\\n…<EOS>\\n` per turn, contents
stripped, the whole string stripped, BOS prepended. The pad token is
`{verification.numbers.get("pad_token")}` (id {cfg.data.pad_token_id}), set in both `config.json`
and the tokenizer; it never occurs in text, so HF's pooling lands on the EOS with either padding
side. The tokenizer's chat template (Tulu) renders a newline **after** the EOS and no BOS; add the
BOS and drop that newline to match training (paper-repro `docs/fidelity.md`, section 5).

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


def results_section(scores: dict[str, Any]) -> str:
    """This model's RewardBench numbers (percent, 95% CIs) next to the published card's."""

    def cell(est: dict[str, float]) -> str:
        return f"{100 * est['score']:.1f} [{100 * est['ci_low']:.1f}, {100 * est['ci_high']:.1f}]"

    card = rb.CARD_CURRENT[TARGET]
    mine = [cell(scores["score"])] + [cell(scores["sections"][s]) for s in rb.SECTIONS]
    return "\n".join(
        [
            f"{scores['n_pairs']} pairs of `allenai/reward-bench` (filtered), input mode "
            f"`{scores['input_mode']}`, {scores['dtype']}; accuracy in percent with 95% "
            "bootstrap CIs; Score = mean of the four sections (reward-bench weights at ece3d67).",
            "",
            "| | " + " | ".join(rb.METRICS) + " |",
            "|---|" + "---:|" * len(rb.METRICS),
            "| this model | " + " | ".join(mine) + " |",
            f"| `allenai/{TARGET}` (its card) | "
            + " | ".join(f"{card[m]:.1f}" for m in rb.METRICS)
            + " |",
        ]
    )


def model_index(name: str, scores: dict[str, Any]) -> list[dict[str, Any]]:
    """The RewardBench results as Hugging Face ``model-index`` metadata: one result (task,
    dataset, metrics), accuracy in percent for the Score and each section."""
    estimates = {"Score": scores["score"], **scores["sections"]}
    metrics = [
        {"type": "accuracy", "name": metric, "value": round(100 * est["score"], 2)}
        for metric in rb.METRICS
        if (est := estimates.get(metric)) is not None
    ]
    result = {
        "task": {"type": "text-classification", "name": "Reward modeling"},
        "dataset": {"type": "allenai/reward-bench", "name": "RewardBench", "split": "filtered"},
        "metrics": metrics,
    }
    return [{"name": name, "results": [result]}]


def _with_model_index(text: str, scores: dict[str, Any]) -> str:
    """``text`` (a card) with ``model-index`` set in its YAML front matter (added when absent)."""
    import yaml

    front: dict[str, Any] = {}
    body = text
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        head, body = text[4:].split("\n---\n", 1)
        front = yaml.safe_load(head) or {}
    title = next((ln[2:].strip() for ln in body.splitlines() if ln.startswith("# ")), "")
    front["model-index"] = model_index(title or "reward model", scores)
    return f"---\n{yaml.safe_dump(front, sort_keys=False).strip()}\n---\n{body}"


def update_card_results(model_dir: Path, scores: dict[str, Any]) -> None:
    """Put ``scores`` into the card's RewardBench section (atomic rewrite). The card is the one
    file of the export that changes after export_rm: its manifest (the rule's output, what
    consumers depend on) leaves it out, so this rewrite reruns nothing."""
    card = Path(model_dir) / CARD_FILE
    text = card.read_text() if card.is_file() else ""
    body = f"{RESULTS_BEGIN}\n{results_section(scores)}\n{RESULTS_END}"
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        text = head + body + rest.split(RESULTS_END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## RewardBench\n\n{body}\n"
    write_text(card, _with_model_index(text, scores))


DOWNSTREAM_BEGIN = "<!-- downstream:begin -->"
DOWNSTREAM_END = "<!-- downstream:end -->"
DOWNSTREAM_MODELS = ("sft", "ppo", "bon_ours", "bon_published")


def downstream_section(results: dict[str, Any]) -> str:
    """What this RM does downstream (eval_downstream/results.json): per task the SFT policy, the
    PPO policy trained with it, and best-of-N selected by it and by the published RM."""

    def cell(row: dict[str, Any] | None) -> str:
        if not row:
            return "n/a"
        lo, hi = row["ci"]
        return f"{100 * row['value']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    models = results.get("models", {})
    n = results.get("settings", {}).get("sampling", {}).get("n")
    lines = [
        f"lm-evaluation-harness {results.get('settings', {}).get('lm_eval_version', '?')}, "
        f"percent with 95% bootstrap CIs; best-of-{n} from the SFT policy's samples.",
        "",
        "| task | SFT | PPO with this RM | best-of-N, this RM | best-of-N, published RM |",
        "|---|---:|---:|---:|---:|",
    ]
    for task, info in results.get("tasks", {}).items():
        cells = " | ".join(cell(models.get(m, {}).get(task)) for m in DOWNSTREAM_MODELS)
        lines.append(f"| {info['name']} ({info['setting']}) | {cells} |")
    not_run = sorted(results.get("not_run", {}).items())
    if not_run:
        lines += ["", *(f"- {name}: {why}" for name, why in not_run)]
    return "\n".join(lines)


def update_card_downstream(model_dir: Path, results: dict[str, Any]) -> None:
    """Put the downstream results into the card's "Downstream" section (atomic rewrite; the
    card is left out of the export's manifest, see ``update_card_results``)."""
    card = Path(model_dir) / CARD_FILE
    text = card.read_text() if card.is_file() else ""
    body = f"{DOWNSTREAM_BEGIN}\n{downstream_section(results)}\n{DOWNSTREAM_END}"
    if DOWNSTREAM_BEGIN in text and DOWNSTREAM_END in text:
        head, rest = text.split(DOWNSTREAM_BEGIN, 1)
        text = head + body + rest.split(DOWNSTREAM_END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Downstream\n\n{body}\n"
    write_text(card, text)
