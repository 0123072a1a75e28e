"""An adversarial table of bad configs, generated from the schema: for every key of
``ReproConfig`` the wrong types, out-of-range and absurd numbers, NaN/inf, booleans given as
numbers, empty strings, unknown enum values, path traversal in names and secrets that its type
allows; and bad ``config/config.yaml`` files for the Snakemake workflow. Every one must be refused
with one line naming the key (``ConfigError``: exit 2 in the CLI)."""

from __future__ import annotations

import math
import typing
from dataclasses import is_dataclass
from pathlib import Path

import pytest
import yaml

from paper_repro.config import ConfigError, ReproConfig, load_config
from paper_repro.config.validate import NUMERIC_RANGES, range_key

BASE = "llama3-70b-uf"  # hub sources: every pin and split check is live
SECRET = "hf_adversarialSecretValue"
REPO = Path(__file__).resolve().parents[2]

TYPE = ["abc", "[1]", "{a: 1}"]
NAME_ATTACKS = ["../../tmp/x", "a/b/c", "/abs/x", "''", "' '", "a b/c"]


def _leaves(cls=ReproConfig, prefix=""):
    for name, hint in typing.get_type_hints(cls).items():
        key = f"{prefix}{name}"
        if is_dataclass(hint):
            yield from _leaves(hint, key + ".")
        else:
            yield key, hint


def _number_cases(key: str, kind: type, optional: bool) -> list[str]:
    rule = NUMERIC_RANGES[range_key(key)]
    out = TYPE + ["true", "false", "nan", "inf", "-inf"] + ([] if optional else ["null"])
    if kind is int:
        out += ["1.5", "99999999999999999999999", "9" * 5000, str(2**32)]
    else:
        out += ["1e400"]
    if math.isfinite(rule.lo):
        out += [str(rule.lo - 1), str(rule.lo) if rule.lo_open else "-1e9"]
    if math.isfinite(rule.hi):
        out += [str(rule.hi + 1), str(rule.hi) if rule.hi_open else "1e9"]
    return out


def _string_cases(key: str, optional: bool) -> list[str]:
    last = key.rsplit(".", 1)[-1]
    out = ["[1]", "{a: 1}", "${oc.env:HF_TOKEN}"] + ([] if optional else ["null"])
    if key == "preset":
        out += NAME_ATTACKS + [".hidden"]
    elif "hub_id" in last:
        out += NAME_ATTACKS + ["no-slash", "a/..", "123"]
    elif last == "split":
        out += ["../x", "*", "a/b", "''", "x[0]"]
    elif "revision" in last:
        out += ["main", "''", "../x", "ABCDEF1", "0123456"]
    elif last == "local_path":
        out += ["''", "' '", '"a\\nb"']
    elif key == "tracking.experiment":
        out += ["''", "' '", '"a\\tb"', "x" * 1001]
    elif key == "tracking.uri":
        out += ["''", "'http://a b'", '"http://a\\nb"']
    return out


def cases() -> list[tuple[str, list[str]]]:
    """(key, bad values) for every key of the schema; the values are YAML as on a command line."""
    out = []
    for key, hint in _leaves():
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        origin = typing.get_origin(base)
        if base in (int, float):
            bad = _number_cases(key, base, optional)
        elif base is bool:
            bad = ["2", "0", "1", "1.5", "abc", "null", "[true]"]
        elif origin is typing.Literal:
            bad = ["bogus", "''", "1", "true", "[a]", f"{typing.get_args(base)[0]}x"]
            bad += [] if optional else ["null"]
        elif origin is list and typing.get_args(base) == (str,):  # lm-eval task names
            bad = ["abc", "null", "[null]", "['']", "['../x']", "['a b']", "[[a]]", "[mmlu,mmlu]"]
            bad += ["[]"] if key == "downstream.tasks" else ["[not_in_downstream_tasks]"]
        elif origin is list:  # betas
            bad = ["0.9", "[0.9]", "[0.9,0.99,0.999]", "[a,b]", "[true,0.9]", "[0.9,null]"]
            bad += ["null", "[nan,0.9]", "[-0.1,0.9]", "[0.9,1.0]", "[0.9,1e400]"]
        elif base is str:
            bad = _string_cases(key, optional)
        elif origin is dict:  # downstream.datasets: task -> pinned dataset
            bad = ["[1]", "5", "abc"]
        else:
            raise AssertionError(f"{key}: no bad values for type {hint}")
        out.append((key, bad))
    return out


CASES = cases()
N_CASES = sum(len(v) for _, v in CASES)


