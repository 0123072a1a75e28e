"""CITATION.bib parses and holds every key the report cites; the report's references.bib covers
every \\cite in report.tex."""

from __future__ import annotations

from pathlib import Path

import pytest

from paper_repro.config import load_config
from paper_repro.provenance.paths import RunPaths
from paper_repro.reporting.bibtex import (
    BibError,
    cited_keys,
    find_citation_bib,
    parse_bibtex,
    read_bibtex,
    subset_bib,
)

REPO = Path(__file__).resolve().parents[2]
REPORT_KEYS = (
    "paper_repro2026",
    "ivison2024unpacking",
    "lambert2024rewardbench",
    "cui2023ultrafeedback",
    "ivison2023camels",
    "llama3herd2024",
)


def test_citation_bib_has_the_keys_the_report_cites():
    entries = read_bibtex(REPO / "CITATION.bib")
    assert set(REPORT_KEYS) <= set(entries)
    assert entries["ivison2024unpacking"].fields["eprint"] == "2406.09279"  # the paper
    assert entries["lambert2024rewardbench"].fields["eprint"] == "2403.13787"
    for e in entries.values():
        assert e.fields.get("title") and e.fields.get("year"), e.key


def test_the_report_finds_the_repository_citation_file():
    assert find_citation_bib() == REPO / "CITATION.bib"


def test_report_tex_cites_only_keys_its_references_bib_holds(tmp_path):
    """The LaTeX the report stage renders (no stage outputs needed: every section degrades to a
    sentence) cites exactly the CITED keys, and references.bib is built from them."""
    from paper_repro.reporting.document import CITED, render_latex
    from paper_repro.reporting.inputs import ReportInputs
    from paper_repro.stages.report import build_doc

    cfg = load_config("tiny")
    tex = render_latex(build_doc(cfg, ReportInputs(), [], RunPaths(tmp_path / "run")), cfg)
    keys = cited_keys(tex)
    assert set(keys) == set(CITED) == set(REPORT_KEYS)
    bib = parse_bibtex(subset_bib(read_bibtex(find_citation_bib()), keys))
    assert list(bib) == keys


def test_parser_reads_nested_braces_quotes_and_bare_values():
    text = """
    @article{a2024x,
      title = {The {Llama} 3 {H}erd},
      author = "Doe, Jane and {Team, AI}",
      year = 2024,
    }
    @misc{b,  note={x}}
    """
    e = parse_bibtex(text)
    assert e["a2024x"].fields == {
        "title": "The {Llama} 3 {H}erd",
        "author": "Doe, Jane and {Team, AI}",
        "year": "2024",
    }
    assert e["a2024x"].kind == "article" and e["b"].fields == {"note": "x"}


def test_cited_keys_handles_natbib_variants_and_order():
    tex = r"see \cite{a,b} and \citep[p.~3]{c} and \citet*{a} then \cite{ d }"
    assert cited_keys(tex) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("@misc{k, title={x}}\n@misc{k, title={y}}", "duplicate key 'k'"),
        ("@misc{k, title={unclosed}", "unbalanced braces"),
        ("@misc{k, title={x} junk}", "cannot parse field"),
    ],
)
def test_parser_rejects_broken_bibtex_with_location(text, match):
    with pytest.raises(BibError, match=match):
        parse_bibtex(text, "CITATION.bib")


def test_subset_bib_names_a_missing_key():
    with pytest.raises(BibError, match="no entry for cited key.*nope"):
        subset_bib(parse_bibtex("@misc{k, title={x}}"), ["k", "nope"])
