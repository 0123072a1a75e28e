"""No code from a checkpoint, and no resume from a damaged one.

A pickle payload whose unpickling would create a marker file is planted in each kind of file a
resume reads: the torch backend's ``torch_state.pt``, the per-rank RNG file, PPO's ``state.pt``
and DeepSpeed's ZeRO model and optimizer files (slow). With the sha256 in ``meta.json`` updated
too (a hostile writer can do that), the resume is refused with one line and exit 2; without, the
checkpoint fails verification, is set aside and the previous one is used (training then ends
bitwise equal to an uninterrupted run, and a torn last line of metrics.jsonl is repaired). The
payload never runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_ppo import new_run, ppo_inputs  # noqa: F401 - the shared session fixture
from test_train_rm import DS_ARGS, DS_TRAIN, cli, clone_run, finish


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(file: Path, marker: Path, fix_hash: bool) -> None:
    buf = io.BytesIO()
    torch.save({"state": Payload(marker)}, buf)
    file.write_bytes(buf.getvalue())
    if fix_hash:
        folder = next(p for p in file.parents if (p / "meta.json").is_file())
        meta = json.loads((folder / "meta.json").read_text())
        meta["files"][str(file.relative_to(folder))] = hashlib.sha256(buf.getvalue()).hexdigest()
        (folder / "meta.json").write_text(json.dumps(meta))
        digest = hashlib.sha256((folder / "meta.json").read_bytes()).hexdigest()
        (folder / "meta.json.sha256").write_text(digest + "\n")


def reopen(run: Path) -> Path:
    """Make a finished run's checkpoints resumable again (as if it had been interrupted)."""
    for complete in run.glob("checkpoints/*/complete.json"):
        complete.unlink()
    return run


def one_line(text: str, *needles: str) -> str:
    lines = [ln for ln in text.splitlines() if all(n in ln for n in needles)]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


# --------------------------------------------------------------------------- train_rm, torch


@pytest.fixture(scope="module")
def rm_run(tiny_run, tiny_cfg, tmp_path_factory):
    """train_rm on 64 pairs: 4 updates, a checkpoint after each of the first 3 (2 and 3 kept)."""
    from paper_repro.stages import train_rm

    cfg = replace(tiny_cfg, rm=replace(tiny_cfg.rm, checkpoint_every=1))
    paths = clone_run(tiny_run, tmp_path_factory.mktemp("rm") / "run", n_train=64, n_heldout=16)
    assert train_rm.run(cfg, paths) == 0
    return cfg, paths


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n, marks=pytest.mark.hardening("1", f"pickle payload in train_rm checkpoint {n}")
        )
        for n in ("torch_state.pt", "rng-rank0.json")
    ],
)
def test_planted_payload_in_a_train_rm_checkpoint_is_refused(rm_run, tmp_path, capsys, name):
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import train_rm

    cfg, src = rm_run
    paths = RunPaths(reopen(Path(shutil.copytree(src.root, tmp_path / "run"))))
    marker = tmp_path / "PWNED"
    plant(paths.checkpoints("train_rm") / "update-000003" / name, marker, fix_hash=True)
    capsys.readouterr()
    assert train_rm.run(cfg, paths) == 2
    line = one_line(capsys.readouterr().err, "train_rm: ", name)
    assert "refused" in line or "not a valid RNG state" in line
    assert not marker.exists()


@pytest.mark.hardening(
    "2", "flipped byte in the newest train_rm checkpoint: set aside, previous one resumed"
)
def test_damaged_checkpoint_is_set_aside_and_the_previous_one_resumes(rm_run, tmp_path, capsys):
    from safetensors.torch import load_file

    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import train_rm

    cfg, src = rm_run
    paths = RunPaths(reopen(Path(shutil.copytree(src.root, tmp_path / "run"))))
    marker = tmp_path / "PWNED"
    plant(paths.checkpoints("train_rm") / "update-000003" / "torch_state.pt", marker, False)
    with open(paths.train_metrics, "a") as fh:  # and a line torn by a crash (or a full disk)
        fh.write('{"update": 3, "lo')
    capsys.readouterr()
    assert train_rm.run(cfg, paths) == 0
    one_line(capsys.readouterr().err, "update-000003 failed verification", "using update-000002")
    assert not marker.exists()
    assert json.loads(paths.train_summary.read_text())["resumed_from_update"] == 2
    lines = paths.train_metrics.read_text().splitlines()  # rewritten from the checkpoint
    assert [json.loads(x)["update"] for x in lines] == [0, 1, 2, 3]
    want = [json.loads(x)["loss"] for x in src.train_metrics.read_text().splitlines()]
    assert [json.loads(x)["loss"] for x in lines] == want
    a, b = load_file(str(src.trained_state)), load_file(str(paths.trained_state))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the uninterrupted run's weights


# --------------------------------------------------------------------------- ppo


@pytest.mark.slow  # the PPO inputs fixture of test_ppo.py
@pytest.mark.hardening("1", "pickle payload in ppo checkpoint state.pt")
def test_planted_payload_in_a_ppo_checkpoint_is_refused(ppo_inputs, tmp_path, capsys):  # noqa: F811
    from test_ppo import run_stage

    overrides = ("ppo.max_steps=3", "ppo.checkpoint_every=1", "ppo.eval_prompts=16")
    paths = new_run(ppo_inputs, tmp_path / "run")
    assert run_stage(paths, *overrides) == 0
    reopen(paths.root)
    marker = tmp_path / "PWNED"
    plant(paths.checkpoints("ppo") / "step-000002" / "state.pt", marker, fix_hash=True)
    capsys.readouterr()
    assert run_stage(paths, *overrides) == 2
    one_line(capsys.readouterr().err, "ppo: ", "state.pt: refused to load")
    assert not marker.exists()


# --------------------------------------------------------------------------- DeepSpeed (slow)


@pytest.mark.slow
@pytest.mark.hardening("1", "pickle payload in DeepSpeed ZeRO-3 checkpoint files")
def test_planted_payload_in_deepspeed_files_is_refused(tiny_run, tmp_path):
    """ZeRO-3 in one process: DeepSpeed reads its files through our weights-only loader, which
    allows exactly the two DeepSpeed classes a ZeRO file holds, nothing else."""
    args = [*DS_ARGS, "rm.backend=deepspeed", "rm.zero_stage=3", "rm.checkpoint_every=1"]
    src = clone_run(tiny_run, tmp_path / "src", n_train=DS_TRAIN, n_heldout=16)
    code, out = finish(cli([*args, "--run-dir", str(src.root)]))
    assert code == 0, out
    newest = sorted(src.checkpoints("train_rm").glob("update-*"))[-1] / "deepspeed"
    kinds = sorted(p.name for p in newest.glob("*_states.pt"))
    assert any("optim_states" in k for k in kinds) and any("model_states" in k for k in kinds)
    for kind in kinds:
        run = reopen(Path(shutil.copytree(src.root, tmp_path / kind)))
        marker = tmp_path / f"PWNED-{kind}"
        plant(run / newest.relative_to(src.root) / kind, marker, fix_hash=True)
        code, out = finish(cli([*args, "--run-dir", str(run)]))
        assert code == 2, out[-3000:]
        one_line(out, "train_rm: ", f"{kind}: refused to load")
        assert not marker.exists()
