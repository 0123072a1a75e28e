"""The command line a person meets first: --version, each subcommand's help (what it reads and
writes, an example), and one stage name accepted in both spellings."""

from __future__ import annotations

import pytest

from paper_repro import __version__
from paper_repro.cli import commands as cli
from paper_repro.cli.help import STAGE_HELP, TOOL_HELP
from paper_repro.config import STAGES


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"paper-repro {__version__}"


@pytest.mark.parametrize("command", [*(s.replace("_", "-") for s in STAGES), *TOOL_HELP])
def test_every_subcommand_help_says_what_it_reads_and_writes(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    for label in ("reads:", "writes:", "example: paper-repro "):
        assert label in out, (command, label)
    example = out.split("example: ", 1)[1].split()
    assert example[1] in (command, command.replace("-", "_"))


def test_every_stage_has_help_and_nothing_else_does():
    assert set(STAGE_HELP) == set(STAGES)


@pytest.mark.parametrize("stage", [s for s in STAGES if "_" in s])
def test_underscore_spelling_is_the_same_command(stage):
    parser = cli.build_parser()
    a = parser.parse_args([stage, "tiny", "--run-dir", "x"])
    b = parser.parse_args([stage.replace("_", "-"), "tiny", "--run-dir", "x"])
    assert a.stage == b.stage == stage and a.func is b.func is cli.cmd_stage


def test_model_option_only_on_eval_rewardbench():
    parser = cli.build_parser()
    args = parser.parse_args(["eval_rewardbench", "tiny", "--model", "org/x@0123456"])
    assert args.model == "org/x@0123456" and args.out is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train-rm", "tiny", "--model", "org/x@0123456"])


def test_out_without_model_is_refused(capsys):
    assert cli.main(["eval-rewardbench", "tiny", "--out", "somewhere"]) == 2
    assert "'--out': only with --model" in capsys.readouterr().err


def _example_argv(command: str) -> list[str]:
    """The example of ``command``'s --help as a user types it (up to a shell ``&&``)."""
    import shlex

    from paper_repro.cli.help import STAGE_HELP, TOOL_HELP

    info = {**STAGE_HELP, **TOOL_HELP}[
        command.replace("-", "_") if command in {s.replace("_", "-") for s in STAGES} else command
    ]
    words = shlex.split(info.example.split("&&")[0])
    assert words[0] == "paper-repro"
    return words[1:]


@pytest.mark.parametrize("command", [*(s.replace("_", "-") for s in STAGES), *TOOL_HELP])
def test_every_help_example_parses_as_written(command):
    """Every example parses (overrides after options included) and names a valid preset, valid
    overrides and, for --model, a valid model spec (hub examples need the hub to run)."""
    from paper_repro.config import load_config
    from paper_repro.rewardbench.model import parse_model_spec

    args = cli.parse_args(_example_argv(command))
    if hasattr(args, "config"):  # prune and push-to-hub take a run folder, not a config
        load_config(args.config, args.overrides)
    if getattr(args, "model", None):
        spec = parse_model_spec(args.model)
        assert spec.repo_id and spec.revision


@pytest.mark.parametrize("command", ["config", "plan", "download-data"])
def test_offline_help_examples_run_as_written(command, tmp_path, monkeypatch, capsys):
    """The examples that need neither the hub nor a trained model run as printed (in an empty
    folder: results/ lands there)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(_example_argv(command)) == 0
    assert capsys.readouterr().out


def test_overrides_after_options_are_overrides():
    args = cli.parse_args(
        ["eval-rewardbench", "tiny", "rm.seed=1", "--model", "x", "eval.input_mode=x", "--out", "o"]
    )
    assert args.overrides == ["rm.seed=1", "eval.input_mode=x"] and args.out == "o"
    with pytest.raises(SystemExit):
        cli.parse_args(["eval-rewardbench", "tiny", "--model", "x", "not-an-override"])
    with pytest.raises(SystemExit):
        cli.parse_args(["eval-rewardbench", "tiny", "--bogus", "a=b"])
