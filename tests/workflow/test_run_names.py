"""`run` in config/config.yaml names results/<run>/: the schema refuses anything but one safe path
component before a single file is written."""

from __future__ import annotations

import pytest

from .smk import snakemake


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(r, marks=pytest.mark.hardening("5", f"`snakemake --config run={r}`"))
        for r in ("..", "a/b", "'a b'", "./x")
    ],
)
def test_unsafe_run_name_is_refused_before_anything_is_written(run, tmp_path):
    proc = snakemake(tmp_path, "--cores", "1", "all", "--config", f"run={run}", check=False)
    assert proc.returncode != 0 and "instance['run']" in proc.stdout + proc.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*") if ".snakemake" not in p.parts)
