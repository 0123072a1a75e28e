"""Stage identity and its uses without training: code versions, the checkpoint protocol (identity,
verification, the last two kept, partial folders), plain-data RNG states, whole-line metrics and
the stage lock."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from paper_repro.provenance import codeversion
from paper_repro.provenance.identity import StageIdentity, content_digest, stage_identity
from paper_repro.provenance.io import write_json
from paper_repro.provenance.manifest import write_manifest
from paper_repro.provenance.paths import RunPaths
from paper_repro.training.checkpoints import CheckpointDir, ResumeError

PACKAGE = codeversion.ROOT


# --------------------------------------------------------------------------- code version


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the package to edit."""
    root = tmp_path / "paper_repro"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def versions(root: Path) -> dict[str, str]:
    from paper_repro.config import STAGES

    return {s: codeversion.code_version(s, root) for s in STAGES}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_code_version_follows_what_a_stage_imports(package):
    before = versions(package)
    assert before == versions(PACKAGE)  # a copy is the same code
    edit(package / "stages" / "eval_rewardbench.py", 'STAGE = "eval_', 'X = 1\nSTAGE = "eval_')
    after = versions(package)
    assert {s for s in before if before[s] != after[s]} == {"eval_rewardbench"}
    edit(package / "reporting" / "tables.py", "from __future__", "X = 1\nfrom __future__")
    assert {s for s in before if before[s] != versions(package)[s]} == {
        "eval_rewardbench",
        "report",
    }


def test_shared_module_changes_every_stage_that_imports_it(package):
    before = versions(package)
    edit(
        package / "training" / "batching.py",
        "from __future__ import annotations",
        "from __future__ import annotations\nX = 1",
    )
    after = versions(package)
    changed = {s for s in before if before[s] != after[s]}
    assert {"train_rm"} <= changed and "report" not in changed and "download_data" not in changed


def test_docstrings_comments_and_formatting_change_nothing(package):
    before = versions(package)
    edit(
        package / "training" / "engine.py",
        '"""The reward-model training loop',
        '"""Edited. The reward-model loop',
    )
    edit(package / "stages" / "ppo.py", "def run(", "# a new comment\n\n\ndef   run(")
    edit(package / "training" / "modeling.py", "import torch", "import torch  # why")
    assert versions(package) == before


def test_function_local_imports_and_package_data_count(package):
    closure = codeversion.import_closure("paper_repro.stages.train_rm", package)
    assert "paper_repro.training.backends" in closure  # imported inside build_backend only
    assert not any(m.startswith("paper_repro.tracking") for m in closure)  # records only
    before = versions(package)
    fixture = package / "fixtures" / "data" / "ppo_prompts.jsonl"
    fixture.write_text(fixture.read_text() + "\n")
    after = versions(package)
    assert {"download_base", "download_data"} <= {s for s in before if before[s] != after[s]}


# --------------------------------------------------------------------------- identity


def ident(**kw) -> StageIdentity:
    base = dict(stage="train_rm", config="c1", code="k1", upstream={"prepare_data": "d1"})
    return StageIdentity(**{**base, **kw})


def test_identity_digest_and_changes_name_the_part():
    a = ident(world="torch x1")
    assert a.digest == StageIdentity.from_json(json.loads(json.dumps(a.to_json()))).digest
    b = ident(config="c2", upstream={"prepare_data": "d2"}, world="deepspeed x2")
    assert b.digest != a.digest
    assert b.changes(a) == ["config", "upstream prepare_data", "world (torch x1 -> deepspeed x2)"]


def test_stage_identity_reads_upstream_manifests(tmp_path, tiny_cfg):
    paths = RunPaths(tmp_path)
    folder = paths.stage_dir("train_rm")
    folder.mkdir(parents=True)
    (folder / "final.safetensors").write_bytes(b"weights")
    write_manifest(paths.manifest("train_rm"), folder, ["final.safetensors"])
    first = stage_identity(tiny_cfg, paths, "export_rm")
    assert first.upstream["train_rm"] == content_digest(paths, "train_rm")
    assert first.upstream["download_base"] is None  # nothing produced yet
    (folder / "final.safetensors").write_bytes(b"other weights")
    write_manifest(paths.manifest("train_rm"), folder, ["final.safetensors"])
    assert stage_identity(tiny_cfg, paths, "export_rm").changes(first) == ["upstream train_rm"]


# --------------------------------------------------------------------------- checkpoints


