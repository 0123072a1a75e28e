"""The reproduction verdict: the card, the published RM re-evaluated here (eval_reference) and the
reproduced RM (eval_rewardbench), per section and Score; how the two models agree pair by pair;
and one sentence per metric saying whether the reproduced RM is within noise of the published one
(the paired bootstrap CI of their difference contains 0). Pure functions of the stage files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..rewardbench import sections as rb
from ..rewardbench.agreement import compare, match_pairs
from .tables import Column, Table


@dataclass(frozen=True)
class MetricRow:
    metric: str
    card_pct: float | None
    published: rb.Estimate  # fractions
    reproduced: rb.Estimate
    difference: rb.Estimate  # reproduced - published, paired bootstrap
    within_noise: bool


@dataclass(frozen=True)
class Verdict:
    reference: str  # the published model's name (or the stand-in's)
    standin: bool
    n_pairs: int
    same_ranking: float
    spearman_margin: float
    rows: tuple[MetricRow, ...]
    samples: int
    seed: int


def _estimate(scores: Mapping[str, Any], metric: str) -> rb.Estimate:
    e = scores["score"] if metric == "Score" else scores["sections"][metric]
    return rb.Estimate(e["score"], e["ci_low"], e["ci_high"])


def build_verdict(
    scores: Mapping[str, Any],
    pairs: Mapping[str, list],
    ref_scores: Mapping[str, Any],
    ref_pairs: Mapping[str, list],
    card: Mapping[str, float] | None,
    *,
    samples: int,
    seed: int,
    standin: bool,
) -> Verdict:
    """``scores``/``pairs``: eval_rewardbench's files (the reproduced RM); ``ref_*``:
    eval_reference's (the published RM). Pairs are matched by (id, subset)."""
    ia, ib = match_pairs(pairs["id"], pairs["subset"], ref_pairs["id"], ref_pairs["subset"])

    def take(columns: Mapping[str, list], idx, key: str) -> list[float]:
        return [columns[key][i] for i in idx]

    agreement = compare(
        take(pairs, ia, "subset"),
        take(pairs, ia, "reward_chosen"),
        take(pairs, ia, "reward_rejected"),
        take(ref_pairs, ib, "reward_chosen"),
        take(ref_pairs, ib, "reward_rejected"),
        samples=samples,
        seed=seed,
    )
    d = agreement.difference
    rows = tuple(
        MetricRow(
            metric=m,
            card_pct=card.get(m) if card else None,
            published=_estimate(ref_scores, m),
            reproduced=_estimate(scores, m),
            difference=d.score if m == "Score" else d.sections[m],
            within_noise=d.within_noise(m),
        )
        for m in rb.METRICS
    )
    return Verdict(
        reference=str(ref_scores.get("model", "published RM")),
        standin=standin,
        n_pairs=agreement.n_pairs,
        same_ranking=agreement.same_ranking,
        spearman_margin=agreement.spearman_margin,
        rows=rows,
        samples=samples,
        seed=seed,
    )


def _cell(e: rb.Estimate, sign: bool = False) -> str:
    f = "{:+.1f}" if sign else "{:.1f}"
    return f"{f.format(100 * e.score)} [{f.format(100 * e.ci_low)}, {f.format(100 * e.ci_high)}]"


def three_way_table(v: Verdict) -> Table:
    published = "Stand-in, here" if v.standin else "Published, here"
    return Table(
        caption="RewardBench: card, published RM re-evaluated here, reproduced RM (percent)",
        label="tab:verdict",
        columns=(
            Column("Metric"),
            Column("Card", "r", "{:.1f}"),
            Column(published, "r"),
            Column("Reproduced", "r"),
            Column("Δ (paired)", "r"),
            Column("Within noise", "c"),
        ),
        rows=tuple(
            (
                r.metric,
                r.card_pct,
                _cell(r.published),
                _cell(r.reproduced),
                _cell(r.difference, sign=True),
                r.within_noise,
            )
            for r in v.rows
        ),
        notes=(
            f"Both RMs scored by the same code and settings on the same {v.n_pairs:,} pairs; "
            f"[95% CI], percentile bootstrap ({v.samples} replicates, seed {v.seed}). "
            "Δ = reproduced - published; its CI redraws the same pairs for both models (paired). "
            "Within noise: that CI contains 0."
            + (
                f" Tiny preset: the published column is a stand-in ({v.reference}), "
                "not the published model."
                if v.standin
                else ""
            )
        ),
    )


def agreement_sentence(v: Verdict) -> str:
    return (
        f"Pair by pair, the reproduced RM and {v.reference} rank {100 * v.same_ranking:.1f}% "
        f"of the {v.n_pairs:,} pairs the same way (both prefer the chosen response, or both do "
        f"not); the Spearman correlation of their reward margins (chosen - rejected) is "
        f"{v.spearman_margin:.3f}."
    )


def verdict_sentences(v: Verdict) -> list[str]:
    """One sentence per section and the Score."""
    who = "the stand-in" if v.standin else "the published RM"
    out = []
    for r in v.rows:
        d = r.difference
        judgement = (
            f"within noise of {who}"
            if r.within_noise
            else f"{'above' if d.score > 0 else 'below'} {who} beyond noise"
        )
        out.append(
            f"{r.metric}: the reproduced RM scores {100 * r.reproduced.score:.1f} against "
            f"{100 * r.published.score:.1f} for {who} re-evaluated here (difference "
            f"{100 * d.score:+.1f}, 95% paired CI [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]): "
            f"{judgement}."
        )
    return out
