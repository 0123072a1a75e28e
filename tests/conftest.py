"""Shared pytest fixtures. ``tiny_run`` is the prepared tiny run every integration test builds on.

Append your own fixtures below; keep heavy imports inside fixtures.
"""

from __future__ import annotations

import os

import pytest

# The tiny base is SFT-trained for fewer steps in tests (about 6 s instead of about 30 s on a
# loaded 2-core machine) and the tiny RM for 2 epochs instead of 4 (half the training time);
# everything else is the tiny preset unchanged.
TINY_TEST_OVERRIDES = ("model.tiny.sft_steps=60", "rm.epochs=2")


@pytest.fixture(scope="session")
def tiny_cfg():
    from paper_repro.config import load_config

    return load_config("tiny", list(TINY_TEST_OVERRIDES))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_cfg):
    """RunPaths of a tiny-preset run whose download_base, download_data and prepare_data stages
    have run (via their ``run`` functions). Treat it as read-only: it is shared by the session."""
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import download_base, download_data, prepare_data

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    paths = RunPaths(tmp_path_factory.mktemp("tiny_run"))
    for stage in (download_base, download_data, prepare_data):
        assert stage.run(tiny_cfg, paths) == 0
    return paths


@pytest.fixture(scope="session")
def llama3_tok():
    """The real Llama 3 tokenizer with the Tulu 2 additions, built offline from the llama-models
    wheel (once per machine: kept in the user cache, see paper_repro.data.llama3_tokenizer)."""
    from paper_repro.data.llama3_tokenizer import load_tulu_llama3

    return load_tulu_llama3()


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``make()`` -> a fresh, seeded 1-layer LlamaForSequenceClassification (vocabulary 32, pad
    id 31) for unit tests of the loss, pooling and the training loop."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    def make():
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            num_labels=1,
            pad_token_id=31,
            max_position_embeddings=64,
        )
        return LlamaForSequenceClassification(cfg).float().eval()

    return make


def pytest_collection_finish(session):
    """With HARDENING_CASES=<file>, write the hardening cases of the collected tests there (JSON)
    for the docs/hardening.md table (tests/unit/test_hardening_doc.py)."""
    import json
    from pathlib import Path

    out = os.environ.get("HARDENING_CASES")
    if out:
        cases = [
            {"item": m.args[0], "kind": m.args[1], "test": item.nodeid.split("[")[0]}
            for item in session.items
            for m in item.iter_markers("hardening")
        ]
        Path(out).write_text(json.dumps(cases))