def refused(key: str, value: str) -> str | None:
    """None when ``key=value`` is refused with one line naming the key, else what happened."""
    try:
        load_config(BASE, [f"{key}={value}"])
    except ConfigError as exc:
        if "\n" in str(exc):
            return f"refused in {len(str(exc).splitlines())} lines"
        if not (exc.key == key or exc.key.startswith(f"{key}[")):
            return f"refused naming {exc.key!r}, not {key!r}"
        return None
    except Exception as exc:  # a crash is not a refusal
        return f"crashed: {type(exc).__name__}: {str(exc)[:80]}"
    return "accepted"


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        pytest.param(
            k,
            v,
            id=k,
            # ~0.1 s per value (OmegaConf builds the whole config): 1,300 values are slow.
            marks=[pytest.mark.hardening("5", f"`{k}`: {len(v)} bad values"), pytest.mark.slow],
        )
        for k, v in CASES
    ],
)
def test_every_bad_value_of_every_key_is_refused_naming_it(key, bad, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    problems = {v[:40]: why for v in bad if (why := refused(key, v))}
    assert not problems, problems


def test_the_table_covers_every_key_with_many_values():
    keys = {k for k, _ in _leaves()}
    assert {k for k, _ in CASES} == keys and len(keys) > 100
    assert N_CASES > 1000


# --------------------------------------------------------------------------- YAML files


def _bomb(levels: int = 9) -> str:
    """'Billion laughs': nine levels of nine aliases, 9^9 strings once expanded."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "preset: tiny\ndescription: x\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(
            _bomb(), "expand to more than", marks=pytest.mark.hardening("5", "YAML alias bomb")
        ),
        pytest.param(
            "preset: tiny\ndescription: &a [*a]\n",
            "an alias inside itself",
            marks=pytest.mark.hardening("5", "YAML alias inside itself"),
        ),
        pytest.param(
            "preset: tiny\nrm:\n  epochs: " + "9" * 5000 + "\n",
            "over 4,300 digits",
            marks=pytest.mark.hardening("5", "5,000-digit integer in a config file"),
        ),
        pytest.param(
            "preset: tiny\nrm:\n  packing: 2\n",
            "must be true or false",
            marks=pytest.mark.hardening("5", "boolean given as 2 in a config file"),
        ),
        pytest.param(
            "preset: tiny\ndescription: '" + "x" * (2 << 20) + "'\n",
            "larger than 1 MiB",
            marks=pytest.mark.hardening("5", "2 MiB config file"),
        ),
    ],
)
def test_hostile_config_files_are_refused_quickly(tmp_path, body, words):
    """Each is one ConfigError naming the file; the bomb used to hang the CLI (OmegaConf expands
    every alias), the long integer to crash it with a ValueError traceback."""
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.hardening("5", "YAML alias bomb in a key=value override")
def test_alias_bomb_in_an_override_is_refused():
    """One override value is a YAML document of its own: anchors and aliases work there too."""
    levels = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="expand to more than") as exc:
        load_config("tiny", ["rm.betas=[" + ", ".join(levels) + "]"])
    assert exc.value.key == "rm.betas"


@pytest.mark.hardening("5", "`preset: ../../x` in a config file: refused, nothing outside results/")
def test_preset_cannot_name_a_folder_outside_results(tmp_path, monkeypatch, capsys):
    from paper_repro.cli.commands import main
    from paper_repro.config import to_yaml

    body = to_yaml(load_config("tiny")).replace("preset: tiny", "preset: ../../escaped")
    (tmp_path / "work").mkdir()
    path = tmp_path / "work" / "c.yaml"
    path.write_text(body)
    monkeypatch.chdir(tmp_path / "work")
    assert main(["download-data", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config error at 'preset'" in err[0]
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


@pytest.mark.hardening("5", "`${oc.env:HF_TOKEN}` as the MLflow experiment name")
def test_secret_from_the_environment_never_becomes_a_name(monkeypatch, capsys):
    from paper_repro.cli.commands import main

    monkeypatch.setenv("HF_TOKEN", SECRET)
    code = main(["config", "show", "tiny", "tracking.experiment=${oc.env:HF_TOKEN}"])
    err = capsys.readouterr().err
    assert code == 2 and "HF_TOKEN" in err and SECRET not in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- Snakemake config


def _smk_base() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


SMK_BAD = [
    ("preset", ""),
    ("preset", None),
    ("preset", 5),
    ("preset", ["tiny"]),
    ("preset", "no-such-preset"),
    ("preset", "../../etc/passwd"),
    ("run", "../escape"),
    ("run", "a/b"),
    ("run", "a b"),
    ("run", ".hidden"),
    ("run", ".."),
    ("run", 5),
    ("run", None),
    ("overrides", "rm.lr=1e-5"),
    ("overrides", [1]),
    ("overrides", ["rm.lr"]),
    ("overrides", ["=1"]),
    ("overrides", ["rm.lr=abc"]),
    ("overrides", ["rm.lr=nan"]),
    ("overrides", ["preset=../../x"]),
    ("overrides", ["rm.packing=2"]),
    ("overrides", ["tracking.experiment=${oc.env:HF_TOKEN}"]),
    ("overrides", ["rm.epochs=" + "9" * 5000]),
    ("overrides", None),
    ("tracking_uri", 5),
    ("tracking_uri", None),
    ("tracking_uri", "http://a b"),
    ("tracking_uri", "http://a\nb"),
    ("gpu_type", "h100; rm -rf /"),
    ("gpu_type", "a b"),
    ("gpu_type", 5),
    ("gpu_type", None),
    ("extra_key", "x"),
    ("<missing>", "run"),
]


def smk_refusal(config: dict) -> str | None:
    """What refuses a config/config.yaml before any job: the JSON schema Snakemake validates
    with, then workflow/rules/common.smk (load_config of preset + overrides, the run name)."""
    import jsonschema

    from paper_repro.provenance.paths import RUN_NAME

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as exc:
        return f"schema: {exc.message[:80]}"
    try:
        cfg = load_config(config["preset"], list(config["overrides"]))
    except ConfigError as exc:
        return str(exc)
    if not RUN_NAME.fullmatch(config["run"] or Path(cfg.preset).stem):
        return "run name"
    return None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(
            k,
            v,
            id=f"{k}={v!r}"[:60],
            marks=pytest.mark.hardening("5", f"Snakemake `{k}: {v!r}`"[:90]),
        )
        for k, v in SMK_BAD
    ],
)
def test_bad_snakemake_configs_are_refused(key, value, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    config = _smk_base()
    if key == "<missing>":
        del config[value]
    else:
        config[key] = value
    assert smk_refusal(config) is not None
