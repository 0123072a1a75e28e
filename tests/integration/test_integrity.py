"""Verified bytes: each stage checks the manifests of the upstream outputs it reads before use; a
corrupt one is refused in one line (exit 2), moved to quarantine with its manifest so the DAG
recreates it, and the message names the command. Also: missing inputs, corrupt manifests, the
size + mtime fast path and what it does not catch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from manifests import remanifest

from paper_repro.cli.commands import main
from paper_repro.provenance.integrity import check_manifest, manifest_root, verify_inputs
from paper_repro.provenance.manifest import (
    ChecksumError,
    ManifestError,
    verify_manifest,
    write_manifest,
)
from paper_repro.provenance.paths import RunPaths
from paper_repro.stages import UPSTREAM

TINY = ["model.tiny.sft_steps=60", "rm.epochs=2"]  # = tests/conftest.py TINY_TEST_OVERRIDES


@pytest.fixture(scope="module")
def full_run(tiny_run, tmp_path_factory):
    """The prepared tiny run plus an export (the base with a random head) and its manifest."""
    from paper_repro.data import load_tokenizer
    from paper_repro.training.modeling import load_reward_model_from_base

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


@pytest.mark.hardening("2", "fast path for weights only: every other file is hashed in full")
def test_fast_path_is_only_for_weights(full_run, tmp_path, monkeypatch):
    from paper_repro.provenance import manifest

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    manifests = verify_inputs(paths, "eval_rewardbench")
    listed = sorted(n for m in manifests.values() for n in m["files"])
    assert sorted(hashed) == sorted(n for n in listed if not n.endswith(".safetensors"))
    assert "model.safetensors" in listed  # hashed while eval_rewardbench loads it instead


@pytest.mark.hardening("2", "one byte changed in prepare_data/train.parquet, size and mtime kept")
def test_same_size_restored_mtime_is_caught_for_every_other_file(full_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    target = paths.prepared("train")
    st = target.stat()
    flip_byte(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -d` would do
    with pytest.raises(ChecksumError, match="train.parquet"):
        verify_inputs(paths, "train_rm")


def same_size_flip(path, offset=-200):
    st = path.stat()
    flip_byte(path, offset)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


WEIGHTS_IN_PLACE = [  # (stage that loads the weights, upstream stage)
    ("train_rm", "download_base"),
    ("eval_rewardbench", "export_rm"),
    ("ppo", "export_rm"),
]


@pytest.mark.parametrize(
    ("stage", "upstream"),
    [
        pytest.param(
            *c,
            id=c[0],
            marks=pytest.mark.hardening(
                "2",
                f"one byte changed in {c[1]}/model.safetensors, size and mtime kept: "
                f"refused by {c[0]} while loading",
            ),
        )
        for c in WEIGHTS_IN_PLACE
    ],
)
def test_weights_changed_in_place_are_refused_while_loading(
    stage, upstream, full_run, tmp_path, capsys, monkeypatch
):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    bad = manifest_root(paths, upstream) / "model.safetensors"
    same_size_flip(bad)
    verify_inputs(paths, stage)  # the start-up check trusts the weights' size + mtime ...
    monkeypatch.chdir(tmp_path)
    code = main([stage.replace("_", "-"), "tiny", *TINY, "--run-dir", str(root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err  # ... the load does not
    assert "model.safetensors expected sha256:" in err[0] and f"{stage} will not use it" in err[0]
    (moved,) = (root / "quarantine").iterdir()
    assert (moved / bad.relative_to(root)).is_file() and not paths.manifest(upstream).exists()
    assert not paths.identity(stage).exists()


@pytest.mark.hardening("2", "eval_rewardbench/scores.json 100.0 -> 20.0, size and mtime kept")
def test_changed_score_is_refused_by_the_report(full_run, tmp_path):
    from paper_repro.provenance.io import write_json
    from paper_repro.provenance.manifest import write_manifest

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    scores = paths.eval_scores
    write_json(scores, {"score": 100.0})
    write_manifest(paths.manifest("eval_rewardbench"), scores.parent, [scores.name])
    st = scores.stat()
    scores.write_bytes(scores.read_bytes().replace(b"100.0", b" 20.0"))
    os.utime(scores, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ChecksumError, match="scores.json expected sha256:.*report will not use"):
        verify_inputs(paths, "report", ("eval_rewardbench",))
    assert not scores.exists()  # quarantined: the next snakemake run scores again


@pytest.mark.hardening("2", "special_tokens_map.json dropped into download_base/model")
def test_unlisted_file_in_a_model_folder_is_refused(full_run, tmp_path, capsys, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    dropped = paths.base_model / "special_tokens_map.json"
    dropped.write_text('{"bos_token": "</s>", "eos_token": "<s>"}')
    monkeypatch.chdir(tmp_path)
    assert main(["prepare-data", "tiny", *TINY, "--run-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"paper-repro prepare-data: {dropped}: not listed in {paths.base_manifest}"
    ), err
    assert not (root / "quarantine").exists()  # nothing listed is wrong: nothing moved


@pytest.mark.hardening("2", "stale download_data/preference_heldout.jsonl after a switch to local")
def test_stale_heldout_file_never_replaces_the_carve_out(tiny_cfg, full_run, tmp_path):
    from paper_repro.config import load_config
    from paper_repro.fixtures.tiny import FIXTURE_DIR
    from paper_repro.provenance.io import read_json
    from paper_repro.stages import download_data, prepare_data

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    stale = paths.raw_data("preference_heldout")
    assert stale.is_file()  # the fixture run's own held-out split
    files = {"preference": "preference_train.jsonl", "rewardbench": "rewardbench_filtered.jsonl",
             "ppo_prompts": "ppo_prompts.jsonl"}  # fmt: skip
    local = load_config(
        "tiny",
        [*TINY, "data.source=local"]
        + [f"data.{n}.local_path={FIXTURE_DIR / f}" for n, f in files.items()],
    )
    assert download_data.run(local, paths) == 0
    assert not stale.exists()  # download_data removes the earlier source's file ...
    shutil.copy2(FIXTURE_DIR / "preference_heldout.jsonl", stale)  # ... and if it comes back:
    assert prepare_data.run(local, paths) == 0
    held = read_json(paths.data_report)["heldout"]
    assert held["source"] == f"seeded carve-out ({local.data.heldout_fraction:g})", held


@pytest.mark.hardening("3", "train-rm started while prepare_data runs: one line naming it, exit 2")
def test_a_consumer_of_a_running_stage_names_it_and_moves_nothing(
    full_run, tmp_path, capsys, monkeypatch
):
    from paper_repro.provenance.lock import stage_lock

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    flip_byte(paths.prepared("train"))  # e.g. prepare_data rewriting it right now
    monkeypatch.chdir(tmp_path)
    with stage_lock(paths, "prepare_data"):
        assert main(["train-rm", "tiny", *TINY, "--run-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"paper-repro train-rm: prepare_data is running (PID {os.getpid()} on host"
    ), err
    assert paths.prepared("train").is_file() and paths.manifest("prepare_data").is_file()
    assert not (root / "quarantine").exists()


@pytest.mark.hardening("3", "quarantine never moves the files of a stage whose lock is held")
def test_quarantine_leaves_a_running_stage_alone(full_run, tmp_path):
    """A stage that starts after its consumer's check and before the quarantine: nothing moves."""
    from paper_repro.provenance.integrity import refused
    from paper_repro.provenance.lock import stage_lock

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    flip_byte(paths.prepared("train"))
    with pytest.raises(ChecksumError) as exc:
        check_manifest(paths, "prepare_data")
    with stage_lock(paths, "prepare_data"):
        err = refused(paths, "train_rm", "prepare_data", exc.value)
    assert "left in place (prepare_data is running: PID" in str(err)
    assert paths.prepared("train").is_file() and paths.manifest("prepare_data").is_file()
    assert not (root / "quarantine").exists()


