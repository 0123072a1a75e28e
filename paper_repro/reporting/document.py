"""The report as a document: an ordered list of blocks (headings, paragraphs, lists, tables,
figures) rendered to markdown and to LaTeX (pdflatex + classic BibTeX, print-ready: Type 1 text
fonts, tables never wider than the text, breakable paths in prose)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__
from ..config import ReproConfig
from .bibtex import BibEntry
from .tables import FIT_WIDTH_PREAMBLE, Table, latex_escape, to_latex, to_markdown

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


def _breakable(tex: str, code: bool = False) -> str:
    """Let a line break after / and _ (and - in code, where typewriter fonts never hyphenate):
    paths and model ids in prose are otherwise one long unbreakable word."""
    tex = tex.replace("/", r"/\allowbreak{}").replace(r"\_", r"\_\allowbreak{}")
    return tex.replace("-", r"-\allowbreak{}") if code else tex


def md_to_tex(md: str) -> str:
    """The little markdown the report's prose uses: `code` and **bold**; the rest escaped."""
    out = []
    for i, chunk in enumerate(md.split("`")):
        if i % 2:
            out.append(rf"\texttt{{{_breakable(latex_escape(chunk), code=True)}}}")
            continue
        for j, part in enumerate(chunk.split("**")):
            text = _breakable(latex_escape(part))
            out.append(rf"\textbf{{{text}}}" if j % 2 else text)
    return "".join(out)


def cite_md(*keys: str) -> str:
    return "[" + "; ".join(f"@{k}" for k in keys) + "]"


def cite_tex(*keys: str) -> str:
    return r"~\cite{" + ",".join(keys) + "}"


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
        r"\usepackage{lmodern}",  # Type 1 outline fonts (T1 without it falls back to bitmaps)
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage[margin=2.5cm]{geometry}",
        r"\usepackage{hyperref}",
        FIT_WIDTH_PREAMBLE,
        rf"\title{{{title}}}",
        rf"\author{{paper-repro {__version__}}}",
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
