"""The config schema: presets carry the card's numbers; bad configs fail with the key path."""

import subprocess
import sys
from pathlib import Path

import pytest

from paper_repro.config import (
    ConfigError,
    config_hash,
    derived,
    list_presets,
    load_config,
    stage_hash,
)


def test_70b_preset_carries_the_reconciled_card_recipe():
    cfg = load_config("llama3-70b-uf")
    rm = cfg.rm
    assert (rm.lr, rm.end_lr, rm.warmup_ratio) == (1e-5, 1e-6, 0.03)
    assert (rm.betas, rm.eps, rm.weight_decay, rm.grad_clip) == ([0.9, 0.999], 1e-8, 0.0, 1.0)
    assert (rm.total_batch_pairs, rm.epochs, cfg.data.max_length) == (512, 1, 4096)
    assert cfg.data.pad_token_id == 128255
    assert cfg.model.hub_id == "allenai/llama-3-tulu-2-70b"
    assert cfg.data.preference.split == "ultrafeedback_mean_aspects"


def test_variants_differ_only_where_they_should():
    base, literal, easylm = (
        load_config(p)
        for p in ("llama3-70b-uf", "llama3-70b-uf-card-literal", "llama3-70b-uf-easylm")
    )
    assert (literal.rm.lr, literal.rm.end_lr) == (1e-6, 0.0)
    assert easylm.rm.betas == [0.9, 0.95]
    assert literal.rm.total_batch_pairs == easylm.rm.total_batch_pairs == base.rm.total_batch_pairs
    assert config_hash(base) != config_hash(literal) != config_hash(easylm)


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert cfg.description


@pytest.mark.parametrize("preset", list_presets())
def test_to_dict_is_omegaconfs_plain_container(preset):
    """``to_dict`` (``dataclasses.asdict``, which hashes and config files are made from) equals
    OmegaConf's resolved container of the same config: value for value and type for type."""
    from omegaconf import OmegaConf

    from paper_repro.config import to_dict

    cfg = load_config(preset, ["rm.betas=[0.9,0.95]", "downstream.bon.n=8"])
    want = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    got = to_dict(cfg)
    assert got == want and repr(got) == repr(want)  # repr: 1 vs 1.0, True vs 1
    assert to_dict(cfg.resources.train_rm) == want["resources"]["train_rm"]


def test_derived_values_match_easylm_arithmetic():
    d = derived(load_config("llama3-70b-uf"))  # 60,917 pairs, 512 per update, 32 GPUs x micro 2
    assert (d.world_size, d.accumulation_steps, d.est_updates, d.est_warmup_updates) == (
        32,
        8,
        118,
        4,
    )


def test_overrides_and_stage_hashes():
    a = load_config("tiny")
    b = load_config("tiny", ["eval.bootstrap_samples=10"])
    assert b.eval.bootstrap_samples == 10
    assert stage_hash(a, "train_rm") == stage_hash(b, "train_rm")
    assert stage_hash(a, "eval_rewardbench") != stage_hash(b, "eval_rewardbench")
    assert stage_hash(a, "report") != stage_hash(b, "report")


BAD = [
    (["rm.foo=1"], "rm.foo", "unknown key"),
    (["rm.lr=abc"], "rm.lr", "could not be converted"),
    (["rm.lr=0"], "rm.lr", "positive"),
    (["rm.lr=-1e-5"], "rm.lr", "positive"),
    (["rm.warmup_ratio=1.0"], "rm.warmup_ratio", "[0, 1)"),
    (["rm.warmup_ratio=-0.1"], "rm.warmup_ratio", "[0, 1)"),
    (["rm.end_lr=1e-4"], "rm.end_lr", "cooldown"),
    (["rm.total_batch_pairs=500"], "rm.total_batch_pairs", "not divisible"),
    (["data.preference.split=ultrafeedback_mean"], "data.preference.split", "unknown split"),
    (["model.revision=null"], "model.revision", "pinned revision"),
    (["data.rewardbench.revision=null"], "data.rewardbench.revision", "pinned revision"),
    (["resources.train_rm.nodes=1"], "resources.train_rm", "GB per GPU"),
    (["rm.betas=[0.9,1.5]"], "rm.betas", "[0, 1)"),
    (["model.dtype=float16"], "model.dtype", "float16"),
    (["ppo.prompts_per_step=100"], "ppo.prompts_per_step", "not divisible"),
    (["model.trust_remote_code=true"], "model.trust_remote_code", "disabled"),
]


