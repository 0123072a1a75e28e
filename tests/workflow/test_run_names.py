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


@pytest.mark.parametrize(
    ("config", "words"),
    [
        pytest.param(
            c,
            w,
            marks=pytest.mark.hardening("5", f"`snakemake --config {c}`"),
        )
        for c, w in (
            ('overrides=["preset=../../escaped"]', "config error at 'preset'"),
            ("tracking_uri='http://a b'", "instance['tracking_uri']"),
        )
    ],
)
def test_bad_workflow_config_is_refused_before_anything_is_written(config, words, tmp_path):
    """A preset name is a folder name under results/ (no path escape through an override), and
    the tracking URI, exported to every job's shell, has no whitespace."""
    proc = snakemake(tmp_path, "--cores", "1", "all", "--config", config, check=False)
    assert proc.returncode != 0 and words in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not any(p.is_file() for p in tmp_path.rglob("*") if ".snakemake" not in p.parts)
    assert not (tmp_path.parent / "escaped").exists()
