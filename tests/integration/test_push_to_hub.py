"""``paper-repro push-to-hub`` against the local hub fake (real huggingface_hub upload code, LFS
transfer, 127.0.0.1 only), and the card's ``model-index`` metadata it publishes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hubfake import FakeHub, model_index_problem

from paper_repro.cli import commands as cli
from paper_repro.export.card import update_card_results
from paper_repro.provenance.manifest import write_manifest
from paper_repro.provenance.paths import RunPaths
from paper_repro.rewardbench import sections as rb

TOKEN = "hf_pushtesttoken0123456789"


def _scores() -> dict:
    rng = np.random.default_rng(0)
    subsets = [s for s in rb.EXAMPLE_COUNTS for _ in range(4)]
    ev = rb.evaluate(subsets, rng.normal(1, 1, len(subsets)), rng.normal(0, 1, len(subsets)))
    return {"input_mode": "training-format", "dtype": "float32", **rb.scores_json(ev)}


def _front(text: str) -> dict:
    return yaml.safe_load(text[4:].split("\n---\n", 1)[0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> RunPaths:
    """A run whose export_rm wrote a small sequence classifier, its card (evaluated) and its
    manifest (the card left out, as export_rm does)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from paper_repro.fixtures.tiny import load_tokenizer

    paths = RunPaths(tmp_path_factory.mktemp("push") / "tiny")
    folder = paths.rm_model
    tok = load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=511,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: llama3\n---\n\n# Tiny UF mean RM\n\nText.\n")
    update_card_results(folder, _scores())
    names = [p.name for p in folder.iterdir() if p.name != "README.md"]
    write_manifest(paths.manifest("export_rm"), folder, names)
    return paths


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_DISABLE_XET", True)  # the fake speaks the LFS transfer
    monkeypatch.setattr(hf, "HF_TOKEN_PATH", str(tmp_path / "no-stored-login"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub({}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def test_card_carries_the_results_as_model_index(exported):
    text = (exported.rm_model / "README.md").read_text()
    front = _front(text)
    assert front["license"] == "llama3"  # the rest of the metadata is kept
    (model,) = front["model-index"]
    assert model["name"] == "Tiny UF mean RM"
    (result,) = model["results"]
    assert result["dataset"] == {
        "type": "allenai/reward-bench",
        "name": "RewardBench",
        "split": "filtered",
    }
    values = {m["name"]: m["value"] for m in result["metrics"]}
    scores = _scores()
    assert list(values) == list(rb.METRICS)
    assert values["Score"] == round(100 * scores["score"]["score"], 2)
    assert values["Chat Hard"] == round(100 * scores["sections"]["Chat Hard"]["score"], 2)
    assert model_index_problem(text) is None
    update_card_results(exported.rm_model, scores)  # an eval rerun: still one model-index
    again = (exported.rm_model / "README.md").read_text()
    assert again == text and again.count("model-index") == 1


def test_push_uploads_the_export_and_never_shows_the_token(exported, hub_env, capsys):
    hub = hub_env
    args = ["push-to-hub", str(exported.root), "me/tiny-uf-rm", "--private", "--revision", "v1"]
    assert cli.main(args) == 0
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert "pushed" in out.out and "me/tiny-uf-rm" in out.out
    assert hub.private["me/tiny-uf-rm"] is True
    (push,) = hub.pushes
    assert push["revision"] == "v1" and push["summary"].startswith("paper-repro: reward model")
    local = {p.name: p.read_bytes() for p in exported.rm_model.iterdir()}
    assert push["files"] == local  # every file, byte for byte (weights through LFS)
    assert local["model.safetensors"] in hub.lfs.values()  # the weights went the LFS way
    assert set(hub.auth_headers) == {f"Bearer {TOKEN}"}
    assert "model-index" in _front(push["files"]["README.md"].decode())


def test_push_refuses_without_token_corrupt_export_or_bad_metadata(
    exported, hub_env, monkeypatch, capsys
):
    hub = hub_env
    monkeypatch.delenv("HF_TOKEN")
    assert cli.main(["push-to-hub", str(exported.root), "me/x"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    card = exported.rm_model / "README.md"
    good = card.read_text()
    card.write_text(good.replace("type: accuracy", "kind: accuracy"))  # metrics without a type
    try:
        assert cli.main(["push-to-hub", str(exported.root), "me/x"]) == 2
        err = capsys.readouterr().err
        assert "the hub refused the upload" in err and "\n" not in err.strip()
    finally:
        card.write_text(good)

    weights = exported.rm_model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        assert cli.main(["push-to-hub", str(exported.root), "me/y"]) == 2
        assert "model.safetensors" in capsys.readouterr().err
    finally:
        weights.write_bytes(data)
    assert not hub.pushes and "me/y" not in hub.repos  # nothing of a corrupt export went out
