"""Verified bytes: each stage checks the manifests of the upstream outputs it reads before use; a
corrupt one is refused in one line (exit 2), moved to quarantine with its manifest so the DAG
recreates it, and the message names the command. Also: missing inputs, corrupt manifests, the
size + mtime fast path and what it does not catch."""

from __future__ import annotations

import os
import shutil

import pytest
from manifests import remanifest

from paper_repro.cli import main
from paper_repro.integrity import manifest_root, verify_inputs
from paper_repro.manifest import ChecksumError, ManifestError
from paper_repro.paths import RunPaths
from paper_repro.stages import UPSTREAM

TINY = ["model.tiny.sft_steps=60"]  # = tests/conftest.py TINY_TEST_OVERRIDES


@pytest.fixture(scope="module")
def full_run(tiny_run, tmp_path_factory):
    """The prepared tiny run plus an export (the base with a random head) and its manifest."""
    from paper_repro.data import load_tokenizer
    from paper_repro.modeling import load_reward_model_from_base

    root = tmp_path_factory.mktemp("integrity") / "run"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    paths = RunPaths(root)
    model = load_reward_model_from_base(paths.base_model, pad_token_id=511, init_std=1.0, seed=0)
    model.save_pretrained(paths.rm_model, safe_serialization=True)
    load_tokenizer(paths.base_model).save_pretrained(paths.rm_model)
    remanifest(paths, "export_rm", all_files=True)
    return paths


def flip_byte(path, offset=200):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 4])


def swap_rows(path):
    """The same rows in another order: same count, same size, other bytes (a swapped file)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.take(list(range(len(table)))[::-1]), path)


CORRUPTIONS = [  # (stage that must refuse, upstream stage, file in its manifest root, damage)
    ("prepare_data", "download_base", "model.safetensors", flip_byte),
    ("prepare_data", "download_data", "preference.jsonl", truncate),
    ("train_rm", "download_base", "model.safetensors", flip_byte),
    ("train_rm", "prepare_data", "train.parquet", swap_rows),
    ("export_rm", "prepare_data", "heldout.parquet", flip_byte),
    ("eval_rewardbench", "export_rm", "model.safetensors", flip_byte),
    ("eval_rewardbench", "download_data", "rewardbench.jsonl", truncate),
    ("ppo", "export_rm", "model.safetensors", flip_byte),
    ("report", "prepare_data", "data_report.json", truncate),
]


@pytest.mark.parametrize(
    ("stage", "upstream", "name", "damage"),
    [
        pytest.param(
            *c,
            id=f"{c[0]}-{c[2]}",
            marks=pytest.mark.hardening(
                "2", f"{c[3].__name__.replace('_', ' ')} {c[1]}/{c[2]}, refused by {c[0]}"
            ),
        )
        for c in CORRUPTIONS
    ],
)
def test_corrupt_upstream_is_refused_and_quarantined(
    stage, upstream, name, damage, full_run, tmp_path, capsys, monkeypatch
):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    bad = manifest_root(paths, upstream) / name
    damage(bad)
    monkeypatch.chdir(tmp_path)
    code = main([stage.replace("_", "-"), "tiny", *TINY, "--run-dir", str(root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    msg = err[0]
    assert msg.startswith(f"paper-repro {stage.replace('_', '-')}: checksum mismatch in")
    assert f"{name} expected sha256:" in msg and f"{stage} will not use it" in msg
    assert f"`paper-repro {upstream.replace('_', '-')} CONFIG --run-dir {root}`" in msg
    # Moved aside with its stage's manifest (a rule output: the stage is incomplete now).
    (moved,) = (root / "quarantine").iterdir()
    assert (moved / bad.relative_to(root)).is_file() and not bad.exists()
    assert (moved / upstream / "manifest.json").is_file() and not paths.manifest(upstream).exists()
    with pytest.raises(ManifestError, match="moved to quarantine/ after a failed check"):
        verify_inputs(paths, stage)


@pytest.mark.hardening("2", "corrupt file seen by rank 1 of a multi-rank job: refused, not moved")
def test_only_rank_zero_moves_files(full_run, tmp_path, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    flip_byte(paths.prepared("train"))
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ChecksumError, match="left in place"):
        verify_inputs(paths, "train_rm")
    assert paths.prepared("train").is_file() and not (root / "quarantine").exists()


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param(s, marks=pytest.mark.hardening("6", f"{s} on an empty run folder"))
        for s in UPSTREAM
        if UPSTREAM[s]
    ],
)
def test_missing_inputs_are_one_line_naming_the_file(stage, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([stage.replace("_", "-"), "tiny", "--run-dir", str(tmp_path / "empty")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    first = UPSTREAM[stage][0]
    assert f"{tmp_path / 'empty' / first / 'manifest.json'}: missing" in err[0]


@pytest.mark.hardening("6", "corrupt manifest.json (not JSON): one line naming it")
def test_corrupt_manifest_names_the_file(full_run, tmp_path, capsys, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    paths.manifest("prepare_data").write_text('{"files": {')
    monkeypatch.chdir(tmp_path)
    assert main(["train-rm", "tiny", *TINY, "--run-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"paper-repro train-rm: {paths.manifest('prepare_data')}: not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1 column 12)"
    ]


@pytest.mark.hardening("2", "fast path: unchanged size + mtime is not re-read; any other is")
def test_fast_path_reads_only_changed_files(full_run, tmp_path, monkeypatch):
    from paper_repro import manifest

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    verify_inputs(paths, "eval_rewardbench")
    assert hashed == []  # three manifests, nothing read
    os.utime(paths.prepared("train"))  # touched: same bytes, new mtime -> re-hashed, accepted
    verify_inputs(paths, "train_rm")
    assert hashed == ["train.parquet"]


@pytest.mark.hardening("2", "fast path limit: same size, restored mtime; caught by a full check")
def test_fast_path_limit_is_what_the_docs_say(full_run, tmp_path, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    target = paths.prepared("train")
    st = target.stat()
    flip_byte(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -d` would do
    verify_inputs(paths, "train_rm")  # not caught: the documented limit of the fast path
    monkeypatch.setenv("PAPER_REPRO_FULL_VERIFY", "1")
    with pytest.raises(ChecksumError, match="train.parquet"):
        verify_inputs(paths, "train_rm")