def save(d: CheckpointDir, index: int, payload: bytes = b"state") -> Path:
    return d.save(
        index,
        {"next": index},
        [json.dumps({"update": i}) for i in range(index)],
        every_rank=lambda tmp: (tmp / "state.bin").write_bytes(payload + bytes([index])),
    )


def test_keeps_the_last_two_and_resumes_from_the_newest(tmp_path):
    d = CheckpointDir(tmp_path / "ckpt", "update", ident())
    for k in (2, 4, 6):
        save(d, k)
    assert [p.name for p in d.candidates()] == ["update-000006", "update-000004"]
    d.prepare()
    assert d.resume_point().name == "update-000006"
    assert d.metrics(d.resume_point())[-1] == '{"update": 5}'


@pytest.mark.hardening("3", "checkpoint meta.json / metrics.jsonl rewritten after verification")
def test_resume_parses_the_bytes_it_verified_not_a_second_read(tmp_path):
    d = CheckpointDir(tmp_path / "ckpt", "update", ident())
    save(d, 2)
    d.prepare()
    folder = d.resume_point()
    verified = dict(d.meta(folder))
    write_json(folder / "meta.json", {**verified, "next_update": 99})  # after the check
    assert d.meta(folder) == verified  # parsed from the hashed bytes, not read again
    (folder / "metrics.jsonl").write_text('{"update": 99}\n')
    with pytest.raises(ResumeError, match="metrics.jsonl: changed after the checkpoint was"):
        d.metrics(folder)


def test_corrupt_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, capsys):
    d = CheckpointDir(tmp_path / "ckpt", "update", ident())
    save(d, 2)
    newest = save(d, 4)
    data = bytearray((newest / "state.bin").read_bytes())
    data[0] ^= 1  # one flipped bit
    (newest / "state.bin").write_bytes(bytes(data))
    d.prepare()
    assert d.resume_point().name == "update-000002"
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "state.bin: sha256 mismatch" in err[0] and "using update-000002" in err[0]
    )
    assert [p.name.split(".")[0] for p in d.root.glob("update-000004.corrupt-*")] == [
        "update-000004"
    ]


@pytest.mark.parametrize("damage", ["meta", "extra file", "missing file"])
def test_any_change_to_a_checkpoint_fails_verification(tmp_path, damage):
    d = CheckpointDir(tmp_path / "ckpt", "update", ident())
    folder = save(d, 2)
    if damage == "meta":
        meta = json.loads((folder / "meta.json").read_text())
        write_json(folder / "meta.json", {**meta, "next": 3})
    elif damage == "extra file":
        (folder / "planted.pt").write_bytes(b"x")
    else:
        (folder / "state.bin").unlink()
    d.prepare()
    assert d.resume_point() is None and not d.candidates()


@pytest.mark.parametrize("change", ["config", "code", "upstream", "world", "completed"])
def test_another_identity_or_a_completed_run_never_resumes(tmp_path, change, capsys):
    root = tmp_path / "ckpt"
    save(CheckpointDir(root, "update", ident(world="torch x1")), 2)
    now = {
        "config": ident(config="c2", world="torch x1"),
        "code": ident(code="k2", world="torch x1"),
        "upstream": ident(upstream={"prepare_data": "d2"}, world="torch x1"),
        "world": ident(world="deepspeed x2"),
        "completed": ident(world="torch x1"),
    }[change]
    if change == "completed":
        CheckpointDir(root, "update", now).complete()
    d = CheckpointDir(root, "update", now)
    d.prepare()
    assert d.resume_point() is None
    (aside,) = tmp_path.glob("ckpt.*")
    kind = "completed" if change == "completed" else "superseded"
    assert aside.name.startswith(f"ckpt.{kind}-") and aside.name.endswith(
        ident(world="torch x1").digest
    )
    assert (aside / "update-000002" / "meta.json").is_file()  # kept, not deleted
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert aside.name in line and "starting from 0" in line
    if change != "completed":
        assert f"({now.changes(ident(world='torch x1'))[0]}" in line


def test_partial_folders_are_removed_on_failure_and_on_the_next_start(tmp_path):
    d = CheckpointDir(tmp_path / "ckpt", "update", ident())
    save(d, 2)

    def fail(tmp: Path) -> None:
        (tmp / "half").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        d.save(4, {}, [], every_rank=fail)
    assert not list(d.root.glob(".tmp-*"))
    (d.root / ".tmp-update-000009").mkdir()  # a kill during a save
    d.prepare()
    assert not list(d.root.glob(".tmp-*")) and d.resume_point().name == "update-000002"


# --------------------------------------------------------------------------- plain data


