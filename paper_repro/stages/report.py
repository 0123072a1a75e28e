"""Stage ``report``: the citation-ready record of one run, from the stage files (never MLflow).

Writes ``results/<run>/report/``:

- ``report.md`` and ``report.tex`` (booktabs tables: RewardBench card vs reproduced with deltas
  and CIs, per-subset accuracy, hyperparameters and card interpretation, data counts, training
  and PPO summaries; a tiny-preset report says it is a smoke-scale run, not a reproduction);
- ``figures/<name>.{png,pdf}`` (names in ``paper_repro.reporting.figures.FIGURES``);
- ``references.bib``: the CITATION.bib entries of every key ``report.tex`` cites;
- ``provenance.json``: git commit, config hashes, data and model sha256 manifests, MLflow run ids,
  package versions.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config import ReproConfig, config_hash, load_config
from ..integrity import verify_inputs
from ..io import write_json, write_text
from ..paths import RunPaths
from ..reporting import content, figures
from ..reporting.bibtex import BibEntry, cited_keys, find_citation_bib, read_bibtex, subset_bib
from ..reporting.inputs import ReportInputs, load_inputs, series
from ..reporting.provenance import build_provenance
from ..reporting.tables import Table, latex_escape, to_latex, to_markdown
from ..tracking import stage_run, sync

STAGE = "report"
TARGET = "allenai/llama-3-tulu-2-70b-uf-mean-rm"
# Every key the report cites, in order of first appearance (tests check CITATION.bib has them).
CITED = (
    "paper_repro2026",
    "ivison2024unpacking",
    "ivison2023camels",
    "llama3herd2024",
    "cui2023ultrafeedback",
    "lambert2024rewardbench",
)


def is_smoke(cfg: ReproConfig) -> bool:
    return cfg.model.source == "tiny" or cfg.model.arch == "tiny"


@dataclass
class Figure:
    name: str
    caption: str


@dataclass
class Doc:
    """The report as an ordered list of blocks, rendered to markdown and LaTeX."""

    blocks: list[tuple[str, object]]

    def heading(self, text: str) -> None:
        self.blocks.append(("h", text))

    def para(self, md: str, tex: str | None = None) -> None:
        self.blocks.append(("p", (md, tex if tex is not None else md_to_tex(md))))

    def items(self, pairs: list[tuple[str, str]]) -> None:
        """A bullet list; each item as (markdown, LaTeX)."""
        self.blocks.append(("l", pairs))

    def table(self, t: Table | None) -> None:
        if t is not None:
            self.blocks.append(("t", t))

    def figure(self, f: Figure) -> None:
        self.blocks.append(("f", f))


def md_to_tex(md: str) -> str:
    """The little markdown the report's prose uses: `code` and **bold**; the rest escaped."""
    out = []
    for i, chunk in enumerate(md.split("`")):
        if i % 2:
            out.append(rf"\texttt{{{latex_escape(chunk)}}}")
            continue
        for j, part in enumerate(chunk.split("**")):
            out.append(rf"\textbf{{{latex_escape(part)}}}" if j % 2 else latex_escape(part))
    return "".join(out)


def _cite_md(*keys: str) -> str:
    return "[" + "; ".join(f"@{k}" for k in keys) + "]"


def _cite_tex(*keys: str) -> str:
    return r"~\cite{" + ",".join(keys) + "}"


# --------------------------------------------------------------------------- figures


def make_figures(inp: ReportInputs, folder: Path) -> list[Figure]:
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Figure] = []
    rows = inp.train_metrics or []
    smooth = 10 if len(rows) >= 50 else 0
    for name, key, ylabel, extra in (
        ("train_loss", "loss", "Bradley-Terry loss", {"hline": 0.6931}),
        ("train_accuracy", "accuracy", "pairwise accuracy (training batch)", {"hline": 0.5}),
        ("train_lr", "lr", "learning rate", {}),
    ):
        x, y = series(rows, "update", key)
        if y:
            figures.line_plot(
                folder,
                name,
                x,
                {key: y},
                xlabel="optimizer update",
                ylabel=ylabel,
                title=f"Reward model training: {key}",
                smooth=smooth if key != "lr" else 0,
                **extra,
            )
            made.append(
                Figure(
                    name,
                    f"Reward-model training {key} per optimizer update"
                    + (" (dashed: chance level)" if "hline" in extra else "")
                    + ".",
                )
            )
    if inp.scores:
        subs = inp.scores["subsets"]
        order = [s for sec in content.rb.SECTIONS.values() for s in sec if s in subs]
        order += sorted(set(subs) - set(order))
        figures.subset_bars(
            folder,
            order,
            [content.rb.SUBSET_SECTIONS.get(s, "") for s in order],
            [100 * subs[s]["accuracy"] for s in order],
            [subs[s]["n"] for s in order],
            "RewardBench accuracy per subset",
        )
        made.append(
            Figure(
                "rewardbench_subsets",
                "RewardBench accuracy per subset, coloured by section (dashed: chance).",
            )
        )
    if inp.pairs:
        figures.reward_distributions(
            folder, inp.pairs["reward_chosen"], inp.pairs["reward_rejected"], "RewardBench rewards"
        )
        made.append(
            Figure(
                "reward_distributions",
                "Rewards of chosen and rejected RewardBench completions and their margins.",
            )
        )
    prow = inp.ppo_metrics or []
    x, y = series(prow, "step", "reward_mean")
    if y:
        curves = {"reward (after no-EOS rule)": y}
        xr, raw = series(prow, "step", "raw_reward_mean")
        if raw and xr == x:
            curves["RM score (raw)"] = raw
        figures.line_plot(
            folder,
            "ppo_reward",
            x,
            curves,
            xlabel="PPO step",
            ylabel="reward",
            title="PPO: mean reward of sampled responses",
        )
        made.append(Figure("ppo_reward", "PPO training reward per step."))
    x, y = series(prow, "step", "kl")
    if y:
        figures.line_plot(
            folder,
            "ppo_kl",
            x,
            {"KL": y},
            xlabel="PPO step",
            ylabel="KL(policy || reference), summed over tokens",
            title="PPO: KL to the reference policy",
        )
        made.append(Figure("ppo_kl", "PPO KL divergence to the reference policy per step."))
    return made


