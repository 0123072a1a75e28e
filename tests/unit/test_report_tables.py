"""The report's table renderer: dataclass rows -> markdown / booktabs LaTeX (pure functions)."""

from __future__ import annotations

import pytest

from paper_repro.reporting.tables import (
    Column,
    Table,
    format_cell,
    latex_escape,
    parse_markdown_table,
    to_latex,
    to_markdown,
)

T = Table(
    caption="Card vs reproduced (%)",
    label="tab:x",
    columns=(
        Column("Metric"),
        Column("Ours", "r", "{:.1f}"),
        Column("Δ", "r", "{:+.1f}"),
        Column("Reachable", "c"),
    ),
    rows=(
        ("Score", 70.96, -0.04, None),
        ("Chat | Hard", 56.14, 0.04, True),
        ("mt_bench 100%", 1.0, -12.0, False),
    ),
    notes="CI by bootstrap & co.",
    midrules=(2,),
)


def test_format_cell():
    assert format_cell(None) == "n/a" and format_cell(True) == "yes" and format_cell(False) == "no"
    assert format_cell(0.123456, "{:.2f}") == "0.12" and format_cell(-0.04, "{:+.1f}") == "-0.0"
    assert format_cell(1234, "{:,}") == "1,234" and format_cell("x", "{:.1f}") == "x"


def test_markdown_round_trips_through_the_parser():
    md = to_markdown(T)
    assert md.splitlines()[0] == "**Card vs reproduced (%)**"
    assert "|:---|---:|---:|:---:|" in md
    rows = parse_markdown_table(md)
    assert rows == [
        {"Metric": "Score", "Ours": "71.0", "Δ": "-0.0", "Reachable": "n/a"},
        {"Metric": "Chat | Hard", "Ours": "56.1", "Δ": "+0.0", "Reachable": "yes"},
        {"Metric": "mt_bench 100%", "Ours": "1.0", "Δ": "-12.0", "Reachable": "no"},
    ]
    assert md.rstrip().endswith("*CI by bootstrap & co.*")


def test_latex_is_booktabs_and_escaped():
    tex = to_latex(T)
    lines = tex.splitlines()
    # natural size: never scaled (wide tables are split where they are built)
    assert r"\begin{tabular}{lrrc}" in lines and r"\end{tabular}" in lines
    assert "resizebox" not in tex and "scalebox" not in tex
    assert lines.count(r"\toprule") == 1
    assert lines.count(r"\midrule") == 2  # header rule + the requested one before row 2
    assert r"\bottomrule" in lines and "|" not in tex.replace("Chat | Hard", "")
    assert r"mt\_bench 100\% & 1.0 & -12.0 & no \\" in lines
    assert r"Metric & Ours & $\Delta$ & Reachable \\" in lines
    assert (
        lines.index(r"\midrule", lines.index(r"\midrule") + 1)
        == lines.index(r"mt\_bench 100\% & 1.0 & -12.0 & no \\") - 1
    )
    assert r"\caption{Card vs reproduced (\%)}" in tex and r"\label{tab:x}" in tex
    assert r"CI by bootstrap \& co." in tex


def test_latex_escape_specials():
    assert latex_escape(r"a_b&c%d$e#f{g}h~i^j\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )


def test_row_width_mismatch_is_an_error():
    with pytest.raises(ValueError, match="tab:y: row 0 has 1 cells, expected 2"):
        Table("c", "tab:y", (Column("a"), Column("b")), (("only",),))


def test_report_prose_markdown_to_latex():
    from paper_repro.reporting.document import md_to_tex

    assert md_to_tex("**Smoke run.** Preset `llama3_70b` at 100% & more") == (
        r"\textbf{Smoke run.} Preset \texttt{llama3\_\allowbreak{}70b} at 100\% \& more"
    )


def test_document_numbers_floats_and_resolves_references():
    """Prose refers to floats by label; markdown gets "Table N", LaTeX \\ref; a reference to a
    float the document lacks is an error instead of a "??" in the PDF."""
    from paper_repro.config import load_config
    from paper_repro.reporting.document import Doc, Figure, render_latex, render_markdown

    cfg = load_config("tiny")
    doc = Doc([])
    doc.heading("Results")
    doc.para(f"{Doc.ref('tab:x')} and {Doc.ref('fig:train-loss')} show it.")
    doc.table(T)
    doc.figure(Figure("train_loss", "Loss."))
    md = render_markdown(doc, cfg, _entries())
    assert "Table 1 and Figure 1 show it." in md
    assert "**Table 1: Card vs reproduced (%)**" in md and "*Figure 1: Loss.*" in md
    tex = render_latex(doc, cfg)
    assert r"Table~\ref{tab:x} and Figure~\ref{fig:train-loss} show it." in tex
    assert r"\label{fig:train-loss}" in tex and r"\clearpage" in tex.split(r"\bibliography")[0]
    doc.para(f"See {Doc.ref('tab:missing')}.")
    with pytest.raises(ValueError, match="refers to tab:missing"):
        render_latex(doc, cfg)


def _entries():
    from paper_repro.reporting.bibtex import find_citation_bib, read_bibtex

    return read_bibtex(find_citation_bib())
