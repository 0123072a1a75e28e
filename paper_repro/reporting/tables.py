"""Tables as data, rendered by two pure functions: ``to_markdown`` and ``to_latex`` (booktabs).

A ``Table`` holds raw cell values (numbers stay numbers until rendering), so tests compare the
rendered text with the stage JSONs through the same ``format_cell``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MISSING = "n/a"


@dataclass(frozen=True)
class Column:
    header: str
    align: Literal["l", "r", "c"] = "l"
    fmt: str = "{}"  # applied to numbers; e.g. "{:.1f}", "{:+.1f}", "{:,}"


@dataclass(frozen=True)
class Table:
    caption: str
    label: str  # LaTeX label, e.g. "tab:rewardbench"
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    notes: str = ""
    midrules: tuple[int, ...] = field(default=())  # draw a rule before these row indices

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.label}: row {i} has {len(row)} cells, expected {len(self.columns)}"
                )


def format_cell(value: Any, fmt: str = "{}") -> str:
    """None -> n/a, bools -> yes/no, numbers through ``fmt``, anything else as str."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return fmt.format(value)
    return str(value)


def _cells(table: Table) -> list[list[str]]:
    return [
        [format_cell(v, c.fmt) for v, c in zip(row, table.columns, strict=True)]
        for row in table.rows
    ]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table, number: str = "") -> str:
    """A GitHub-flavoured markdown table with the caption (after ``number``, e.g. "Table 2") as a
    bold line above it."""
    align = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        f"**{number}: {table.caption}**" if number else f"**{table.caption}**",
        "",
        "| " + " | ".join(_md_escape(c.header) for c in table.columns) + " |",
        "|" + "|".join(align[c.align] for c in table.columns) + "|",
    ]
    lines += ["| " + " | ".join(_md_escape(x) for x in row) + " |" for row in _cells(table)]
    if table.notes:
        lines += ["", f"*{table.notes}*"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text).replace("Δ", r"$\Delta$")


def to_latex(table: Table) -> str:
    """A booktabs ``table`` float: toprule / midrule / bottomrule, no vertical rules, at its
    natural \\small size. Never scaled down: a table too wide for the text is split or
    transposed where it is built (the compile test fails on any overfull box)."""
    spec = "".join(c.align for c in table.columns)
    out = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{{table.label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(c.header) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(_cells(table)):
        if i in table.midrules:
            out.append(r"\midrule")
        out.append(" & ".join(latex_escape(x) for x in row) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        out.append(rf"\par\smallskip\footnotesize {latex_escape(table.notes)}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in ``text`` as {header: cell} (tests, tooling)."""
    lines: list[str] = []
    for ln in text.splitlines():
        if ln.strip().startswith("|"):
            lines.append(ln.strip())
        elif lines:
            break
    if len(lines) < 2:
        return []

    def split(line: str) -> list[str]:
        cells, cur, prev = [], "", ""
        for ch in line.strip()[1:-1]:
            if ch == "|" and prev != "\\":
                cells.append(cur.strip())
                cur = ""
            else:
                cur += ch
            prev = ch
        cells.append(cur.strip())
        return [c.replace("\\|", "|") for c in cells]

    header = split(lines[0])
    return [dict(zip(header, split(ln), strict=True)) for ln in lines[2:]]


def rows_where(rows: Sequence[dict[str, str]], **match: str) -> dict[str, str]:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"expected one row matching {match}, found {len(found)}")
    return found[0]
