"""The report as a document: an ordered list of blocks (headings, paragraphs, lists, tables,
figures) rendered to markdown and to LaTeX (pdflatex + classic BibTeX, print-ready: Type 1 text
fonts, tables at their natural size and never wider than the text, breakable paths in prose).

Prose refers to tables and figures with ``Doc.ref(label)``; both renderers number the floats in
order of appearance, so the markdown says "Table 2" where the LaTeX says ``Table~\ref{...}``,
and a reference to a float the document does not hold is an error, not a "??" in the PDF."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import __version__
from ..config import ReproConfig
from .bibtex import BibEntry
from .tables import Table, latex_escape, to_latex, to_markdown

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


# A reference in prose: only characters that md_to_tex and latex_escape leave alone.
_REF = re.compile(r"@@ref:([a-z]+:[a-z0-9-]+)@@")


@dataclass
class Figure:
    name: str
    caption: str
    width: float = 0.6  # fraction of the text width: a line plot's labels stay >= ~7 pt

    @property
    def label(self) -> str:
        return f"fig:{self.name.replace('_', '-')}"


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

    @staticmethod
    def ref(label: str) -> str:
        """A reference to a table or figure for ``para``: "Table 2" / "Figure 3" once rendered."""
        if not _REF.fullmatch(f"@@ref:{label}@@"):
            raise ValueError(f"bad float label {label!r}")
        return f"@@ref:{label}@@"

    def numbers(self) -> dict[str, str]:
        """{label: "Table N" / "Figure N"}, numbered in order of appearance like LaTeX does."""
        out: dict[str, str] = {}
        counts = {"t": 0, "f": 0}
        for kind, body in self.blocks:
            if kind in counts:
                counts[kind] += 1
                name = "Table" if kind == "t" else "Figure"
                out[body.label] = f"{name} {counts[kind]}"
        return out


def _resolve(text: str, numbers: dict[str, str], tex: bool) -> str:
    def one(m: re.Match) -> str:
        label = m.group(1)
        if label not in numbers:
            raise ValueError(f"the report refers to {label}, which it does not contain")
        kind = numbers[label].split()[0]
        return rf"{kind}~\ref{{{label}}}" if tex else numbers[label]

    return _REF.sub(one, text)


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
    num = doc.numbers()
    for kind, body in doc.blocks:
        if kind == "h":
            out += [f"## {body}", ""]
        elif kind == "p":
            out += [_resolve(body[0], num, tex=False), ""]
        elif kind == "l":
            out += [f"- {_resolve(md, num, tex=False)}" for md, _ in body] + [""]
        elif kind == "t":
            out += [to_markdown(body, number=num[body.label]), ""]
        elif kind == "f":
            cap = f"{num[body.label]}: {body.caption}"
            out += [f"![{cap}](figures/{body.name}.png)", "", f"*{cap}*", ""]
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
        # Let a text page hold more and larger floats (LaTeX's defaults push a third float or a
        # tall table to a later page, far from the paragraph that refers to it).
        r"\setcounter{topnumber}{3}",
        r"\setcounter{bottomnumber}{2}",
        r"\setcounter{totalnumber}{5}",
        r"\renewcommand{\topfraction}{0.9}",
        r"\renewcommand{\bottomfraction}{0.8}",
        r"\renewcommand{\textfraction}{0.07}",
        r"\renewcommand{\floatpagefraction}{0.8}",
        # \floatbarrier: start a new page when floats of the previous section are still waiting,
        # so every float stays in the section that refers to it (the idea of the placeins
        # package, which texlive-latex-recommended lacks).
        r"\makeatletter\newcommand{\floatbarrier}{\ifx\@deferlist\@empty"
        r"\ifx\@currlist\@empty\else\clearpage\fi\else\clearpage\fi}\makeatother",
        rf"\title{{{title}}}",
        rf"\author{{paper-repro {__version__}}}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
        "",
    ]
    num = doc.numbers()
    for kind, body in doc.blocks:
        if kind == "h":
            out += [r"\floatbarrier", rf"\section{{{latex_escape(body)}}}", ""]
        elif kind == "p":
            out += [_resolve(body[1], num, tex=True), ""]
        elif kind == "l":
            items = (rf"\item {_resolve(tex, num, tex=True)}" for _, tex in body)
            out += [r"\begin{itemize}", *items, r"\end{itemize}", ""]
        elif kind == "t":
            out += [to_latex(body)]
        elif kind == "f":
            out += [
                r"\begin{figure}[htbp]",
                r"\centering",
                rf"\includegraphics[width={body.width:g}\linewidth]{{figures/{body.name}.pdf}}",
                rf"\caption{{{latex_escape(body.caption)}}}",
                rf"\label{{{body.label}}}",
                r"\end{figure}",
                "",
            ]
    # Every float is out before the references start: none lands inside the bibliography.
    out += [r"\clearpage", r"\bibliographystyle{plain}", r"\bibliography{references}"]
    out += [r"\end{document}", ""]
    return "\n".join(out)
