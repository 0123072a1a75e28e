"""Faults leave nothing half-written and every user-facing failure is one line, exit 2: a full
disk (a real 1 MiB tmpfs), credentials in the tracking URI never printed or recorded, tracebacks
only on request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paper_repro.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        timeout=600,
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root or CAP_SYS_ADMIN: skipped with the reason otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.hardening("6", "disk full while download_data copies a file (1 MiB tmpfs)")
def test_disk_full_is_one_line_and_leaves_no_partial_file(small_disk, tmp_path):
    run = small_disk / "run"
    proc = cli("download-data", "tiny", "--run-dir", str(run), cwd=tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    target = run / "download_data" / "preference.jsonl"  # 1.1 MB: cannot fit
    assert err[-1].startswith(
        f"paper-repro download-data: no space left on device writing {target}"
    )
    assert "free there)" in err[-1]
    leftovers = [p.name for p in (run / "download_data").iterdir()]
    assert "preference.jsonl" not in leftovers and not [n for n in leftovers if n.endswith(".tmp")]


@pytest.mark.hardening("6", "password in the tracking URI: redacted in logs and MLflow records")
def test_tracking_uri_credentials_never_printed_or_recorded(tmp_path):
    secret = "s3cretPassw0rd"
    run = tmp_path / "run"
    proc = cli(
        "download-data",
        "tiny",
        f"tracking.uri=http://alice:{secret}@127.0.0.1:9",  # nothing listens: MLflow errors
        "--run-dir",
        str(run),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "unavailable" in out and "http://***@127.0.0.1:9" in out  # the error is still useful
    assert secret not in out and "alice" not in out
    for f in run.rglob("*"):  # buffered MLflow params, run-id files, manifests
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_redaction_covers_any_uri_and_env_secrets(monkeypatch):
    from paper_repro.tracking.redact import redact

    monkeypatch.setenv("WANDB_API_KEY", "k" * 12)
    text = "x https://u:p@ss@h.org/a?b=c@d y postgresql://bob@db:5432/x z sqlite:///a@b " + "k" * 12
    assert redact(text) == (
        "x https://***@h.org/a?b=c@d y postgresql://***@db:5432/x z sqlite:///a@b ***"
    )


def test_traceback_only_on_request(tmp_path):
    args = ("prepare-data", "tiny", "--run-dir", str(tmp_path / "empty"))
    quiet = cli(*args, cwd=tmp_path)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    loud = cli(*args, cwd=tmp_path, PAPER_REPRO_TRACEBACK="1")
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ManifestError" in loud.stderr
