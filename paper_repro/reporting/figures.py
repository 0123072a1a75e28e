"""Report figures (matplotlib, Agg backend), each saved as ``<name>.png`` and ``<name>.pdf``.

Names are stable (the Snakemake ``report()`` wrappers refer to them):
train_loss, train_accuracy, train_lr, rewardbench_subsets, reward_distributions, ppo_reward,
ppo_kl. PDFs carry no creation date, so a rerun on the same inputs writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..provenance.io import atomic_path

FIGURES = (
    "train_loss",
    "train_accuracy",
    "train_lr",
    "rewardbench_subsets",
    "reward_distributions",
    "ppo_reward",
    "ppo_kl",
)
SECTION_COLORS = {
    "Chat": "#4C72B0",
    "Chat Hard": "#DD8452",
    "Safety": "#55A868",
    "Reasoning": "#C44E52",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes / CI
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "font.size": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.hashsalt": "paper-repro",
            # embedded TrueType (Type 42) instead of matplotlib's default Type 3 fonts, which
            # many venues reject
            "pdf.fonttype": 42,
        }
    )
    return plt


def _save(fig, folder: Path, name: str) -> list[Path]:
    plt = _plt()
    out = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = folder / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight", metadata=meta)
        out.append(path)
    plt.close(fig)
    return out


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < window:
        return y
    kernel = np.ones(window) / window
    head = np.cumsum(y[: window - 1]) / np.arange(1, window)  # ramp-up so lengths match
    return np.concatenate([head, np.convolve(y, kernel, mode="valid")])


def line_plot(
    folder: Path,
    name: str,
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    smooth: int = 0,
    hline: float | None = None,
    logy: bool = False,
) -> list[Path]:
    """One or more curves over steps; ``smooth`` adds a moving average of the first series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    xs = np.asarray(x, dtype=float)
    for i, (label, ys) in enumerate(series.items()):
        y = np.asarray(ys, dtype=float)
        alpha = 0.35 if smooth and i == 0 else 1.0
        ax.plot(xs, y, label=label, lw=1.0, alpha=alpha)
        if smooth and i == 0 and y.size >= smooth:
            ax.plot(xs, _moving_average(y, smooth), label=f"{label} ({smooth}-step mean)", lw=1.6)
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=0.8)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if len(series) > 1 or smooth:
        ax.legend(frameon=False)
    return _save(fig, folder, name)


def subset_bars(
    folder: Path,
    subsets: Sequence[str],
    sections: Sequence[str],
    accuracy_pct: Sequence[float],
    n: Sequence[int],
    title: str,
) -> list[Path]:
    """Horizontal bars, one per RewardBench subset, coloured by section; 50% = chance."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 0.24 * len(subsets) + 1.2))
    y = np.arange(len(subsets))[::-1]
    colors = [SECTION_COLORS.get(s, "#888888") for s in sections]
    ax.barh(y, accuracy_pct, color=colors)
    for yi, acc, count in zip(y, accuracy_pct, n, strict=True):
        ax.text(min(acc + 1, 101), yi, f"{acc:.0f}% (n={count})", va="center", fontsize=7)
    ax.axvline(50, color="grey", ls="--", lw=0.8)
    ax.set_yticks(y, subsets, fontsize=7)
    ax.set_xlim(0, 118)
    ax.set(xlabel="accuracy (%)", title=title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in SECTION_COLORS.values()]
    ax.legend(
        handles,
        list(SECTION_COLORS),
        frameon=False,
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )  # outside the axes: never over a bar label
    return _save(fig, folder, "rewardbench_subsets")


def reward_distributions(
    folder: Path, chosen: Sequence[float], rejected: Sequence[float], title: str
) -> list[Path]:
    """Left: chosen vs rejected reward histograms; right: margin (chosen - rejected)."""
    plt = _plt()
    c, r = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.0, 3.0))
    bins = np.histogram_bin_edges(np.concatenate([c, r]), bins=40)
    a1.hist(c, bins=bins, alpha=0.6, label=f"chosen (mean {c.mean():.2f})")
    a1.hist(r, bins=bins, alpha=0.6, label=f"rejected (mean {r.mean():.2f})")
    a1.set(xlabel="reward", ylabel="pairs", title=title)
    a1.legend(frameon=False, fontsize=7)
    m = c - r
    a2.hist(m, bins=40, color="#8172B2")
    a2.axvline(0, color="grey", ls="--", lw=0.8)
    a2.set(
        xlabel="margin = chosen - rejected",
        ylabel="pairs",
        title=f"margin > 0 for {100 * np.mean(m > 0):.1f}% of pairs",
    )
    fig.tight_layout()
    return _save(fig, folder, "reward_distributions")