# --------------------------------------------------------------------------- document


def build_doc(cfg: ReproConfig, inp: ReportInputs, figs: list[Figure], paths: RunPaths) -> Doc:
    doc = Doc([])
    names = {f.name: f for f in figs}
    if is_smoke(cfg):
        doc.para(
            "**Smoke-scale run, not a reproduction.** This report comes from the `tiny` preset: "
            "a locally built Llama-architecture model of about half a million parameters, trained "
            "on the shipped synthetic fixtures on CPU. It exercises the same code path as the "
            "cluster presets; its numbers say nothing about the 70B reward model."
        )
    parts = (  # (text, keys cited after it)
        (f"This report records run {paths.root.name} of paper-repro", ("paper_repro2026",)),
        (
            f", which re-creates the reward model {TARGET} end to end: the UltraFeedback (mean of "
            "aspects) Bradley-Terry reward model of Tulu 2.5",
            ("ivison2024unpacking",),
        ),
        (", trained from the Llama 3 Tulu 2 70B SFT model", ("ivison2023camels", "llama3herd2024")),
        (" on UltraFeedback preferences", ("cui2023ultrafeedback",)),
        (", and evaluated on RewardBench", ("lambert2024rewardbench",)),
    )
    doc.para(
        "".join(t + " " + _cite_md(*k) for t, k in parts) + ".",
        "".join(latex_escape(t) + _cite_tex(*k) for t, k in parts) + ".",
    )

    doc.heading("Configuration and card interpretation")
    interp = content.INTERPRETATIONS.get(cfg.preset)
    line = f"Preset `{cfg.preset}`: {cfg.description} (config hash `{config_hash(cfg)}`)."
    doc.para(line)
    if interp:
        doc.para(f"Card interpretation used: {interp}")
    else:
        doc.para(
            "This preset is not one of the 70B card interpretations; the table still shows "
            "them for reference."
        )
    doc.para("The card's hyperparameter block admits three readings, each a preset:")
    doc.items(
        [(f"`{n}`: {t}", md_to_tex(f"`{n}`: {t}")) for n, t in content.INTERPRETATIONS.items()]
    )
    variants = {n: load_config(n) for n in content.CARD_VARIANTS}
    doc.table(content.hyperparameter_table(cfg, variants, inp.train_summary))

    doc.heading("Data")
    if inp.data_report:
        doc.table(content.data_table(inp.data_report))
    else:
        doc.para(f"No data report ({paths.data_report} is missing).")

    doc.heading("Reward-model training")
    if inp.train_summary:
        doc.table(content.training_table(inp.train_summary))
    else:
        doc.para(f"No training summary ({paths.train_summary} is missing).")
    for name in ("train_loss", "train_accuracy", "train_lr"):
        if name in names:
            doc.figure(names[name])

    doc.heading("RewardBench")
    if inp.scores and inp.comparison:
        s = inp.scores
        doc.para(
            f"{s.get('n_pairs')} pairs, input mode `{s.get('input_mode')}`, "
            f"dtype {s.get('dtype')}, {s.get('ties', 0)} ties."
        )
        doc.table(content.rewardbench_table(inp.comparison, inp.scores))
        doc.table(content.first_revision_table(inp.comparison))
        doc.table(content.subsets_table(inp.scores))
    else:
        doc.para("No RewardBench results (eval_rewardbench outputs are missing).")
    for name in ("rewardbench_subsets", "reward_distributions"):
        if name in names:
            doc.figure(names[name])

    doc.heading("PPO")
    if inp.ppo_summary:
        doc.table(content.ppo_table(inp.ppo_summary))
    else:
        doc.para(f"The PPO stage did not run for this report ({paths.ppo_summary} is missing).")
    for name in ("ppo_reward", "ppo_kl"):
        if name in names:
            doc.figure(names[name])

    doc.heading("Provenance")
    doc.para(
        "`provenance.json` next to this file lists the git commit, config hashes, the sha256 "
        "of every data file and model file, the MLflow run ids and the library versions."
    )
    if inp.missing:
        gone = ", ".join(str(p.relative_to(paths.root)) for p in inp.missing)
        doc.para(f"Stage outputs not found when this report was written: {gone}.")
    return doc


