"""Hub revisions must be commit shas (a branch name moves under a reproduction)."""

from __future__ import annotations

import pytest

from paper_repro.config import ConfigError, list_presets, load_config


@pytest.mark.parametrize("preset", list_presets())
def test_shipped_presets_pin_commits(preset):
    load_config(preset)


@pytest.mark.parametrize("bad", ["main", "v1.0", "1f6b3c", "1F6B3CB", "g" * 40, "a" * 41])
def test_model_revision_must_be_hex_sha(bad):
    with pytest.raises(ConfigError, match="model.revision"):
        load_config("llama3-70b-uf", [f"model.revision={bad}"])


def test_dataset_revision_must_be_hex_sha():
    with pytest.raises(ConfigError, match="data.rewardbench.revision"):
        load_config("llama3-70b-uf", ["data.rewardbench.revision=main"])


@pytest.mark.parametrize("good", ["1f6b3cb", "0123456789abcdef0123456789abcdef01234567"])
def test_short_and_full_shas_accepted(good):
    assert load_config("llama3-70b-uf", [f"model.revision={good}"]).model.revision == good


def test_tiny_needs_no_revision():
    assert load_config("tiny").model.revision is None


def test_all_digit_pin_read_as_a_number_is_named():
    # YAML reads 0123456 as the octal number 42798: refused, with a hint to quote it
    with pytest.raises(ConfigError, match="'42798' is not a commit sha .*quote an all-digit sha"):
        load_config("llama3-70b-uf", ["model.revision=0123456"])
    assert load_config("llama3-70b-uf", ["model.revision='0123456'"]).model.revision == "0123456"