def model_folders(paths: RunPaths) -> dict[str, tuple[Path, Path]]:
    """Every verified model folder of a run: {name: (folder, its manifest)}; ppo/policy and
    reference_model/model made here from the export (any HF folder will do)."""
    policy = paths.ppo_policy
    if not policy.is_dir():
        shutil.copytree(paths.rm_model, policy)
        remanifest(paths, "ppo", all_files=True)
        shutil.copytree(paths.rm_model, paths.reference_model)
        write_manifest(paths.reference_model_manifest, paths.reference_model)
    return {
        "download_base/model": (paths.base_model, paths.base_manifest),
        "export_rm/model": (paths.rm_model, paths.manifest("export_rm")),
        "ppo/policy": (policy, paths.manifest("ppo")),
        "reference_model/model": (paths.reference_model, paths.reference_model_manifest),
    }


def stage_check(paths: RunPaths, name: str) -> None:
    """What the stage that reads model folder ``name`` checks before loading it."""
    if name == "reference_model/model":  # eval_downstream and the stand-in's reuse
        verify_manifest(paths.reference_model, paths.reference_model_manifest, model=True)
    else:
        check_manifest(paths, name.split("/")[0])


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n, marks=pytest.mark.hardening("2", f"special_tokens_map.json dropped into {n}")
        )
        for n in ("download_base/model", "export_rm/model", "ppo/policy", "reference_model/model")
    ],
)
def test_an_unlisted_file_in_each_verified_model_folder_is_refused_by_name(
    full_run, tmp_path, name
):
    from paper_repro.provenance.manifest import UnlistedFileError
    from paper_repro.provenance.verified import checked_copy, load_weights

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    folder, manifest = model_folders(paths)[name]
    stage_check(paths, name)  # as made: accepted
    dropped = folder / "special_tokens_map.json"
    dropped.write_text('{"bos_token": "</s>", "eos_token": "<s>"}')
    want = f"{dropped}: not listed in {manifest}"
    with pytest.raises(UnlistedFileError, match=want):
        stage_check(paths, name)
    with pytest.raises(UnlistedFileError, match=want):  # and where its weights are loaded
        load_weights(folder)
    with pytest.raises(UnlistedFileError, match=want), checked_copy(folder):
        pass
    assert not (root / "quarantine").exists()


