"""Downloads through the real huggingface_hub code, on a locally made hub cache (offline) and a
local fake hub server on 127.0.0.1 (online path): verification, repair, error messages, token."""

from __future__ import annotations

import pytest
from hubfake import COMMIT, FakeHub, etag, make_cache, tiny_dataset_files, tiny_repo_files

from paper_repro.hub import HubError, copy_rows, fetch_dataset_split, fetch_model
from paper_repro.provenance.io import read_json
from paper_repro.provenance.manifest import ChecksumError, verify_manifest

REPO = "org/tiny-model"
MARKER = "hf_SECRETMARKER1234567890"


def flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# huggingface_hub reads HF_HUB_OFFLINE once, at import: set both the variable (read by
# paper_repro.hub at call time) and the library's constant.
@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)


def blob(cache, name):
    files = tiny_repo_files()
    return cache / ("models--" + REPO.replace("/", "--")) / "blobs" / etag(name, files[name])


def test_offline_cache_good_snapshot(tmp_path, offline):
    cache = tmp_path / "hub"
    make_cache(cache, REPO, tiny_repo_files())
    dest, manifest = tmp_path / "run" / "model", tmp_path / "run" / "manifest.json"
    m = fetch_model(REPO, COMMIT, dest, manifest, cache_dir=cache)
    assert m["commit"] == COMMIT and m["expected_from"] == "hf cache content address"
    assert sorted(m["files"]) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]  # the pickle is never linked
    assert not (dest / "pytorch_model.bin").exists()
    assert (dest / "model.safetensors").read_bytes() == tiny_repo_files()["model.safetensors"]
    verify_manifest(dest, manifest)


def test_offline_flipped_byte_named_then_lock_catches_it(tmp_path, offline):
    cache = tmp_path / "hub"
    make_cache(cache, REPO, tiny_repo_files())
    flip_byte(blob(cache, "model.safetensors"))
    dest, manifest = tmp_path / "model", tmp_path / "manifest.json"
    with pytest.raises(ChecksumError) as exc:
        fetch_model(REPO, COMMIT, dest, manifest, cache_dir=cache)
    msg = str(exc.value)
    assert (
        "model.safetensors expected sha256:"
        + etag("model.safetensors", tiny_repo_files()["model.safetensors"])
        in msg
    )
    assert exc.value.bad[0].actual.startswith("sha256:") and not manifest.exists()


def test_lock_file_detects_corruption_after_first_download(tmp_path, offline):
    cache = tmp_path / "hub"
    make_cache(cache, REPO, tiny_repo_files())
    dest, manifest = tmp_path / "model", tmp_path / "manifest.json"
    fetch_model(REPO, COMMIT, dest, manifest, cache_dir=cache)
    flip_byte(blob(cache, "tokenizer.json"), offset=3)  # a git-addressed (non-LFS) file
    with pytest.raises(ChecksumError, match="tokenizer.json expected sha256:"):
        verify_manifest(dest, manifest)  # what prepare_data does before reading
    with pytest.raises(ChecksumError, match="tokenizer.json"):
        fetch_model(REPO, COMMIT, dest, manifest, cache_dir=cache)


def test_offline_missing_repo_is_one_clear_message(tmp_path, offline):
    with pytest.raises(HubError, match="not in the local Hugging Face cache"):
        fetch_model(
            "org/absent", COMMIT, tmp_path / "m", tmp_path / "m.json", cache_dir=tmp_path / "hub"
        )


def test_online_download_repairs_only_bad_file(tmp_path, online, monkeypatch):
    cache = tmp_path / "hub"
    dest, manifest = tmp_path / "model", tmp_path / "manifest.json"
    with FakeHub({REPO: tiny_repo_files()}) as hub:
        m = fetch_model(REPO, COMMIT, dest, manifest, cache_dir=cache, endpoint=hub.url)
        assert m["expected_from"] == "hub metadata"
        assert sorted(hub.downloads) == sorted(m["files"])  # no pickle requested
        flip_byte(blob(cache, "model.safetensors"))
        hub.downloads.clear()
        m2 = fetch_model(REPO, COMMIT, dest, manifest, cache_dir=cache, endpoint=hub.url)
        assert hub.downloads == ["model.safetensors"]  # only the corrupt file came again
    assert m2["files"] == m["files"] and m2["expected_from"] == "lock file"
    verify_manifest(dest, manifest)


