"""The report's tables, built from stage JSONs by pure functions (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..config import ReproConfig
from ..rewardbench import sections as rb
from .tables import Column, Table

PCT = "{:.1f}"
DELTA = "{:+.1f}"
CARD_VARIANTS = ("llama3-70b-uf", "llama3-70b-uf-card-literal", "llama3-70b-uf-easylm")
CARD_VARIANT_LABELS = {
    "llama3-70b-uf": "Reconciled",
    "llama3-70b-uf-card-literal": "Card literal",
    "llama3-70b-uf-easylm": "EasyLM b2",
}

# docs/fidelity.md section 4, in the words the report prints.
INTERPRETATIONS = {
    "llama3-70b-uf": (
        "reconciled recipe (docs/fidelity.md section 4): the card prints learning_rate 1e-06 and "
        '"linear cooldown to 1e-05"; read against EasyLM, whose only cooldown knob is an absolute '
        "end_lr, and the documented Tulu 2.5 RM command (lr 1e-5, end_lr 1e-6), the two numbers "
        "are swapped: warm up linearly to 1e-5 over 3% of updates, then decay linearly to 1e-6 at "
        "the last update. Betas (0.9, 0.999) as printed on the card."
    ),
    "llama3-70b-uf-card-literal": (
        "card read literally, as an HF Trainer user would run it: peak lr 1e-6 with a linear "
        "decay to 0 (the printed numbers, docs/fidelity.md section 4)."
    ),
    "llama3-70b-uf-easylm": (
        "reconciled recipe with EasyLM's own AdamW default b2 = 0.95: the documented EasyLM RM "
        "command never set b2, so the card's (0.9, 0.999) is likely HF boilerplate "
        "(docs/fidelity.md section 4)."
    ),
}


def card_values(cfg: ReproConfig) -> dict[str, float] | None:
    """The current card of the model the run's reference is (the 70B target for a stand-in)."""
    name = cfg.reference.hub_id.rsplit("/", 1)[-1]
    if cfg.reference.source == "tiny":
        name = "llama-3-tulu-2-70b-uf-mean-rm"
    return rb.CARD_CURRENT.get(name)


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def _ci(est: Mapping[str, float] | None) -> str | None:
    if not est or est.get("ci_low") is None:
        return None
    return f"[{100 * est['ci_low']:.1f}, {100 * est['ci_high']:.1f}]"