@pytest.mark.hardening("2", "export_rm/verification.json: one byte changed (size, mtime kept)")
def test_export_verification_is_verified_where_the_report_reads_it(full_run, tmp_path):
    """verification.json lies beside export_rm's model folder (its manifest root): the manifest
    lists it under ``records``; verify_inputs hashes it in full and the reader parses the bytes it
    hashed, so a byte changed after the check is refused too."""
    from paper_repro.provenance.integrity import RECORDS, UnlistedFileError, read_record
    from paper_repro.provenance.io import read_json, write_json

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    ver = paths.export_verification
    digest = write_json(ver, {"files": {"model.safetensors": "a" * 64}, "verify_pairs": 10})
    with pytest.raises(UnlistedFileError, match="verification.json: not listed in"):
        read_record(paths, "export_rm", ver)  # a file no manifest lists is never read
    manifest = read_json(paths.manifest("export_rm"))
    write_json(paths.manifest("export_rm"), {**manifest, RECORDS: {ver.name: digest}})
    assert read_record(paths, "export_rm", ver)["verify_pairs"] == 10
    verify_inputs(paths, "report", ("export_rm",))

    st = ver.stat()
    ver.write_bytes(ver.read_bytes().replace(b'"verify_pairs": 10', b'"verify_pairs": 90'))
    os.utime(ver, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ChecksumError, match="verification.json expected sha256"):
        read_record(paths, "export_rm", ver)  # changed after the check: refused while read
    with pytest.raises(ChecksumError, match="verification.json expected sha256.*report will not"):
        verify_inputs(paths, "report", ("export_rm",))
    assert not paths.manifest("export_rm").exists()  # quarantined: snakemake reruns export_rm


def _change_kept_stat(path, old: bytes, new: bytes) -> None:
    st = path.stat()
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.hardening("2", f"byte changed after the check: {c}"))
        for c in (
            "tokenizer_config.json",
            "config.json",
            "train.parquet",
            "summary.json",
            "preference.jsonl",
        )
    ],
)
def test_parsed_files_are_the_bytes_their_manifest_lists(full_run, tmp_path, case):
    """A stage parses a non-weight file from bytes checked against its manifest as they are read
    (a private copy for transformers' loaders): one byte changed after ``verify_inputs`` (size and
    mtime kept) is refused where it is parsed, never used."""
    from paper_repro.data import load_tokenizer
    from paper_repro.data.prepared import load_pairs
    from paper_repro.provenance.io import write_json
    from paper_repro.training.modeling import load_reward_model_from_base

    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    if case == "summary.json":  # a report input: train_rm's summary as its manifest lists it
        write_json(paths.train_summary, {"heldout_accuracy": 0.625})
        remanifest(paths, "train_rm", all_files=True)
    verify_inputs(paths, "train_rm", ("download_base", "prepare_data"))
    if case == "tokenizer_config.json":
        _change_kept_stat(paths.base_model / case, b'": ', b'":\t')  # same JSON, other bytes
        load = lambda: load_tokenizer(paths.base_model)  # noqa: E731
    elif case == "config.json":
        _change_kept_stat(paths.base_model / case, b'": ', b'":\t')
        load = lambda: load_reward_model_from_base(  # noqa: E731
            paths.base_model, pad_token_id=511, init_std=1.0, seed=0
        )
    elif case == "train.parquet":
        path = paths.prepared("train")
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        st = path.stat()
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        load = lambda: load_pairs(path)  # noqa: E731
    elif case == "preference.jsonl":  # prepare_data's raw rows: hashed while read
        from paper_repro.data import iter_jsonl

        _change_kept_stat(paths.raw_data("preference"), b'": ', b'":\t')
        load = lambda: list(iter_jsonl(paths.raw_data("preference")))  # noqa: E731
    else:
        from paper_repro.reporting.inputs import load_inputs

        _change_kept_stat(paths.train_summary, b"0.625", b"0.875")  # another accuracy
        load = lambda: load_inputs(paths)  # noqa: E731
    with pytest.raises(ChecksumError, match=f"{case.split('/')[-1]} expected sha256:"):
        load()