def _md_references(entries: dict[str, BibEntry]) -> str:
    lines = ["## References", ""]
    for k in CITED:
        f = entries[k].fields
        eprint = f" arXiv:{f['eprint']}." if "eprint" in f else ""
        title = f["title"].replace("{", "").replace("}", "")
        author = f.get("author", "").replace("{", "").replace("}", "")
        lines.append(f"- [@{k}] {author}. *{title}*. {f.get('year', '')}.{eprint}")
    return "\n".join(lines) + "\n"


def render_markdown(doc: Doc, cfg: ReproConfig, entries: dict[str, BibEntry]) -> str:
    out = [f"# Reproduction report: `{TARGET}` ({cfg.preset})", ""]
    for kind, body in doc.blocks:
        if kind == "h":
            out += [f"## {body}", ""]
        elif kind == "p":
            out += [body[0], ""]
        elif kind == "l":
            out += [f"- {md}" for md, _ in body] + [""]
        elif kind == "t":
            out += [to_markdown(body), ""]
        elif kind == "f":
            out += [f"![{body.caption}](figures/{body.name}.png)", "", f"*{body.caption}*", ""]
    out.append(_md_references(entries))
    return "\n".join(out)


def render_latex(doc: Doc, cfg: ReproConfig) -> str:
    title = latex_escape(f"Reproduction report: {TARGET} ({cfg.preset})")
    out = [
        r"\documentclass[11pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage[margin=2.5cm]{geometry}",
        r"\usepackage{hyperref}",
        rf"\title{{{title}}}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
        "",
    ]
    for kind, body in doc.blocks:
        if kind == "h":
            out += [rf"\section{{{latex_escape(body)}}}", ""]
        elif kind == "p":
            out += [body[1], ""]
        elif kind == "l":
            out += [r"\begin{itemize}", *(rf"\item {tex}" for _, tex in body), r"\end{itemize}", ""]
        elif kind == "t":
            out += [to_latex(body)]
        elif kind == "f":
            out += [
                r"\begin{figure}[htbp]",
                r"\centering",
                rf"\includegraphics[width=0.8\linewidth]{{figures/{body.name}.pdf}}",
                rf"\caption{{{latex_escape(body.caption)}}}",
                rf"\label{{fig:{body.name.replace('_', '-')}}}",
                r"\end{figure}",
                "",
            ]
    out += [r"\bibliographystyle{plain}", r"\bibliography{references}", r"\end{document}", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- stage


def write_report(cfg: ReproConfig, paths: RunPaths) -> dict[str, Path]:
    """Build every report file; returns {kind: path}. No MLflow here (tests call it directly)."""
    inp = load_inputs(paths)
    fig_dir = paths.report_figures
    staging = fig_dir.with_name(".figures.tmp")  # the figures folder appears whole or not at all
    if staging.exists():
        shutil.rmtree(staging)
    figs = make_figures(inp, staging)
    entries = read_bibtex(find_citation_bib())
    doc = build_doc(cfg, inp, figs, paths)
    tex = render_latex(doc, cfg)
    files = {
        "md": paths.report_md,
        "tex": paths.report_tex,
        "bib": paths.report_bib,
        "provenance": paths.report_provenance,
    }
    write_text(files["bib"], subset_bib(entries, cited_keys(tex), str(find_citation_bib())))
    write_text(files["md"], render_markdown(doc, cfg, entries))
    write_text(files["tex"], tex)
    write_json(files["provenance"], build_provenance(cfg, paths, inp.read))
    if fig_dir.exists():  # stale figures of absent inputs must not survive a rerun
        shutil.rmtree(fig_dir)
    os.replace(staging, fig_dir)
    return {**files, "figures": fig_dir}


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    verify_inputs(paths, STAGE)
    sync(cfg, paths)  # send what earlier stages buffered during a tracking outage
    with stage_run(cfg, paths, STAGE) as tr:
        files = write_report(cfg, paths)
        for key in ("md", "tex", "bib", "provenance"):
            tr.log_artifact(files[key])
        tr.log_artifact(files["figures"], "figures")
        tr.set_tags({"smoke_scale": is_smoke(cfg)})
    figs = sorted(p.name for p in files["figures"].glob("*.png"))
    print(f"report: {files['md']} ({len(figs)} figures, PNG + PDF) -> {paths.report_dir}")
    return 0
