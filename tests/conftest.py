"""Shared pytest fixtures. ``tiny_run`` is the prepared tiny run every integration test builds on.

Append your own fixtures below; keep heavy imports inside fixtures.
"""

from __future__ import annotations

import os

import pytest

# The tiny base is SFT-trained for fewer steps in tests (about 6 s instead of about 30 s on a
# loaded 2-core machine); everything else is the tiny preset unchanged.
TINY_TEST_OVERRIDES = ("model.tiny.sft_steps=60",)


@pytest.fixture(scope="session")
def tiny_cfg():
    from paper_repro.config import load_config

    return load_config("tiny", list(TINY_TEST_OVERRIDES))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_cfg):
    """RunPaths of a tiny-preset run whose download_base, download_data and prepare_data stages
    have run (via their ``run`` functions). Treat it as read-only: it is shared by the session."""
    from paper_repro.paths import RunPaths
    from paper_repro.stages import download_base, download_data, prepare_data

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    paths = RunPaths(tmp_path_factory.mktemp("tiny_run"))
    for stage in (download_base, download_data, prepare_data):
        assert stage.run(tiny_cfg, paths) == 0
    return paths


def pytest_collection_finish(session):
    """With HARDENING_CASES=<file>, write the hardening cases of the collected tests there (JSON)
    for the docs/hardening.md table (tests/unit/test_hardening_doc.py)."""
    import json
    from pathlib import Path

    out = os.environ.get("HARDENING_CASES")
    if out:
        cases = [
            {"item": m.args[0], "kind": m.args[1], "test": item.nodeid.split("[")[0]}
            for item in session.items
            for m in item.iter_markers("hardening")
        ]
        Path(out).write_text(json.dumps(cases))
