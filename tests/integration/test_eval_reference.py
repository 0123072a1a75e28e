"""eval_reference on the tiny preset: a stand-in RM trained here with another seed, scored by
eval_rewardbench's evaluation; the stand-in is deterministic and labelled as such."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from paper_repro.provenance.paths import RunPaths


def one_epoch(cfg):
    """The tiny recipe at one epoch (half the updates): the stand-in path, faster."""
    return dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, epochs=1))


@pytest.fixture(scope="module")
def ref_run(tiny_run, tiny_cfg, tmp_path_factory):
    from paper_repro.stages import eval_reference

    root = tmp_path_factory.mktemp("ref") / "run"
    shutil.copytree(tiny_run.root, root)
    paths = RunPaths(root)
    assert eval_reference.run(one_epoch(tiny_cfg), paths) == 0
    return paths


def test_stand_in_is_trained_labelled_and_scored(ref_run, tiny_cfg):
    from mlflow.tracking import MlflowClient

    from paper_repro.provenance.io import read_json
    from paper_repro.tracking import recorded_run_ids, tracking_uri

    files = ref_run.eval_files("eval_reference")
    for f in files.all():
        assert f.is_file() and f.stat().st_size > 0
    scores = json.loads(files.scores.read_text())
    assert scores["model"] == "paper-repro/tiny-standin-seed1" and scores["n_pairs"] == 768
    assert scores["pad"]["note"] is None  # the stand-in has the pipeline's pad
    manifest = read_json(ref_run.reference_model_manifest)
    assert manifest["source"] == "tiny stand-in" and manifest["seed"] == 1
    assert manifest["updates"] == 121 and "model.safetensors" in manifest["files"]
    run = MlflowClient(tracking_uri(tiny_cfg, ref_run)).get_run(
        recorded_run_ids(ref_run)["eval_reference"]
    )
    assert run.data.tags["stage"] == "eval_reference"
    assert run.data.tags["reference.source"] == "tiny"
    assert run.data.metrics["score"] == pytest.approx(scores["score"]["score"])


def test_eval_only_change_reuses_the_stand_in(ref_run, tiny_cfg, capsys):
    """eval_reference reruns on an eval change (it rescores); the stand-in's weights do not
    depend on the eval section, so they are reused, not trained again."""
    from paper_repro.rewardbench.standin import standin_identity, standin_model

    cfg = one_epoch(tiny_cfg)
    weights = ref_run.reference_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    changed = dataclasses.replace(
        cfg,
        eval=dataclasses.replace(cfg.eval, bootstrap_samples=7, dtype="bfloat16"),
        rm=dataclasses.replace(cfg.rm, checkpoint_every=3),
    )
    capsys.readouterr()
    assert standin_model(changed, ref_run) == ref_run.reference_model
    assert "reused" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before
    # what the weights do depend on changes the identity: the recipe, the seed, the inputs
    ident = standin_identity(cfg, ref_run)
    assert standin_identity(changed, ref_run) == ident
    lr = dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, lr=0.002))
    seed = dataclasses.replace(cfg, reference=dataclasses.replace(cfg.reference, standin_seed=2))
    assert ident not in {standin_identity(lr, ref_run), standin_identity(seed, ref_run)}


@pytest.mark.slow
def test_stand_in_is_deterministic_and_depends_on_its_seed(ref_run, tiny_cfg, tmp_path):
    from paper_repro.provenance.io import read_json
    from paper_repro.rewardbench.standin import build_standin

    first = read_json(ref_run.reference_model_manifest)["files"]["model.safetensors"]
    again = RunPaths(tmp_path / "again")
    for stage in ("download_base", "prepare_data"):
        shutil.copytree(ref_run.stage_dir(stage), again.stage_dir(stage))
    build_standin(one_epoch(tiny_cfg), again)
    assert read_json(again.reference_model_manifest)["files"]["model.safetensors"] == first
    other = dataclasses.replace(
        one_epoch(tiny_cfg), reference=dataclasses.replace(tiny_cfg.reference, standin_seed=2)
    )
    build_standin(other, again)
    assert read_json(again.reference_model_manifest)["files"]["model.safetensors"] != first
