"""Stage ``report``: the citation-ready record of one run, from the stage files (never MLflow).

Writes ``results/<run>/report/``:

- ``report.md`` and ``report.tex`` (booktabs tables: RewardBench card vs reproduced with deltas
  and CIs, per-subset accuracy, hyperparameters and card interpretation, data counts, training
  and PPO summaries; the verdict: card / published RM re-evaluated here (eval_reference) /
  reproduced RM, pair agreement and one within-noise sentence per metric; a tiny-preset report
  says it is a smoke-scale run, not a reproduction, and that its "published" RM is a stand-in);
- ``figures/<name>.{png,pdf}`` (names in ``paper_repro.reporting.figures.FIGURES``);
- ``references.bib``: the CITATION.bib entries of every key ``report.tex`` cites;
- ``provenance.json``: git commit, config hashes, data and model sha256 manifests, MLflow run ids,
  package versions, and the identity of every stage.

Before anything is written, the recorded identity of every stage is checked against the current
config and upstream files (``reporting.consistency``): a mixture (e.g. eval scores of a model
other than the current export) stops the report with one line and exit 2. The parent MLflow run
gets the headline results (RewardBench Score and sections, held-out accuracy, PPO held-out reward
and KL) so pipelines can be sorted in the MLflow UI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..config import ReproConfig, config_hash, load_config
from ..provenance.integrity import verify_inputs
from ..provenance.io import write_json, write_text
from ..provenance.paths import RunPaths
from ..reporting import content, figures
from ..reporting.bibtex import cited_keys, find_citation_bib, read_bibtex, report_bib
from ..reporting.consistency import check_consistency
from ..reporting.document import (
    TARGET,
    Doc,
    Figure,
    cite_md,
    cite_tex,
    md_to_tex,
    render_latex,
    render_markdown,
)
from ..reporting.inputs import ReportInputs, headline, load_inputs, series
from ..reporting.provenance import build_provenance
from ..reporting.tables import latex_escape
from ..reporting.verdict import (
    agreement_sentence,
    build_verdict,
    three_way_table,
    verdict_sentences,
)
from ..tracking import stage_run, sync

STAGE = "report"


def is_smoke(cfg: ReproConfig) -> bool:
    return cfg.model.source == "tiny" or cfg.model.arch == "tiny"


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
                width=0.8,
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
                width=1.0,  # two panels side by side
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
        size = (
            f"of {inp.rm_parameters:,} parameters (the exported reward model, counted from its "
            "safetensors files)"
            if inp.rm_parameters
            else "(its size is in `paper-repro plan tiny`)"
        )
        doc.para(
            "**Smoke-scale run, not a reproduction.** This report comes from the `tiny` preset: "
            f"a locally built Llama-architecture model {size}, trained on the shipped synthetic "
            "fixtures on CPU. It exercises the same code path as the cluster presets; its "
            "numbers say nothing about the 70B reward model."
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
        "".join(t + " " + cite_md(*k) for t, k in parts) + ".",
        "".join(latex_escape(t) + cite_tex(*k) for t, k in parts) + ".",
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
    ref = Doc.ref
    doc.para(
        f"{ref('tab:hyperparameters')} lists the reward-model settings of this run. The card's "
        f"hyperparameter block admits three readings, each a preset; {ref('tab:card-readings')} "
        "shows the settings in which they differ:"
    )
    doc.items(
        [(f"`{n}`: {t}", md_to_tex(f"`{n}`: {t}")) for n, t in content.INTERPRETATIONS.items()]
    )
    variants = {n: load_config(n) for n in content.CARD_VARIANTS}
    doc.table(content.hyperparameter_table(cfg, inp.train_summary))
    doc.table(content.card_readings_table(variants))

    doc.heading("Data")
    if inp.data_report:
        doc.para(
            f"{ref('tab:data')} counts the rows of every split before and after filtering, with "
            "the reasons rows were dropped."
        )
        doc.table(content.data_table(inp.data_report))
    else:
        doc.para(f"No data report ({paths.data_report} is missing).")

    doc.heading("Reward-model training")
    shown = [names[n] for n in ("train_loss", "train_accuracy", "train_lr") if n in names]
    if inp.train_summary:
        doc.para(f"{ref('tab:training')} summarises the training of the reward model.")
        doc.table(content.training_table(inp.train_summary))
    else:
        doc.para(f"No training summary ({paths.train_summary} is missing).")
    if shown:
        doc.para(_figures_sentence(shown, "show the training curves per optimizer update"))
    for f in shown:
        doc.figure(f)

    doc.heading("RewardBench")
    if inp.scores and inp.comparison:
        s = inp.scores
        first = content.first_revision_table(inp.comparison)
        doc.para(
            f"{s.get('n_pairs')} pairs, input mode `{s.get('input_mode')}`, "
            f"dtype {s.get('dtype')}, {s.get('ties', 0)} ties. {ref('tab:rewardbench')} "
            "compares this run with the current model cards"
            + (f", {ref('tab:rewardbench-first')} with their first revision" if first else "")
            + f"; {ref('tab:subsets')} gives the accuracy on every subset."
        )
        doc.table(content.rewardbench_table(inp.comparison, inp.scores))
        doc.table(first)
        doc.table(content.subsets_table(inp.scores))
    else:
        doc.para("No RewardBench results (eval_rewardbench outputs are missing).")
    shown = [names[n] for n in ("rewardbench_subsets", "reward_distributions") if n in names]
    if shown:
        doc.para(
            _figures_sentence(shown, "show the per-subset accuracy and the reward distributions")
        )
    for f in shown:
        doc.figure(f)

    verdict_section(doc, cfg, inp, paths)

    doc.heading("PPO")
    if inp.ppo_summary:
        doc.para(
            f"{ref('tab:ppo')} summarises PPO of the SFT policy against the reward model "
            "trained here."
        )
        doc.table(content.ppo_table(inp.ppo_summary))
    else:
        doc.para(f"The PPO stage did not run for this report ({paths.ppo_summary} is missing).")
    shown = [names[n] for n in ("ppo_reward", "ppo_kl") if n in names]
    if shown:
        doc.para(_figures_sentence(shown, "show the reward and the KL to the reference per step"))
    for f in shown:
        doc.figure(f)

    from ..reporting.downstream import downstream_section

    downstream_section(doc, inp.downstream, cfg.ppo.policy_hub_id or cfg.model.hub_id)

    doc.heading("Provenance")
    doc.para(
        "`provenance.json` next to this file lists the git commit, config hashes, the sha256 "
        "of every data file and model file, the MLflow run ids and the library versions."
    )
    if inp.missing:
        gone = ", ".join(str(p.relative_to(paths.root)) for p in inp.missing)
        doc.para(f"Stage outputs not found when this report was written: {gone}.")
    return doc


def _figures_sentence(figs: list[Figure], verb_phrase: str) -> str:
    """ "Figure 1, Figure 2 and Figure 3 show ...", referring to each figure (one: "shows")."""
    refs = [Doc.ref(f.label) for f in figs]
    if len(refs) == 1:
        return f"{refs[0]} {verb_phrase.replace('show ', 'shows ', 1)}."
    return f"{', '.join(refs[:-1])} and {refs[-1]} {verb_phrase}."


def verdict_section(doc: Doc, cfg: ReproConfig, inp: ReportInputs, paths: RunPaths) -> None:
    """The reproduced RM against the published RM re-evaluated by the same code (eval_reference):
    the three-way table, pair-by-pair agreement and one verdict sentence per metric."""
    doc.heading("Verdict: reproduced vs published reward model")
    if not (inp.scores and inp.pairs and inp.reference_scores and inp.reference_pairs):
        doc.para(
            "No verdict: it needs the outputs of both eval_rewardbench and eval_reference "
            f"(see {paths.eval_files('eval_reference').folder.name}/)."
        )
        return
    standin = cfg.reference.source == "tiny"
    v = build_verdict(
        inp.scores,
        inp.pairs,
        inp.reference_scores,
        inp.reference_pairs,
        content.card_values(cfg),
        samples=cfg.eval.bootstrap_samples,
        seed=cfg.eval.bootstrap_seed,
        standin=standin,
    )
    if standin:
        doc.para(
            f"**Stand-in, not the published model.** On the tiny preset eval_reference scores "
            f"`{v.reference}`, a second tiny RM trained here with the same recipe and seed "
            f"{cfg.reference.standin_seed}, so that this comparison runs on CPU."
        )
    else:
        doc.para(
            f"The published model `{cfg.reference.hub_id}` (revision `{cfg.reference.revision}`) "
            "was scored by eval_reference with exactly the evaluation code and settings of "
            "eval_rewardbench; the card column is the value printed on its model card."
        )
    doc.para(
        f"{Doc.ref('tab:verdict')} sets the card, the published model as scored here and the "
        "reproduced model side by side."
    )
    doc.table(three_way_table(v))
    doc.para(agreement_sentence(v))
    doc.items([(s, md_to_tex(s)) for s in verdict_sentences(v)])


# --------------------------------------------------------------------------- stage


def checked_inputs(cfg: ReproConfig, paths: RunPaths) -> tuple[ReportInputs, dict[str, Any]]:
    """The report's inputs and the recorded identity of each stage they come from; raises
    ``MixtureError`` when they do not belong together."""
    inp = load_inputs(paths)
    return inp, check_consistency(cfg, paths, inp.read)


def write_report(
    cfg: ReproConfig,
    paths: RunPaths,
    checked: tuple[ReportInputs, dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Build every report file from ``checked_inputs`` (read here when not given); returns
    {kind: path}. No MLflow here (tests call it directly). A mixture raises before anything is
    written."""
    inp, identities = checked or checked_inputs(cfg, paths)
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
    write_text(files["bib"], report_bib(entries, cited_keys(tex), str(find_citation_bib())))
    write_text(files["md"], render_markdown(doc, cfg, entries))
    write_text(files["tex"], tex)
    write_json(files["provenance"], build_provenance(cfg, paths, inp.read, identities))
    if fig_dir.exists():  # stale figures of absent inputs must not survive a rerun
        shutil.rmtree(fig_dir)
    os.replace(staging, fig_dir)
    return {**files, "figures": fig_dir}


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    verify_inputs(paths, STAGE)
    checked = checked_inputs(cfg, paths)  # a mixture stops here, before MLflow or any file
    sync(cfg, paths)  # send what earlier stages buffered during a tracking outage
    with stage_run(cfg, paths, STAGE) as tr:
        files = write_report(cfg, paths, checked)
        for key in ("md", "tex", "bib", "provenance"):
            tr.log_artifact(files[key])
        tr.log_artifact(files["figures"], "figures")
        tr.set_tags({"smoke_scale": is_smoke(cfg)})
        tr.set_parent_tags({"preset": cfg.preset, "config_hash": config_hash(cfg)})
        tr.log_parent_metrics(headline(checked[0]))
    figs = sorted(p.name for p in files["figures"].glob("*.png"))
    print(f"report: {files['md']} ({len(figs)} figures, PNG + PDF) -> {paths.report_dir}")
    return 0