def _models(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in rows:
        if r["model"] not in out:
            out.append(r["model"])
    return out


def _short(model: str) -> str:
    return "70B card" if "70b" in model else "8B card" if "8b" in model else model


def rewardbench_table(comparison: Mapping[str, Any], scores: Mapping[str, Any]) -> Table:
    """Card vs reproduced (current cards, current reward-bench weights), with 95% bootstrap CIs
    from scores.json and deltas (reproduced - card, percentage points) from comparison.json."""
    rows_in = comparison["rows"]
    models = _models(rows_in)
    by = {(r["model"], r["metric"]): r for r in rows_in}
    cols = [Column("Metric"), Column("Reproduced", "r", PCT), Column("95% CI", "r")]
    for m in models:
        cols += [Column(_short(m), "r", PCT), Column(f"Δ {_short(m)}", "r", DELTA)]
    metrics = [m for m in rb.METRICS if any((mod, m) in by for mod in models)]
    rows = []
    for metric in metrics:
        est = scores["score"] if metric == "Score" else scores["sections"].get(metric)
        first = next(by[(m, metric)] for m in models if (m, metric) in by)
        row: list[Any] = [metric, first["reproduced_pct"], _ci(est)]
        for m in models:
            r = by.get((m, metric))
            row += [r["card_pct"], r["delta_pct"]] if r else [None, None]
        rows.append(tuple(row))
    old = scores.get("variants", {}).get("pre_2024_09_xstest", {}).get("sections", {})
    safety = [by.get((m, "Safety")) for m in models]
    if any(r and "reproduced_pre_2024_09_pct" in r for r in safety):
        mine = next(r["reproduced_pre_2024_09_pct"] for r in safety if r)
        row = ["Safety, pre-2024-09 xstest", mine, _ci(old.get("Safety"))]
        for r in safety:
            row += [r["card_pct"], round(mine - r["card_pct"], 2)] if r else [None, None]
        rows.append(tuple(row))
    return Table(
        caption="RewardBench: current model cards vs this run (percent)",
        label="tab:rewardbench",
        columns=tuple(cols),
        rows=tuple(rows),
        notes=(
            "Δ = reproduced - card (percentage points). CI: percentile bootstrap over pairs "
            "within each subset. Score = mean of the four sections (reward-bench weights at "
            "ece3d67). The last row uses the swapped xstest weights of reward-bench before "
            "2024-09, which the 8B card's Safety value implies (docs/fidelity.md section 6)."
        ),
    )


def first_revision_table(comparison: Mapping[str, Any]) -> Table | None:
    first = comparison.get("first_revision")
    if not first or not first.get("rows"):
        return None
    rows_in = first["rows"]
    models = _models(rows_in)
    by = {(r["model"], r["metric"]): r for r in rows_in}
    cols = [Column("Metric"), Column("Reproduced", "r", PCT)]
    for m in models:
        cols += [Column(_short(m), "r", PCT), Column(f"Δ {_short(m)}", "r", DELTA)]
    rows = []
    for metric in rb.METRICS:
        present = [by.get((m, metric)) for m in models]
        if not any(present):
            continue
        row: list[Any] = [metric, next(r for r in present if r)["reproduced_pct"]]
        for r in present:
            row += [r["card_pct"], r["delta_pct"]] if r else [None, None]
        rows.append(tuple(row))
    return Table(
        caption="RewardBench: first card revision (June 2024) vs this run (percent)",
        label="tab:rewardbench-first",
        columns=tuple(cols),
        rows=tuple(rows),
        notes="Definitions of that time: pre-2024-09 xstest weights, Score = sum of sections / 4.5 "
        "(docs/fidelity.md section 6).",
    )


def subsets_table(scores: Mapping[str, Any]) -> Table:
    subsets = scores["subsets"]
    rows, rules = [], []
    for section, names in rb.SECTIONS.items():
        present = [s for s in names if s in subsets]
        if present and rows:
            rules.append(len(rows))
        for s in present:
            v = subsets[s]
            rows.append((s, section, v["n"], v["correct"], _pct(v["accuracy"])))
    extra = sorted(set(subsets) - set(rb.SUBSET_SECTIONS))
    for s in extra:
        v = subsets[s]
        rows.append((s, v.get("section"), v["n"], v["correct"], _pct(v["accuracy"])))
    return Table(
        caption="RewardBench per-subset accuracy of this run",
        label="tab:subsets",
        columns=(
            Column("Subset"),
            Column("Section"),
            Column("Pairs", "r", "{:,}"),
            Column("Correct", "r", "{:,}"),
            Column("Accuracy (%)", "r", PCT),
        ),
        rows=tuple(rows),
        midrules=tuple(rules),
        notes="A pair is correct when reward(chosen) > reward(rejected); ties count as wrong.",
    )


def _fmt_value(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return "(" + ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return v


HYPERPARAMETERS = (
    ("peak learning rate", "rm.lr"),
    ("final learning rate (end_lr)", "rm.end_lr"),
    ("warmup ratio", "rm.warmup_ratio"),
    ("Adam betas", "rm.betas"),
    ("Adam eps", "rm.eps"),
    ("weight decay", "rm.weight_decay"),
    ("gradient clipping", "rm.grad_clip"),
    ("pairs per update", "rm.total_batch_pairs"),
    ("micro batch (pairs per rank)", "rm.micro_batch_pairs"),
    ("epochs", "rm.epochs"),
    ("max sequence length", "data.max_length"),
    ("seed", "rm.seed"),
    ("backend", "rm.backend"),
    ("compute dtype", "model.dtype"),
    ("base model", "model.hub_id"),
    ("preference split", "data.preference.split"),
)


def _get(cfg: ReproConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def hyperparameter_table(cfg: ReproConfig, train_summary: Mapping[str, Any] | None) -> Table:
    """This run's RM hyperparameters, then the quantities train_rm derived from them."""
    rows: list[tuple[Any, ...]] = [
        (label, _fmt_value(_get(cfg, key))) for label, key in HYPERPARAMETERS
    ]
    rules = [len(rows)]
    s = train_summary or {}
    for label, key in (
        ("optimizer updates", "updates"),
        ("warmup updates", "warmup_updates"),
        ("gradient accumulation (padded)", "accumulation_steps"),
        ("tokens per packed forward (max)", "token_budget"),
        ("world size (ranks)", "world_size"),
        ("pairs kept for training", "kept_pairs"),
    ):
        rows.append((label, s.get(key)))
    return Table(
        caption="Reward-model hyperparameters of this run",
        label="tab:hyperparameters",
        columns=(Column("Setting"), Column("This run", "r")),
        rows=tuple(rows),
        midrules=tuple(rules),
        notes="Rows below the rule are derived by train_rm for this run "
        "(train_rm/summary.json); they depend on the data and the world size.",
    )


def card_readings_table(variants: Mapping[str, ReproConfig]) -> Table:
    """The settings in which the card interpretations differ, one column per reading; the
    settings they share go to the notes. (All settings side by side are too wide for a page.)"""
    names = list(variants)
    rows, shared = [], []
    for label, key in HYPERPARAMETERS:
        values = [_fmt_value(_get(variants[n], key)) for n in names]
        if len(set(map(str, values))) > 1:
            rows.append((label, *values))
        else:
            shared.append(f"{label} {values[0]}")
    return Table(
        caption="Reward-model hyperparameters in which the card interpretations differ",
        label="tab:card-readings",
        columns=(Column("Setting"), *(Column(CARD_VARIANT_LABELS.get(n, n), "r") for n in names)),
        rows=tuple(rows),
        notes="Columns: "
        + "; ".join(f"{CARD_VARIANT_LABELS.get(n, n)} = preset {n}" for n in names)
        + ". All of them share: "
        + "; ".join(shared)
        + ".",
    )


def data_table(report: Mapping[str, Any]) -> Table:
    rows = []

    def add(name: str, sec: Mapping[str, Any] | None, note: str = "") -> None:
        if sec is None:
            return
        reasons = sec.get("dropped_by_reason") or {}
        why = ", ".join(f"{k}: {v}" for k, v in reasons.items() if v)
        rows.append(
            (
                name,
                sec.get("total"),
                sec.get("kept"),
                sec.get("dropped"),
                "; ".join(x for x in (why, note) if x) or None,
            )
        )

    add("preference (upstream rows)", report.get("preference"))
    add("train", report.get("train"))
    held = report.get("heldout")
    add("held-out", held, f"source: {held['source']}" if held and "source" in held else "")
    bench = report.get("rewardbench")
    over = bench.get("over_2048_tokens") if bench else None
    add(
        "RewardBench (filtered)",
        bench,
        f"{over} pairs over 2048 tokens" if over is not None else "",
    )
    add("PPO prompts", report.get("ppo_prompts"))
    return Table(
        caption=f"Data (max length {report.get('max_length')} tokens; longer pairs are dropped, "
        "never truncated)",
        label="tab:data",
        columns=(
            Column("Split"),
            Column("Rows", "r", "{:,}"),
            Column("Kept", "r", "{:,}"),
            Column("Dropped", "r", "{:,}"),
            Column("Notes"),
        ),
        rows=tuple(rows),
        notes="From prepare_data/data_report.json.",
    )


def _quantity_table(
    summary: Mapping[str, Any],
    keys: tuple[tuple[str, str, str], ...],
    caption: str,
    label: str,
    notes: str,
) -> Table:
    """Two-column (quantity, value) table of a stage summary; fractions under PCT print as %."""
    rows = []
    for name, key, fmt in keys:
        v = summary.get(key)
        if fmt == PCT and isinstance(v, int | float):
            v = 100.0 * v
        rows.append((name, v if v is None else fmt.format(v)))
    return Table(
        caption=caption,
        label=label,
        columns=(Column("Quantity"), Column("Value", "r")),
        rows=tuple(rows),
        notes=notes,
    )


def training_table(summary: Mapping[str, Any]) -> Table:
    keys = (
        ("optimizer updates", "updates", "{:,}"),
        ("final training loss", "final_loss", "{:.4g}"),
        ("final training accuracy (%)", "final_accuracy", PCT),
        ("held-out pairs", "heldout_pairs", "{:,}"),
        ("held-out accuracy (%)", "heldout_accuracy", PCT),
        ("wall time (s)", "wall_s", "{:,.1f}"),
    )
    return _quantity_table(
        summary,
        keys,
        "Reward-model training summary",
        "tab:training",
        "From train_rm/summary.json.",
    )


def ppo_table(summary: Mapping[str, Any]) -> Table:
    keys = (
        ("PPO steps", "steps", "{:,}"),
        ("held-out reward before PPO", "eval_reward_before", "{:.4f}"),
        ("held-out reward after PPO", "eval_reward_after", "{:.4f}"),
        ("training reward, last step", "reward_final", "{:.4f}"),
        ("KL to the reference, last step", "kl_final", "{:.4f}"),
        ("responses without EOS, last step (%)", "no_eos_frac_final", PCT),
        ("KL coefficient", "kl_coef", "{:g}"),
        ("training prompts", "train_prompts", "{:,}"),
        ("held-out prompts", "heldout_prompts", "{:,}"),
    )
    return _quantity_table(
        summary,
        keys,
        "PPO with the trained reward model",
        "tab:ppo",
        "From ppo/summary.json; held-out rewards are means over sampled responses.",
    )
