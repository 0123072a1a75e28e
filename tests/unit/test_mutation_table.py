"""bench/mutations.toml stays applicable: every original snippet occurs exactly once in its file
and every listed test exists, so a refactor that moves a faithful choice fails here, in the
default suite, and not only in CI's `make mutation`."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_mutation", ROOT / "bench" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


bench = load_bench()
TABLE = bench.load_table()


@pytest.mark.parametrize("m", TABLE, ids=[m.name for m in TABLE])
def test_mutation_applies_once_and_names_existing_tests(m):
    assert bench.stale_reason(m, ROOT) is None
    assert m.undoes and m.tests
    for node in m.tests:
        path, _, name = node.partition("::")
        assert (ROOT / path).is_file(), node
        if name:
            func = re.sub(r"\[.*\]$", "", name)
            assert re.search(rf"^def {re.escape(func)}\(", (ROOT / path).read_text(), re.M), node


def test_a_stale_entry_is_reported(tmp_path):
    m = TABLE[0]
    (tmp_path / m.file).parent.mkdir(parents=True)
    (tmp_path / m.file).write_text(m.original + "\n" + m.original)
    assert "occurs 2 times" in bench.stale_reason(m, tmp_path)
    (tmp_path / m.file).write_text("")
    assert "occurs 0 times" in bench.stale_reason(m, tmp_path)
