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
    prefix = f"paper-repro download-data: no space left on device writing {run / 'download_data'}/"
    assert err[-1].startswith(prefix)  # the fixture files (MBs) cannot all fit
    assert "free there)" in err[-1]
    target = err[-1].removeprefix(prefix).split(" ", 1)[0]
    leftovers = [p.name for p in (run / "download_data").iterdir()]
    assert target not in leftovers and not [n for n in leftovers if n.endswith(".tmp")]


def _torch_writer(n: int):
    import torch

    return lambda d: torch.save({"w": torch.zeros(n)}, d / "state.pt")


def _safetensors_writer(n: int):
    import torch
    from safetensors.torch import save_file

    return lambda d: save_file({"w": torch.zeros(n)}, str(d / "model.safetensors"))


def _plain_writer(n: int):
    return lambda d: (d / "rng.bin").write_bytes(bytes(4 * n))


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param(w, marks=pytest.mark.hardening("6", f"disk full during a checkpoint ({k})"))
        for k, w in (
            ("torch.save", _torch_writer),
            ("safetensors", _safetensors_writer),
            ("plain file", _plain_writer),
        )
    ],
)
def test_disk_full_during_a_checkpoint_keeps_the_previous_one(small_disk, writer):
    """A checkpoint that does not fit (a real 1 MiB tmpfs): one line naming the checkpoint, the
    previous one and the free space, a ReproError (exit 2 in the CLI), no partial folder, and the
    previous checkpoint still verifies and is the resume point. torch.save reports the full disk
    as an opaque RuntimeError ("unexpected pos"), safetensors as its own error type."""
    from paper_repro.errors import ReproError
    from paper_repro.provenance.identity import StageIdentity
    from paper_repro.training.checkpoints import CheckpointDir, CheckpointSpaceError

    ck = CheckpointDir(small_disk / "ckpt", "update", StageIdentity("train_rm", "c", "k"))
    ck.prepare()
    first = ck.save(1, {"next": 1}, ['{"loss": 1}'], rank_zero=writer(1000))
    with pytest.raises(CheckpointSpaceError) as exc:
        ck.save(2, {"next": 2}, ['{"loss": 1}'], rank_zero=writer(1 << 19))  # 2 MiB
    msg = str(exc.value)
    assert isinstance(exc.value, ReproError) and "\n" not in msg
    assert msg.startswith(
        f"no space left on device writing checkpoint {small_disk}/ckpt/update-000002"
    )
    assert f"the previous checkpoint {first} is intact" in msg and "free there" in msg
    assert not list((small_disk / "ckpt").glob(".tmp-*"))
    assert ck.resume_point() == first


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


@pytest.mark.hardening("6", "token in the tracking URI's query string: redacted in logs and files")
def test_tracking_uri_query_token_never_printed_or_recorded(tmp_path):
    secret = "qTok3nS3cret"
    run = tmp_path / "run"
    proc = cli(
        "download-data",
        "tiny",
        f"tracking.uri=http://127.0.0.1:9/mlflow?access_token={secret}&ws=1",
        "--run-dir",
        str(run),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "unavailable" in out and "access_token=***&ws=1" in out
    assert secret not in out
    for f in run.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_redaction_covers_any_uri_and_env_secrets(monkeypatch):
    from paper_repro.tracking.redact import redact

    monkeypatch.setenv("WANDB_API_KEY", "k" * 12)
    text = "x https://u:p@ss@h.org/a?b=c@d y postgresql://bob@db:5432/x z sqlite:///a@b " + "k" * 12
    assert redact(text) == (
        "x https://***@h.org/a?b=c@d y postgresql://***@db:5432/x z sqlite:///a@b ***"
    )
    signed = "https://h/a?X-Amz-Signature=abc&n=1;password=pw http://h/?token=t#frag"
    assert (
        redact(signed)
        == "https://h/a?X-Amz-Signature=***&n=1;password=*** http://h/?token=***#frag"
    )


def test_traceback_only_on_request(tmp_path):
    args = ("prepare-data", "tiny", "--run-dir", str(tmp_path / "empty"))
    quiet = cli(*args, cwd=tmp_path)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    loud = cli(*args, cwd=tmp_path, PAPER_REPRO_TRACEBACK="1")
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ManifestError" in loud.stderr


@pytest.mark.hardening("6", "environment changed by another thread while secrets are read")
def test_secret_values_survive_a_thread_changing_the_environment(monkeypatch):
    """MLflow threads set and unset variables while stages redact; reading the environment then
    raced (a KeyError for a variable deleted between listing and reading; about 50 of 3,000
    reads here before the fix). A tiny switch interval makes the race frequent."""
    import threading

    from paper_repro.tracking.redact import secret_values

    monkeypatch.setenv("HF_TOKEN", "hf_steadyTokenValue")
    names = [f"PAPER_REPRO_CHURN_{i}" for i in range(50)]
    stop, errors = threading.Event(), []

    def churn() -> None:
        i = 0
        while not stop.is_set():
            os.environ[names[i % 50]] = "x"
            os.environ.pop(names[(i + 25) % 50], None)
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(3000):
            try:
                assert "hf_steadyTokenValue" in secret_values()
            except KeyError as exc:
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
        for n in names:
            os.environ.pop(n, None)
    assert not errors, f"{len(errors)} reads failed, first {errors[0]!r}"
