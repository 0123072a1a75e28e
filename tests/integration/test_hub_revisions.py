"""Short pins (as the hub's web pages show them) and branches are resolved once to the full commit
id, which every file request then uses; the fake hub, like the real library, accepts only full
40-hex commit ids or branch names as revisions."""

from __future__ import annotations

import pytest
from hubfake import COMMIT, FakeHub, make_cache, tiny_dataset_files, tiny_repo_files
from test_download import offline, online  # noqa: F401 - fixtures used by name below

from paper_repro.hub import HubError, fetch_model
from paper_repro.hub.revisions import resolve_revision
from paper_repro.provenance.io import read_json

REPO = "org/tiny-model"
SHORT = COMMIT[:7]
TWIN = SHORT + "f" * 33  # an older commit sharing the 7-character prefix
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def fetch(hub, tmp_path, revision, name="m"):
    return fetch_model(
        REPO,
        revision,
        tmp_path / name,
        tmp_path / f"{name}.json",
        cache_dir=tmp_path / "hub",
        endpoint=hub.url,
    )


@pytest.mark.usefixtures("online")
def test_short_pin_is_resolved_once_and_every_file_uses_the_full_sha(tmp_path):
    with FakeHub({REPO: tiny_repo_files()}, history=(OTHER,)) as hub:
        m = fetch(hub, tmp_path, SHORT)
        assert (m["requested_revision"], m["commit"]) == (SHORT, COMMIT)
        assert hub.revisions and set(hub.revisions) == {COMMIT}  # no request at the short pin
        assert sum("/commits/" in p for p in hub.requests) == 1
        hub.requests.clear()
        again = fetch(hub, tmp_path, SHORT)  # the lock holds the full sha: no second lookup
        assert not any("/commits/" in p or p.endswith("/refs") for p in hub.requests)
    assert again["commit"] == COMMIT and again["expected_from"] == "lock file"
    assert read_json(tmp_path / "m.json")["commit"] == COMMIT


@pytest.mark.usefixtures("online")
def test_older_commit_prefix_resolves_to_that_commit(tmp_path):
    with FakeHub({REPO: tiny_repo_files()}, history=(OTHER,)) as hub:
        m = fetch(hub, tmp_path, OTHER[:9])
    assert m["commit"] == OTHER and set(hub.revisions) == {OTHER}


@pytest.mark.parametrize(
    "pin, history, match",
    [
        (SHORT, (TWIN,), f"revision '{SHORT}' is ambiguous \\(2 commits"),
        ("abcdef1", (OTHER,), "revision 'abcdef1' matches none of the 2 commits on the hub"),
        ("release", (), "revision 'release' is neither a commit sha nor a branch or tag"),
    ],
)
@pytest.mark.usefixtures("online")
def test_bad_pins_are_one_line_naming_repo_and_pin(tmp_path, pin, history, match):
    with FakeHub({REPO: tiny_repo_files()}, history=history) as hub:
        with pytest.raises(HubError, match=match) as exc:
            fetch(hub, tmp_path, pin)
        assert not hub.downloads
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and f"model {REPO}" in msg
    assert not (tmp_path / "m.json").exists()


@pytest.mark.usefixtures("online")
def test_branch_resolves_to_its_head(tmp_path):
    with FakeHub({REPO: tiny_repo_files()}, history=(OTHER,)) as hub:
        assert resolve_revision(REPO, "main", endpoint=hub.url) == COMMIT
        assert resolve_revision(REPO, None, endpoint=hub.url) == COMMIT
        hub.requests.clear()
        assert resolve_revision(REPO, OTHER, endpoint=hub.url) == OTHER
        assert hub.requests == []  # a full sha needs no request


@pytest.mark.usefixtures("offline")
def test_offline_short_pin_resolves_from_the_cache(tmp_path):
    cache = tmp_path / "hub"
    make_cache(cache, REPO, tiny_repo_files())
    m = fetch_model(REPO, SHORT, tmp_path / "m", tmp_path / "m.json", cache_dir=cache)
    assert (m["requested_revision"], m["commit"]) == (SHORT, COMMIT)
    make_cache(cache, REPO, tiny_repo_files(), commit=TWIN)
    with pytest.raises(HubError, match=f"'{SHORT}' is ambiguous .* in the local cache"):
        resolve_revision(REPO, SHORT, cache_dir=cache)
    with pytest.raises(HubError, match="'abcdef1' matches none of the 2 commits in the local"):
        resolve_revision(REPO, "abcdef1", cache_dir=cache)


@pytest.mark.usefixtures("online")
def test_stages_record_the_resolved_commits_in_locks_and_provenance(tmp_path, monkeypatch):
    """download_base and download_data with short pins: the locks and the report's provenance
    hold the full commits, and no file was requested at a short pin."""
    from huggingface_hub import constants

    from paper_repro.config import load_config
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.reporting.provenance import build_provenance
    from paper_repro.stages import download_base, download_data

    split = "ultrafeedback_mean_aspects"
    names = ("preference", "rewardbench", "ppo_prompts")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # quoted: YAML would read the all-digit 0123456 as a number
    cfg = load_config(
        "tiny",
        ["model.source=hub", f"model.hub_id={REPO}", f"model.revision='{SHORT}'"]
        + ["data.source=hub"]
        + [f"data.{n}.hub_id=org/prefs" for n in names]
        + [f"data.{n}.split={split}" for n in names]
        + [f"data.{n}.revision='{SHORT}'" for n in names],
    )
    paths = RunPaths(tmp_path / "run")
    with FakeHub(
        {REPO: tiny_repo_files()}, datasets={"org/prefs": tiny_dataset_files(split)}
    ) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert download_base.run(cfg, paths) == 0
        assert download_data.run(cfg, paths) == 0
    assert set(hub.revisions) == {COMMIT}
    assert read_json(paths.base_manifest)["commit"] == COMMIT
    datasets = read_json(paths.data_manifest)["datasets"]
    assert {n: (d["revision"], d["commit"]) for n, d in datasets.items()} == {
        n: (SHORT, COMMIT) for n in names
    }
    prov = build_provenance(cfg, paths, [])
    assert (prov["models"]["base"]["revision"], prov["models"]["base"]["commit"]) == (SHORT, COMMIT)
    assert {d["commit"] for d in prov["data"]["datasets"].values()} == {COMMIT}
