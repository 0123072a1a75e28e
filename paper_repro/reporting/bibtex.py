"""A tiny BibTeX reader: enough to split CITATION.bib into entries, check keys, and write the
subset a report cites. Entries are kept verbatim (no re-formatting of fields)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReproError

CITE_RE = re.compile(r"\\cite[tp]?\*?(?:\[[^\]]*\])*\{([^}]*)\}")
_ENTRY_START = re.compile(r"@(\w+)\s*\{\s*([^,\s]+)\s*,")


class BibError(ReproError, ValueError):
    pass


@dataclass(frozen=True)
class BibEntry:
    kind: str  # article, misc, software, ...
    key: str
    fields: dict[str, str]
    text: str  # the entry exactly as written


def _fields(body: str, where: str) -> dict[str, str]:
    """``name = {value}`` / ``name = "value"`` / ``name = 2024`` pairs (braces may nest)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(body):
        m = re.compile(r"\s*,?\s*(\w+)\s*=\s*").match(body, i)
        if not m:
            if body[i:].strip(" \t\n,"):
                raise BibError(f"{where}: cannot parse field near {body[i : i + 40]!r}")
            break
        name, i = m.group(1).lower(), m.end()
        if i < len(body) and body[i] in '{"':
            close = "}" if body[i] == "{" else '"'
            depth, j = 0, i
            while j < len(body):
                ch = body[j]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if (close == "}" and depth == 0 and ch == "}") or (
                    close == '"' and j > i and ch == '"' and depth == 0
                ):
                    break
                j += 1
            else:
                raise BibError(f"{where}: unterminated value of field '{name}'")
            out[name] = body[i + 1 : j]
            i = j + 1
        else:
            m2 = re.compile(r"[^,\s]+").match(body, i)
            if not m2:
                raise BibError(f"{where}: field '{name}' has no value")
            out[name] = m2.group(0)
            i = m2.end()
    return out


def parse_bibtex(text: str, source: str = "<bib>") -> dict[str, BibEntry]:
    """{key: entry}; duplicate keys, unbalanced braces and unreadable fields are errors."""
    entries: dict[str, BibEntry] = {}
    pos = 0
    while (m := _ENTRY_START.search(text, pos)) is not None:
        kind, key = m.group(1).lower(), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        where = f"{source}:{line} (@{kind}{{{key}}})"
        depth, j = 0, text.index("{", m.start())
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        if depth != 0:
            raise BibError(f"{where}: unbalanced braces")
        if key in entries:
            raise BibError(f"{where}: duplicate key '{key}'")
        entries[key] = BibEntry(
            kind, key, _fields(text[m.end() : j], where), text[m.start() : j + 1]
        )
        pos = j + 1
    return entries


def read_bibtex(path: str | Path) -> dict[str, BibEntry]:
    path = Path(path)
    return parse_bibtex(path.read_text(), str(path))


def cited_keys(tex: str) -> list[str]:
    """Keys of every ``\\cite{a,b}`` / ``\\citep`` / ``\\citet`` in order of first use."""
    keys: list[str] = []
    for group in CITE_RE.findall(tex):
        for k in (k.strip() for k in group.split(",")):
            if k and k not in keys:
                keys.append(k)
    return keys


def subset_bib(entries: dict[str, BibEntry], keys: Iterable[str], source: str = "bib") -> str:
    """The entries for ``keys`` in that order; a key missing from ``entries`` is an error."""
    keys = list(keys)
    missing = [k for k in keys if k not in entries]
    if missing:
        raise BibError(f"{source}: no entry for cited key(s) {', '.join(missing)}")
    return "\n\n".join(entries[k].text for k in keys) + "\n"


# Entry types the standard BibTeX styles (plain.bst and its relatives) define; any other type
# (CITATION.bib's @software) draws a "entry type isn't style-file defined" warning.
BIBTEX_TYPES = frozenset(
    "article book booklet conference inbook incollection inproceedings manual mastersthesis "
    "misc phdthesis proceedings techreport unpublished".split()
)


def for_bibtex(entry: BibEntry) -> str:
    """``entry`` as classic BibTeX prints it without warnings: a type the standard styles know
    (else @misc), and the arXiv id in ``howpublished`` (plain.bst ignores ``eprint``)."""
    fields = dict(entry.fields)
    kind = entry.kind if entry.kind in BIBTEX_TYPES else "misc"
    if "eprint" in fields and fields.get("archiveprefix", "").lower() == "arxiv":
        cls = f" [{fields['primaryclass']}]" if "primaryclass" in fields else ""
        fields.setdefault("howpublished", f"arXiv:{fields['eprint']}{cls}")
    if entry.kind == "software" and "version" in fields:
        fields.setdefault("note", "")
        fields["note"] = "; ".join(
            x for x in (f"Software, version {fields['version']}", fields["note"]) if x
        )
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields.items())
    return f"@{kind}{{{entry.key},\n{body}\n}}"


def report_bib(entries: dict[str, BibEntry], keys: Iterable[str], source: str = "bib") -> str:
    """``subset_bib`` for a report compiled with classic BibTeX (``for_bibtex`` per entry)."""
    keys = list(keys)
    subset_bib(entries, keys, source)  # the same missing-key error
    return "\n\n".join(for_bibtex(entries[k]) for k in keys) + "\n"


def find_citation_bib() -> Path:
    """CITATION.bib of the checkout the package runs from (the repo root), or the copy shipped
    as package data."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "CITATION.bib", here.parents[1] / "CITATION.bib"]
    for c in candidates:
        if c.is_file():
            return c
    raise BibError(f"CITATION.bib not found (looked in {', '.join(map(str, candidates))})")
