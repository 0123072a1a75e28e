"""Readers that used to parse files nobody checked now take the bytes a manifest lists: the RM
loader's config, best-of-N's tokenizer, and the policies lm-eval loads itself (hashed in full
before eval_downstream hands them over). A byte changed after the upstream check, size and mtime
kept, is refused naming the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_integrity import full_run, model_folders  # noqa: F401 (a fixture)

from paper_repro.provenance.manifest import ChecksumError
from paper_repro.provenance.paths import RunPaths


def edit_in_place(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` with ``new`` (same length), size and mtime kept: only a hash sees it."""
    assert len(old) == len(new)
    st = path.stat()
    data = path.read_bytes()
    assert old in data, (path, old)
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def run(full_run, tmp_path) -> RunPaths:  # noqa: F811
    root = tmp_path / "run"
    shutil.copytree(full_run.root, root, symlinks=True)
    paths = RunPaths(root)
    model_folders(paths)  # ppo/policy and reference_model/model too
    return paths


@pytest.mark.hardening("2", "RM config.json edited after the check: the evaluation loader refuses")
def test_the_rm_loader_parses_the_listed_config(run):
    from paper_repro.rewardbench.model import load_model

    load_model(run.rm_model, "float32")  # as listed: loads
    edit_in_place(run.rm_model / "config.json", b'"num_hidden_layers"', b'"num_hidden_layerz"')
    with pytest.raises(ChecksumError, match="config.json expected sha256:"):
        load_model(run.rm_model, "float32")


@pytest.mark.hardening("2", "RM tokenizer edited after the check: best-of-N's scorer refuses")
def test_best_of_n_scores_with_the_listed_tokenizer(run):
    from paper_repro.downstream.bon import RewardScorer

    name = "tokenizer_config.json"
    edit_in_place(run.reference_model / name, b'"model_max_length"', b'"model_max_lengtz"')
    with pytest.raises(ChecksumError, match=f"{name} expected sha256:"):
        RewardScorer(run.reference_model, "float32", token_budget=512)


@pytest.mark.hardening("2", "ppo/policy weights changed in place: eval_downstream refuses")
def test_eval_downstream_hashes_the_policies_lm_eval_loads(run, tiny_cfg):
    from paper_repro.stages import eval_downstream

    weights = run.ppo_policy / "model.safetensors"
    data = weights.read_bytes()
    edit_in_place(weights, data[-4:], bytes(b ^ 1 for b in data[-4:]))
    with pytest.raises(ChecksumError, match="policy/model.safetensors expected sha256:"):
        eval_downstream.run(tiny_cfg, run)
    assert not (run.stage_dir("eval_downstream") / "results.json").exists()
