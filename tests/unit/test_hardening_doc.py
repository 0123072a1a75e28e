"""docs/hardening.md lists exactly the hostile cases the tests run: the table between its
``cases`` markers is generated from the ``@pytest.mark.hardening(item, kind)`` marks of the
collected tests. Regenerate it after adding or removing a case:

    python tests/unit/test_hardening_doc.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "hardening.md"
START, END = "<!-- cases:start (generated) -->\n", "<!-- cases:end -->\n"
ITEMS = {
    "1": "No code from data files",
    "2": "Verified bytes",
    "3": "One writer",
    "4": "Hostile input is counted, never crashes",
    "5": "Configs validated completely",
    "6": "Faults leave nothing half-written; one-line failures",
}


def collected_cases(tmp: Path) -> list[dict[str, str]]:
    out = tmp / "cases.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HARDENING_CASES": str(out)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def render(cases: list[dict[str, str]]) -> str:
    counts = Counter(c["item"] for c in cases)
    lines = [
        "Counts: "
        + "; ".join(f"item {i} ({ITEMS.get(i, '?')}): {n}" for i, n in sorted(counts.items()))
        + ".\n",
        "\n",
        "| item | case | test |\n",
        "|---|---|---|\n",
    ]
    for c in sorted(cases, key=lambda c: c["item"]):  # stable: collection order within an item
        kind = c["kind"].replace("|", "\\|")
        lines.append(f"| {c['item']} | {kind} | `{c['test'].removeprefix('tests/')}` |\n")
    return "".join(lines)


def _split(text: str) -> tuple[str, str, str]:
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    return head, body, tail


def test_doc_table_lists_exactly_the_tested_cases(tmp_path):
    _, body, _ = _split(DOC.read_text())
    want = render(collected_cases(tmp_path))
    assert body == want, "docs/hardening.md is stale: run `python tests/unit/test_hardening_doc.py`"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        head, _, tail = _split(DOC.read_text())
        DOC.write_text(head + START + render(collected_cases(Path(tmp))) + END + tail)
    print(f"wrote {DOC}")
