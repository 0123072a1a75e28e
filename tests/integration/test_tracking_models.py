"""The reward model as an MLflow model through a real MLflow server (HTTP, proxied artifacts):
the copy for a small export and the external record for a large one, and the stage going on when
the store is down. The sqlite path is covered by test_eval_rewardbench.py."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from test_tracking import _free_port, _start_server, _stop_server

from paper_repro.config import load_config
from paper_repro.provenance.io import sha256_tree
from paper_repro.provenance.paths import RunPaths
from paper_repro.rewardbench import sections as rb


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    """A small random LlamaForSequenceClassification with the tiny tokenizer and pad 511."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from paper_repro.fixtures.tiny import load_tokenizer

    folder = tmp_path_factory.mktemp("rm") / "model"
    tok = load_tokenizer()
    tok.pad_token = tok.convert_ids_to_tokens(511)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=511,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _scores() -> dict:
    rng = np.random.default_rng(0)
    subsets = [s for s in rb.EXAMPLE_COUNTS for _ in range(4)]
    ev = rb.evaluate(subsets, rng.normal(1, 1, len(subsets)), rng.normal(0, 1, len(subsets)))
    return {"input_mode": "training-format", **rb.scores_json(ev)}


def _cfg(uri: str, copy_mb: int):
    cfg = load_config("tiny")
    return dataclasses.replace(
        cfg, tracking=dataclasses.replace(cfg.tracking, uri=uri, copy_model_max_mb=copy_mb)
    )


@pytest.mark.slow
def test_copy_and_reference_through_a_server(rm_folder, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import stage_run
    from paper_repro.tracking.models import _fluent_uri, input_example, record_reward_model

    port = _free_port()
    server = _start_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    scores = _scores()
    files = sha256_tree(rm_folder)
    try:
        records = {}
        for copy_mb in (2048, 0):
            cfg = _cfg(url, copy_mb)
            paths = RunPaths(tmp_path / f"run-{copy_mb}")
            # the same weights would be the same registered version: record the external one
            # as other weights (only the digests are read for it)
            digests = files if copy_mb else {**files, "config.json": "0" * 64}
            with stage_run(cfg, paths, "eval_rewardbench") as tr:
                records[copy_mb] = record_reward_model(tr, cfg, rm_folder, digests, scores)
        client = MlflowClient(url)
        copied, referenced = records[2048], records[0]
        assert copied.copied and not referenced.copied
        assert (copied.registered_name, copied.version) == ("paper-repro-tiny-rm", "1")
        assert referenced.version == "2"
        for rec in (copied, referenced):
            v = client.get_model_version(rec.registered_name, rec.version)
            assert v.tags["rewardbench.score"] == f"{scores['score']['score']:.6f}"
            assert v.tags["export.path"] == str(rm_folder.resolve())
        ext = client.get_logged_model(referenced.model_id)
        assert ext.tags["mlflow.model.isExternal"] == "true"
        names = {a.path for a in client.list_logged_model_artifacts(referenced.model_id)}
        assert "export.manifest.json" in names and not any(".safetensors" in n for n in names)
        with _fluent_uri(url):
            model = mlflow.pyfunc.load_model(f"models:/paper-repro-tiny-rm/{copied.version}")
            rewards = model.predict(input_example(rm_folder))
        assert rewards.shape == (1,) and np.isfinite(rewards).all()
    finally:
        _stop_server(server)


def test_store_down_is_a_warning_not_a_failure(rm_folder, tmp_path, caplog):
    from paper_repro.tracking import stage_run
    from paper_repro.tracking.models import record_reward_model

    cfg = _cfg(f"http://127.0.0.1:{_free_port()}", 2048)  # nothing listens there
    paths = RunPaths(tmp_path / "run")
    with caplog.at_level(logging.WARNING), stage_run(cfg, paths, "eval_rewardbench") as tr:
        assert record_reward_model(tr, cfg, rm_folder, sha256_tree(rm_folder), _scores()) is None
    assert "reward model not recorded in MLflow" in caplog.text


def test_an_eval_rerun_of_the_same_weights_registers_no_new_version(rm_folder, tmp_path):
    """One registered version per set of weights (looked up by the content-digest tag): a rerun
    re-tags that version with its scores; other weights are a new version."""
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import stage_run, tracking_uri
    from paper_repro.tracking.models import record_reward_model

    cfg = _cfg(None, 0)  # the run's sqlite store; referenced by path (no copy: fast)
    paths = RunPaths(tmp_path / "run")
    files = sha256_tree(rm_folder)
    first, second = _scores(), _scores()
    second["score"] = {**second["score"], "score": 0.5}
    records = []
    for scores, digests in (
        (first, files),
        (second, files),
        (first, {**files, "config.json": "0" * 64}),
    ):
        with stage_run(cfg, paths, "eval_rewardbench") as tr:
            records.append(record_reward_model(tr, cfg, rm_folder, digests, scores))
    assert [(r.version, r.new) for r in records] == [("1", True), ("1", False), ("2", True)]
    assert records[1].model_id == records[0].model_id and not records[1].copied
    client = MlflowClient(tracking_uri(cfg, paths))
    assert len(client.search_model_versions("name = 'paper-repro-tiny-rm'")) == 2
    v1 = client.get_model_version("paper-repro-tiny-rm", "1")
    assert v1.tags["rewardbench.score"] == "0.500000"  # the newest evaluation of these weights
    assert v1.description.startswith("RewardBench Score 50.0")