# Every bad numeric value a reviewer tried: rejected with the key, never run.
BAD_NUMBERS = [
    (["rm.lr=nan"], "rm.lr", "positive"),
    (["rm.lr=inf"], "rm.lr", "positive"),
    (["rm.end_lr=nan"], "rm.end_lr", ">= 0"),
    (["rm.eps=nan"], "rm.eps", "positive"),
    (["rm.grad_clip=nan"], "rm.grad_clip", "positive"),
    (["rm.weight_decay=-0.1"], "rm.weight_decay", ">= 0"),
    (["rm.epochs=0"], "rm.epochs", ">= 1"),
    (["rm.betas=[0.9,nan]"], "rm.betas", "[0, 1)"),
    (["ppo.temperature=nan"], "ppo.temperature", "positive"),
    (["ppo.temperature=0"], "ppo.temperature", "positive"),
    (["ppo.max_steps=-1"], "ppo.max_steps", ">= 1 or null"),
    (["ppo.mini_batch=0"], "ppo.mini_batch", ">= 1"),
    (["ppo.kl_coef=-5"], "ppo.kl_coef", ">= 0"),
    (["ppo.gamma=1.5"], "ppo.gamma", "[0, 1]"),
    (["ppo.lam=-inf"], "ppo.lam", "[0, 1]"),
    (["ppo.no_eos_reward=nan"], "ppo.no_eos_reward", "finite"),
    (["eval.bootstrap_samples=0"], "eval.bootstrap_samples", ">= 1"),
    (["eval.bootstrap_samples=-3"], "eval.bootstrap_samples", ">= 1"),
    (["data.heldout_fraction=nan"], "data.heldout_fraction", "[0, 1)"),
    (["resources.train_rm.gpus_per_node=-1"], "resources.train_rm.gpus_per_node", ">= 0"),
    (["resources.ppo.nodes=0"], "resources.ppo.nodes", ">= 1"),
    (["rm.zero_stage=4"], "rm.zero_stage", "ZeRO stage"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    BAD
    + [
        pytest.param(*b, marks=pytest.mark.hardening("5", f"`{b[0][0]}`"), id=b[0][0])
        for b in BAD_NUMBERS
    ],
)
def test_bad_config_names_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        load_config("llama3-70b-uf", overrides)
    assert err.value.key == key
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'llama3-70b'"):
        load_config("llama3-70b")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["validate", "llama3-70b-uf"], 0),
        (["validate", "llama3-70b-uf", "rm.lr=-1"], 2),
        (["validate", "no-such-preset"], 2),
    ],
)
def test_cli_exit_codes(args, code):
    out = subprocess.run(
        [sys.executable, "-m", "paper_repro.cli", "config", *args],
        capture_output=True,
        text=True,
    )
    assert out.returncode == code, out.stderr
    if code == 0:
        for shown in (
            "lr 1e-05",
            "end_lr 1e-06",
            "512 pairs",
            "warmup 0.03",
            "betas (0.9, 0.999)",
            "eps 1e-08",
            "max length 4096",
        ):
            assert shown in out.stdout
    else:
        assert len(out.stderr.strip().splitlines()) == 1


def test_resolve_writes_a_frozen_config_that_loads_back(tmp_path):
    out = tmp_path / "config.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "paper_repro.cli",
            "config",
            "resolve",
            "tiny",
            "rm.seed=7",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    cfg = load_config(out)
    assert cfg.rm.seed == 7 and cfg.preset == "tiny"
    assert config_hash(cfg) in out.read_text().splitlines()[0]
    assert "accumulation" not in out.read_text()  # derived values are never written back


def test_every_numeric_key_has_a_range():
    """A new numeric config key must get a range in NUMERIC_RANGES (or it escapes validation)."""
    from paper_repro.config.validate import NUMERIC_RANGES, numeric_leaves, range_key

    keys = {range_key(k) for k, _ in numeric_leaves(load_config("llama3-70b-uf"))}
    assert keys == set(NUMERIC_RANGES)