def test_rng_state_is_plain_json_and_restores_every_generator():
    from paper_repro.training.runstate import rng_state, set_rng_state

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = json.loads(json.dumps(rng_state()))
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(saved)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1])
    assert expect[2] == got[2]


@pytest.mark.hardening("6", "metrics append fails mid-line: no torn line")
def test_a_failed_append_leaves_no_torn_line(tmp_path, monkeypatch):
    from paper_repro.training import runstate

    path = tmp_path / "metrics.jsonl"
    runstate.append_line(path, '{"update": 0}')
    real = os.write

    def disk_full(fd, data):
        real(fd, data[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runstate.os, "write", disk_full)
    with pytest.raises(OSError):
        runstate.append_line(path, '{"update": 1, "loss": 0.5}')
    assert path.read_text() == '{"update": 0}\n'


# --------------------------------------------------------------------------- one writer

HOLD = textwrap.dedent(
    """
    import sys, time
    from paper_repro.provenance.lock import stage_lock
    from paper_repro.provenance.paths import RunPaths
    with stage_lock(RunPaths(sys.argv[1]), "train_rm"):
        print("held", flush=True)
        time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path``'s train_rm folder."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.hardening(
    "3", "two writers on one stage folder: the second is refused, naming PID and host"
)
def test_second_writer_exits_2_naming_the_holder(tmp_path, holder):
    from paper_repro.provenance.lock import StageBusy, stage_lock

    with pytest.raises(StageBusy) as err, stage_lock(RunPaths(tmp_path), "train_rm"):
        pass
    msg = str(err.value)
    assert f"PID {holder.pid} on host {socket.gethostname()}" in msg and "\n" not in msg
    holder.kill()
    holder.wait()
    with stage_lock(RunPaths(tmp_path), "train_rm"):  # the kernel dropped the dead holder's lock
        pass


@pytest.mark.hardening(
    "3", "a second `paper-repro train-rm` on a held run folder: exit 2, one line"
)
def test_a_second_stage_process_exits_2_naming_the_holder(tmp_path, holder):
    """The real CLI against a held stage folder: one line, exit 2, nothing else run."""
    proc = subprocess.run(
        [sys.executable, "-m", "paper_repro.cli", "train-rm", "tiny", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert line.startswith("paper-repro train-rm: ") and f"in use by PID {holder.pid}" in line
    assert not (tmp_path / "train_rm" / "summary.json").exists()


@pytest.mark.hardening("3", "SIGINT checkpoints like SIGTERM")
def test_stop_flag_takes_sigint_like_sigterm_and_a_second_one_stops_at_once():
    import signal

    from paper_repro.training.runstate import StopFlag

    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested and flag.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.uninstall()


@pytest.mark.hardening("3", "a .lock that is a symlink: refused in one line, its target untouched")
def test_a_symlinked_lock_is_never_followed(tmp_path, capsys, monkeypatch):
    from paper_repro.cli.commands import main

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    (run / "train_rm").mkdir(parents=True)
    (run / "train_rm" / ".lock").symlink_to(victim)
    monkeypatch.chdir(tmp_path)
    assert main(["train-rm", "tiny", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"paper-repro train-rm: {run / 'train_rm' / '.lock'}: is a symbolic link (to {victim}); "
        "a stage lock is never followed, remove the link"
    ]
    assert victim.read_text() == "keep me\n"


@pytest.mark.hardening("2", "resume under another CPU thread count: another identity, from 0")
def test_thread_count_is_part_of_a_trainers_identity(tmp_path, tiny_cfg, capsys):
    paths = RunPaths(tmp_path / "run")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = stage_identity(tiny_cfg, paths, "train_rm")
        two_eval = stage_identity(tiny_cfg, paths, "eval_rewardbench")
        torch.set_num_threads(1)
        one = stage_identity(tiny_cfg, paths, "train_rm")
        assert stage_identity(tiny_cfg, paths, "eval_rewardbench") == two_eval  # not a trainer
    finally:
        torch.set_num_threads(threads)
    assert f"torch {torch.__version__}, 2 threads" in two.runtime
    (change,) = one.changes(two)
    assert change.startswith("runtime (torch") and "2 threads" in change and "1 threads" in change
    save(CheckpointDir(tmp_path / "ckpt", "update", two), 2)
    d = CheckpointDir(tmp_path / "ckpt", "update", one)
    d.prepare()
    assert d.resume_point() is None  # never a silently different continuation
    assert "(runtime (torch" in capsys.readouterr().err