@pytest.mark.parametrize(
    "repo, revision, gated, match",
    [
        ("org/absent", COMMIT, (), "repository not found"),
        (REPO, "f" * 40, (), "revision 'ffff"),
        (REPO, COMMIT, (REPO,), "is gated: accept its license"),
    ],
)
def test_online_errors_are_one_clear_message(
    tmp_path, online, monkeypatch, repo, revision, gated, match
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no cached token either
    with FakeHub({REPO: tiny_repo_files()}, gated=gated) as hub:
        with pytest.raises(HubError, match=match) as exc:
            fetch_model(
                repo,
                revision,
                tmp_path / "m",
                tmp_path / "m.json",
                cache_dir=tmp_path / "hub",
                endpoint=hub.url,
            )
    assert len(str(exc.value).splitlines()) == 1


def test_no_network_is_one_clear_message(tmp_path, online, monkeypatch):
    # Nothing listens on this port: a connection error, as without network. huggingface_hub
    # retries with backoff (about 23 s); skip the waiting, keep the retries.
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    with pytest.raises(HubError, match="cannot be reached|cannot reach"):
        fetch_model(
            REPO,
            COMMIT,
            tmp_path / "m",
            tmp_path / "m.json",
            cache_dir=tmp_path / "hub",
            endpoint="http://127.0.0.1:9",
        )


def test_token_used_but_never_written(tmp_path, online, monkeypatch, capfd):
    """HF_TOKEN reaches the hub (gated repo downloads) and appears in no output file."""
    monkeypatch.setenv("HF_TOKEN", MARKER)
    run = tmp_path / "run"
    with FakeHub({REPO: tiny_repo_files()}, gated=(REPO,)) as hub:
        fetch_model(
            REPO,
            COMMIT,
            run / "model",
            run / "manifest.json",
            cache_dir=tmp_path / "hub",
            endpoint=hub.url,
        )
    assert f"Bearer {MARKER}" in hub.auth_headers
    out, err = capfd.readouterr()
    assert MARKER not in out + err
    for p in run.rglob("*"):
        if p.is_file():
            assert MARKER.encode() not in p.read_bytes(), p
    assert read_json(run / "manifest.json")["repo_id"] == REPO


def test_stage_never_leaks_token(tmp_path, online, monkeypatch, capfd):
    """download_base on a hub preset with HF_TOKEN set to a marker: the marker reaches the hub
    but no file of the run (manifest, MLflow sqlite db and artifacts, tracking ids) or console
    output holds it."""
    from huggingface_hub import constants

    from paper_repro.config import load_config, to_yaml
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import download_base

    monkeypatch.setenv("HF_TOKEN", MARKER)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = load_config(
        "tiny", ["model.source=hub", f"model.hub_id={REPO}", f"model.revision={COMMIT}"]
    )
    paths = RunPaths(tmp_path / "run")
    with FakeHub({REPO: tiny_repo_files()}, gated=(REPO,)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert download_base.run(cfg, paths) == 0
    assert f"Bearer {MARKER}" in hub.auth_headers
    assert MARKER not in to_yaml(cfg)
    out, err = capfd.readouterr()
    assert MARKER not in out + err
    files = [p for p in paths.root.rglob("*") if p.is_file()]
    assert paths.mlflow_db in files and paths.base_manifest in files
    for p in files:
        assert MARKER.encode() not in p.read_bytes(), p


def test_download_data_local_refetches_only_bad_file(tmp_path, capfd):
    """data.source=local copies the files row for row; the manifest is the lock file: a rerun
    fetches nothing, a corrupt file alone is fetched again."""
    from paper_repro.config import load_config
    from paper_repro.data import read_rows
    from paper_repro.fixtures.tiny import FIXTURE_DIR
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import download_data

    files = {
        "preference": "preference_heldout.jsonl",
        "rewardbench": "rewardbench_filtered.jsonl",
        "ppo_prompts": "ppo_prompts.jsonl",
    }
    cfg = load_config(
        "tiny",
        ["data.source=local"]
        + [f"data.{n}.local_path={FIXTURE_DIR / f}" for n, f in files.items()],
    )
    paths = RunPaths(tmp_path / "run")
    assert download_data.run(cfg, paths) == 0
    for name, fname in files.items():
        assert read_rows(paths.raw_data(name)) == read_rows(FIXTURE_DIR / fname)
    capfd.readouterr()
    assert download_data.run(cfg, paths) == 0
    assert "fetched nothing" in capfd.readouterr().out
    flip_byte(paths.raw_data("rewardbench"), offset=5)
    assert download_data.run(cfg, paths) == 0
    assert "fetched ['rewardbench']" in capfd.readouterr().out
    verify_manifest(paths.data_manifest.parent, paths.data_manifest)


def test_local_model_folder_skips_pickles(tmp_path):
    from paper_repro.hub import link_local_model

    src = tmp_path / "src"
    src.mkdir()
    for name, data in tiny_repo_files().items():
        (src / name).write_bytes(data)
    m = link_local_model(src, tmp_path / "model", tmp_path / "manifest.json")
    assert "pytorch_model.bin" not in m["files"] and "model.safetensors" in m["files"]
    (src / "model.safetensors").unlink()
    with pytest.raises(HubError, match="no \\*.safetensors"):
        link_local_model(src, tmp_path / "model2", tmp_path / "manifest2.json")


@pytest.mark.hardening(
    "2", "local base model: one byte changed since first use, size and mtime kept: refused"
)
def test_local_model_changed_in_place_is_refused_not_relocked(tmp_path):
    import os

    from paper_repro.hub import link_local_model
    from paper_repro.provenance.io import read_json
    from paper_repro.provenance.manifest import ChecksumError

    src = tmp_path / "src"
    src.mkdir()
    for name, data in tiny_repo_files().items():
        (src / name).write_bytes(data)
    lock = tmp_path / "manifest.json"
    first = link_local_model(src, tmp_path / "model", lock)
    weights = src / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ChecksumError, match="model.safetensors expected sha256:.*changed since"):
        link_local_model(src, tmp_path / "model", lock)
    assert read_json(lock)["files"] == first["files"]  # the lock still names the first bytes


# --------------------------------------------------------------------------- datasets

DREPO = "org/tiny-prefs"
SPLIT = "ultrafeedback_mean_aspects"
SHARD = f"data/{SPLIT}-00000-of-00001.jsonl"


def dataset_blob(cache, name, repo=DREPO, files=None):
    data = (files or tiny_dataset_files(SPLIT))[name]
    return cache / ("datasets--" + repo.replace("/", "--")) / "blobs" / etag(name, data)


def jsonl_rows(data: bytes) -> list[dict]:
    import json

    return [json.loads(line) for line in data.decode().splitlines()]


def test_dataset_online_good_download_writes_lock(tmp_path, online):
    cache, dest, lock = tmp_path / "hub", tmp_path / "up" / "prefs", tmp_path / "up" / "m.json"
    with FakeHub({}, datasets={DREPO: tiny_dataset_files(SPLIT)}) as hub:
        m, files = fetch_dataset_split(
            DREPO, SPLIT, COMMIT, dest, lock, cache_dir=cache, endpoint=hub.url
        )
    # only this split's shard and the card; the "<split>_other" split is never fetched
    assert sorted(hub.downloads) == ["README.md", SHARD] == sorted(m["files"])
    assert files == [dest / SHARD]
    assert m["expected_from"] == "hub metadata" and m["commit"] == COMMIT
    assert (m["repo_type"], m["split"], m["repo_id"]) == ("dataset", SPLIT, DREPO)
    assert read_json(lock) == m
    verify_manifest(dest, lock)
    assert copy_rows(files, tmp_path / "rows.jsonl") == 40
    assert (tmp_path / "rows.jsonl").read_bytes() == tiny_dataset_files(SPLIT)[SHARD]


def test_dataset_flipped_byte_names_file_and_hashes(tmp_path, offline):
    from paper_repro.provenance.io import sha256_file

    cache = tmp_path / "hub"
    make_cache(cache, DREPO, tiny_dataset_files(SPLIT), repo_type="dataset")
    good = etag(SHARD, tiny_dataset_files(SPLIT)[SHARD])
    flip_byte(dataset_blob(cache, SHARD), offset=7)
    lock = tmp_path / "m.json"
    with pytest.raises(ChecksumError) as exc:
        fetch_dataset_split(DREPO, SPLIT, COMMIT, tmp_path / "d", lock, cache_dir=cache)
    actual = sha256_file(dataset_blob(cache, SHARD))
    assert f"{SHARD} expected sha256:{good} got sha256:{actual}" in str(exc.value)
    assert actual != good and not lock.exists()  # nothing is locked on bad data


def test_dataset_rerun_refetches_only_the_bad_file(tmp_path, online):
    cache, dest, lock = tmp_path / "hub", tmp_path / "d", tmp_path / "m.json"
    with FakeHub({}, datasets={DREPO: tiny_dataset_files(SPLIT)}) as hub:
        m = fetch_dataset_split(
            DREPO, SPLIT, COMMIT, dest, lock, cache_dir=cache, endpoint=hub.url
        )[0]
        hub.downloads.clear()
        fetch_dataset_split(DREPO, SPLIT, COMMIT, dest, lock, cache_dir=cache, endpoint=hub.url)
        assert hub.downloads == []  # all good: nothing fetched again
        flip_byte(dataset_blob(cache, SHARD))
        m2 = fetch_dataset_split(
            DREPO, SPLIT, COMMIT, dest, lock, cache_dir=cache, endpoint=hub.url
        )[0]
        assert hub.downloads == [SHARD]  # only the corrupt shard came again
    assert m2["files"] == m["files"] and m2["expected_from"] == "lock file"
    verify_manifest(dest, lock)


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_dataset_missing_split_is_one_clear_message(tmp_path, monkeypatch, request, mode):
    request.getfixturevalue(mode)
    cache = tmp_path / "hub"
    make_cache(cache, DREPO, tiny_dataset_files(SPLIT), repo_type="dataset")
    with FakeHub({}, datasets={DREPO: tiny_dataset_files(SPLIT)}) as hub:
        with pytest.raises(HubError) as exc:
            fetch_dataset_split(
                DREPO,
                "nope",
                COMMIT,
                tmp_path / "d",
                tmp_path / "m.json",
                cache_dir=cache,
                endpoint=hub.url,
            )
    msg = str(exc.value)
    assert f"dataset {DREPO}@{COMMIT}: no data file for split 'nope'" in msg
    assert len(msg.splitlines()) == 1 and not (tmp_path / "m.json").exists()


def test_download_data_stage_offline_from_hf_cache(tmp_path, offline, monkeypatch, capfd):
    """data.source=hub with HF_HUB_OFFLINE=1 on a populated cache: jsonl and parquet splits
    are verified, locked and copied row for row into the jsonl later stages read; a rerun
    fetches nothing; a corrupt cached file then stops the stage naming it."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import constants

    from paper_repro.config import load_config
    from paper_repro.data import read_rows
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import download_data

    bench = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "id": i} for i in range(5)]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(bench), buf)
    repos = {
        "org/prefs": tiny_dataset_files(SPLIT),
        "org/bench": {
            "README.md": b"# bench\n",
            "data/filtered-00000-of-00001.parquet": buf.getvalue(),
        },
        "org/prompts": tiny_dataset_files("uf_prompts"),
    }
    cache = tmp_path / "hub"
    for repo, files in repos.items():
        make_cache(cache, repo, files, repo_type="dataset")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    cfg = load_config(
        "tiny",
        [
            "data.source=hub",
            "data.preference.hub_id=org/prefs",
            f"data.preference.split={SPLIT}",
            "data.rewardbench.hub_id=org/bench",
            "data.rewardbench.split=filtered",
            "data.ppo_prompts.hub_id=org/prompts",
            "data.ppo_prompts.split=uf_prompts",
        ]
        + [f"data.{n}.revision={COMMIT}" for n in ("preference", "rewardbench", "ppo_prompts")],
    )
    paths = RunPaths(tmp_path / "run")
    assert download_data.run(cfg, paths) == 0
    assert read_rows(paths.raw_data("preference")) == jsonl_rows(repos["org/prefs"][SHARD])
    assert read_rows(paths.raw_data("rewardbench")) == bench
    up = paths.data_manifest.parent / "upstream"
    assert (
        read_json(up / "rewardbench.manifest.json")["expected_from"] == "hf cache content address"
    )
    manifest = verify_manifest(paths.data_manifest.parent, paths.data_manifest)
    assert manifest["datasets"]["preference"]["commit"] == COMMIT
    capfd.readouterr()
    assert download_data.run(cfg, paths) == 0
    assert "fetched nothing" in capfd.readouterr().out
    flip_byte(dataset_blob(cache, SHARD, repo="org/prefs"))
    with pytest.raises(ChecksumError, match=f"{SHARD} expected sha256:"):
        download_data.run(cfg, paths)