@pytest.mark.hardening("5", "malformed YAML config file: one line with file and line, exit 2")
def test_malformed_yaml_is_one_line_with_file_and_line(tmp_path):
    bad = tmp_path / "my.yaml"
    bad.write_text("preset: tiny\nrm:\n  lr: 1e-3\n   foo: [1\n")
    out = subprocess.run(
        [sys.executable, "-m", "paper_repro.cli", "config", "validate", str(bad)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"paper-repro config: config error at '{bad}:4': malformed YAML "
        "(mapping values are not allowed here)"
    ]


@pytest.mark.parametrize(
    "body, words",
    [("- a\n- b\n", "top level must be a mapping"), ("rm: [\n", "malformed YAML")],
)
def test_other_unreadable_config_files(tmp_path, body, words):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=words):
        load_config(path)


@pytest.mark.parametrize(
    "run_dir",
    [
        pytest.param(d, marks=pytest.mark.hardening("5", f"`--run-dir {d}`"))
        for d in ("results/..", "results/a b", "results/.hidden", "/")
    ],
)
def test_unsafe_run_names_are_refused_by_the_cli(run_dir, tmp_path, capsys, monkeypatch):
    from paper_repro.cli.commands import main

    monkeypatch.chdir(tmp_path)
    assert main(["download-data", "tiny", "--run-dir", run_dir]) == 2
    assert "must match" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.jsonl"))


def test_run_name_pattern_is_the_snakemake_schema_pattern():
    import yaml

    from paper_repro.provenance.paths import RUN_NAME

    schema = yaml.safe_load(
        (Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml").read_text()
    )
    assert schema["properties"]["run"]["pattern"] == f"^({RUN_NAME.pattern})?$"


def test_rm_change_re_evaluates_the_tiny_stand_in_only():
    """The tiny stand-in is trained with the rm recipe; a published reference is not."""
    for preset, reruns in (("tiny", True), ("llama3-70b-uf", False)):
        a, b = load_config(preset), load_config(preset, ["rm.lr=0.002"])
        assert (stage_hash(a, "eval_reference") != stage_hash(b, "eval_reference")) is reruns
        c = load_config(preset, ["eval.bootstrap_samples=123"])
        assert stage_hash(a, "eval_reference") != stage_hash(c, "eval_reference")


def test_hub_reference_needs_a_commit_pin():
    with pytest.raises(ConfigError, match="reference.revision"):
        load_config("llama3-70b-uf", ["reference.revision=main"])
    with pytest.raises(ConfigError, match="reference.local_path"):
        load_config("tiny", ["reference.source=local"])


@pytest.mark.parametrize(
    "override",
    [
        "rm.checkpoint_every=3",
        "ppo.checkpoint_every=2",
        "export.verify_pairs=5",
        "data.expected_pairs=123",
    ],
)
def test_settings_that_change_no_result_change_no_stage_identity(override):
    from paper_repro.config import STAGES

    a, b = load_config("tiny"), load_config("tiny", [override])
    assert a != b
    assert [stage_hash(a, s) for s in STAGES] == [stage_hash(b, s) for s in STAGES]


def test_max_length_reruns_prepare_data_but_never_the_download():
    a, b = load_config("tiny"), load_config("tiny", ["data.max_length=200"])
    assert stage_hash(a, "download_data") == stage_hash(b, "download_data")
    assert stage_hash(a, "prepare_data") != stage_hash(b, "prepare_data")
    c = load_config("tiny", ["data.rewardbench.split=train"])  # what download_data does read
    assert stage_hash(a, "download_data") != stage_hash(c, "download_data")


def test_identity_neutral_keys_exist():
    """A misspelt key would silently stay in the identity."""
    from paper_repro.config import flatten
    from paper_repro.config.schema import IDENTITY_NEUTRAL

    keys = set(flatten(load_config("tiny")))
    for stage_keys in IDENTITY_NEUTRAL.values():
        assert set(stage_keys) <= keys, set(stage_keys) - keys
