"""The downstream table of the report: task x model (SFT, SFT one sample, PPO ours, BoN ours,
BoN published) from ``eval_downstream/results.json``, with bootstrap CIs, the paired deltas
PPO - SFT, BoN ours - BoN published and BoN ours - SFT one sample (best-of-1), and the published numbers of the same SFT policy where the setting
is the same; the tasks that did not run are listed with the reason, never as zero."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .tables import Column, Table


@dataclass(frozen=True)
class Published:
    value_pct: float
    setting: str
    source: str


# Published numbers of the SFT policies, only where the card's setting is the one run here (its
# MMLU is 5-shot, TruthfulQA %Info+True and HumanEval pass@10: those cells stay empty).
# Source: the "Performance" table of the allenai/llama-3-tulu-2-dpo-70b model card (README at
# hub commit bdc7ac1), rows "Llama 3 Tulu 2 70b" and "Llama 3 Tulu 2 8b" (the latter also in the
# allenai/llama-3-tulu-2-dpo-8b card). No PPO or best-of-N number of this RM is published.
CARD = "allenai/llama-3-tulu-2-dpo-70b model card, Performance table"
PUBLISHED: dict[str, dict[str, Published]] = {
    "allenai/llama-3-tulu-2-70b": {
        "gsm8k_cot": Published(84.5, "8-shot CoT", CARD),
        "bbh_cot_fewshot": Published(77.9, "3-shot CoT", CARD),
        "ifeval": Published(59.1, "loose acc", CARD),
    },
    "allenai/llama-3-tulu-2-8b": {
        "gsm8k_cot": Published(61.0, "8-shot CoT", CARD),
        "bbh_cot_fewshot": Published(59.2, "3-shot CoT", CARD),
        "ifeval": Published(46.8, "loose acc", CARD),
    },
}

MODELS = (("sft", "SFT"), ("sft_sample", "SFT, one sample"), ("ppo", "PPO (ours)"))
MODELS += (("bon_ours", "BoN (our RM)"), ("bon_published", "BoN (published RM)"))
# the paired delta each row shows: (a, b) for a - b on the same documents
PAIRS = {
    "ppo": ("ppo", "sft"),
    "bon_ours": ("bon_ours", "bon_published"),
    "sft_sample": ("bon_ours", "sft_sample"),
}


def _cell(row: dict[str, Any] | None) -> str | None:
    if not row:
        return None
    lo, hi = row["ci"]
    v = 100 * row["value"]
    if math.isnan(lo):
        return f"{v:.1f}"
    return f"{v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _delta(results: dict[str, Any], a: str, b: str, task: str) -> str | None:
    for d in results.get("deltas", []):
        if (d["a"], d["b"], d["task"]) == (a, b, task) and d["docs"]:
            return f"{100 * d['delta']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
    return None


def downstream_table(results: dict[str, Any], sft_hub_id: str | None) -> Table:
    """One row per task and model: the value in percent with its 95% bootstrap CI, the paired
    delta of ``PAIRS`` on the PPO, BoN-ours and one-sample rows, the
    published number of the same SFT policy on the SFT row."""
    published = PUBLISHED.get(sft_hub_id or "", {})
    models = results.get("models", {})
    rows, midrules = [], []
    shown = [(m, label) for m, label in MODELS if m in models]  # --policy/--rm: SFT and BoN
    for task, info in results.get("tasks", {}).items():
        if rows:
            midrules.append(len(rows))
        for i, (model, label) in enumerate(shown):
            pub = published.get(task) if model == "sft" else None
            delta = _delta(results, *PAIRS[model], task) if model in PAIRS else None
            rows.append(
                (
                    f"{info['name']} ({info['setting']})" if i == 0 else "",
                    label,
                    _cell(models.get(model, {}).get(task)),
                    delta,
                    f"{pub.value_pct:.1f} ({pub.setting})" if pub else None,
                )
            )
    n = results.get("settings", {}).get("sampling", {}).get("n")
    columns = (
        Column("task"),
        Column("model"),
        Column("value [95% CI]", "r"),
        Column("paired delta [95% CI]", "r"),
        Column("published", "r"),
    )
    notes = (
        f"lm-evaluation-harness {results.get('settings', {}).get('lm_eval_version', '?')}; "
        "values in %, bootstrap CIs over documents. SFT: the task's own generation setting; "
        f"SFT, one sample: the first of the best-of-{n} samples (best-of-1, same sampling). "
        "Paired delta: PPO - SFT on the PPO row, BoN ours - BoN published on the BoN (our RM) "
        "row, BoN ours - SFT one sample on that row, on the same documents; both "
        f"best-of-{n} rows choose among the same samples of the SFT policy. Best-of-N runs on "
        "generation tasks only (n/a on multiple-choice tasks, which read the policy's "
        f"log-likelihoods). Published: {CARD}, same setting only; no PPO or best-of-N numbers "
        "are published for this reward model."
    )
    return Table(
        "Downstream evaluation: policies and best-of-N selections on the paper's suite",
        "tab:downstream",
        columns,
        tuple(rows),
        notes,
        tuple(midrules),
    )


def not_run_lines(results: dict[str, Any]) -> list[str]:
    return [f"{name}: {why}" for name, why in sorted(results.get("not_run", {}).items())]


def downstream_section(doc, results: dict[str, Any] | None, sft_hub_id: str | None) -> None:
    """The report's "Downstream evaluation" section (``doc``: reporting.document.Doc)."""
    from .document import md_to_tex

    doc.heading("Downstream evaluation")
    if results is None:
        doc.para("The eval_downstream stage did not run for this report.")
        return
    doc.para(
        "What the reward model does downstream, as the Tulu 2.5 paper measures it: the SFT "
        "policy, the PPO policy trained against our RM, and best-of-N from the SFT policy's "
        "samples selected by our RM and by the published RM, scored by lm-evaluation-harness "
        f"({doc.ref('tab:downstream')})."
    )
    doc.table(downstream_table(results, sft_hub_id))
    lines = not_run_lines(results)
    if lines:
        doc.para("Tasks of the paper's suite not run here:")
        doc.items([(line, md_to_tex(line)) for line in lines])


def markdown(results: dict[str, Any], sft_hub_id: str | None = None) -> str:
    """The table and the not-run list as markdown (``eval-downstream --policy/--rm``)."""
    from .tables import to_markdown

    out = to_markdown(downstream_table(results, sft_hub_id)) + "\n"
    lines = not_run_lines(results)
    return out + "".join(f"- {line}\n" for line in lines)
