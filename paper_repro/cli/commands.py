"""``paper-repro``: one subcommand per pipeline stage, plus config, render and plan.

Every stage subcommand takes the same arguments::

    paper-repro <stage> CONFIG [key=value ...] [--run-dir DIR]

CONFIG is a preset name (``paper-repro config list``) or a resolved YAML file; the run directory
defaults to ``results/<preset>``. A stage is spelled with a hyphen or as in the DAG
(``train-rm`` or ``train_rm``). ``paper-repro <command> --help`` says what it reads and writes.
Heavy imports happen inside the stage, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from pathlib import Path

from .. import __version__
from ..config import STAGES, ConfigError, derived, list_presets, load_config, to_yaml
from ..config import config_hash as _hash
from ..errors import EXIT_USER_ERROR, DiskFullError, ReproError
from ..provenance.paths import RUN_NAME
from .help import STAGE_HELP, TOOL_HELP


def _stage_cmd(stage: str) -> str:
    return stage.replace("_", "-")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="preset name or resolved config YAML")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")


def _run_dir(args: argparse.Namespace, cfg) -> Path:
    run_dir = Path(args.run_dir) if args.run_dir else Path("results") / cfg.preset
    check_run_name(run_dir.name)
    return run_dir


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "list":
        print("\n".join(list_presets()))
        return 0
    cfg = load_config(args.config, args.overrides)
    text = to_yaml(cfg)
    if args.action == "resolve":
        from ..provenance.io import write_text

        out = Path(args.out) if args.out else None
        if out:
            write_text(out, f"# config hash: {_hash(cfg)}\n" + text)
            print(f"wrote {out} (hash {_hash(cfg)})")
            return 0
    if args.action in ("show", "resolve"):
        print(f"# config hash: {_hash(cfg)}\n{text}", end="")
    d = derived(cfg)
    r = cfg.rm
    print(
        f"# {cfg.preset}: valid\n"
        f"# rm: lr {r.lr:g} -> end_lr {r.end_lr:g}, warmup {r.warmup_ratio:g}, betas ({r.betas[0]:g}, "
        f"{r.betas[1]:g}), eps {r.eps:g}, weight decay {r.weight_decay:g}, clip {r.grad_clip:g}, "
        f"{r.total_batch_pairs} pairs per update, {r.epochs} epoch(s), max length {cfg.data.max_length}\n"
        f"# derived (not in the config): world size {d.world_size}, accumulation {d.accumulation_steps}, "
        f"~{d.est_updates} updates with ~{d.est_warmup_updates} warmup "
        f"(from {cfg.data.expected_pairs} pairs before filtering)"
    )
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from ..progress import quiet_library_bars
    from ..provenance.paths import RunPaths

    quiet_library_bars()
    pair = getattr(args, "policy", None) or getattr(args, "rm", None)
    if getattr(args, "out", None) and not (getattr(args, "model", None) or pair):
        raise ConfigError("--out", "only with --model (the stage writes to its run folder)")
    cfg = load_config(args.config, args.overrides)
    if pair:
        if not (args.policy and args.rm):
            raise ConfigError("--policy/--rm", "give both a policy and a reward-model folder")
        from ..downstream.pair import run_pair

        return run_pair(cfg, args.policy, args.rm, args.out)
    paths = RunPaths(_run_dir(args, cfg))
    if getattr(args, "model", None):
        from ..rewardbench.model import parse_model_spec
        from ..stages.eval_rewardbench import run_model

        given = any(o.split("=", 1)[0].strip() == "eval.input_mode" for o in args.overrides)
        spec = parse_model_spec(args.model)
        return run_model(cfg, paths, spec, args.out, input_mode_given=given)
    from .runner import run_stage

    return run_stage(args.stage, cfg, paths)


def cmd_tool(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    module = importlib.import_module(f"paper_repro.{args.tool}")
    return int(module.run(cfg, args) or 0)


def cmd_module(args: argparse.Namespace) -> int:
    """A command that takes no config: ``paper_repro.<module>.run_cli(args)``."""
    return int(importlib.import_module(f"paper_repro.{args.module}").run_cli(args) or 0)


def _sub(sub, name: str, info, aliases=()) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        aliases=list(aliases),
        help=info.summary,
        description=info.summary,
        epilog=info.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paper-repro",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _sub(sub, "config", TOOL_HELP["config"])
    p.add_argument("action", choices=["show", "validate", "resolve", "list"])
    p.add_argument("config", nargs="?", default="tiny")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", help="resolve: write the frozen YAML here")
    p.set_defaults(func=cmd_config)

    for stage in STAGES:
        cmd = _stage_cmd(stage)
        p = _sub(sub, cmd, STAGE_HELP[stage], aliases=[stage] if stage != cmd else [])
        _add_config_args(p)
        p.add_argument("--run-dir", help="results folder of this run (default results/<preset>)")
        if stage == "eval_rewardbench":
            p.add_argument(
                "--model",
                metavar="PATH_OR_HUB_ID@REVISION",
                help="evaluate this RM instead of the run's export: a local Hugging Face folder or "
                "ORG/NAME@COMMIT (downloaded at that commit, verified); RewardBench pairs come "
                "from the run's download_data/",
            )
            p.add_argument(
                "--out", help="--model: output folder (default results/rewardbench/<name>)"
            )
        if stage == "eval_downstream":
            p.add_argument("--policy", metavar="DIR", help="evaluate this policy (HF folder)")
            p.add_argument("--rm", metavar="DIR", help="best-of-N selected by this RM (HF folder)")
            p.add_argument("--out", help="--policy/--rm: output folder")
        p.set_defaults(func=cmd_stage, stage=stage)

    p = _sub(sub, "render", TOOL_HELP["render"])
    _add_config_args(p)
    p.add_argument(
        "--split", default="train", choices=["train", "heldout", "rewardbench", "ppo_prompts"]
    )
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--run-dir", help="results folder of this run (default results/<preset>)")
    p.set_defaults(func=cmd_tool, tool="data.render")

    p = _sub(sub, "plan", TOOL_HELP["plan"])
    _add_config_args(p)
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation")
    p.add_argument(
        "--gpu-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100 SXM)"
    )
    p.add_argument("--run-dir", help="read prepared token counts here (default results/<preset>)")
    p.add_argument("--stage", default="train_rm", choices=["train_rm", "ppo"], help="what to plan")
    p.add_argument("--hbm-tbps", type=float, default=3.35, help="ppo: GPU memory bandwidth, TB/s")
    p.add_argument(
        "--decode-efficiency", type=float, default=0.6, help="ppo: share of it decoding reaches"
    )
    p.add_argument(
        "--allgather-gbps", type=float, default=40.0, help="ppo: all-gather GB/s per GPU"
    )
    p.set_defaults(func=cmd_tool, tool="plan.train_rm")

    p = _sub(sub, "prune", TOOL_HELP["prune"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="results folder of a run")
    p.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    p.set_defaults(func=cmd_module, module="training.prune")

    p = _sub(sub, "push-to-hub", TOOL_HELP["push-to-hub"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="results folder of a run")
    p.add_argument("repo_id", metavar="REPO_ID", help="NAMESPACE/NAME on the hub; no default")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to commit to (created from main when missing)")
    p.set_defaults(func=cmd_module, module="hub.push")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure a person can act on (``errors.ReproError``, an OSError such as
    a full disk or a missing file, a corrupt JSON file) is one line on stderr and exit code 2;
    ``PAPER_REPRO_TRACEBACK=1`` shows the traceback instead. Output is credential-redacted."""
    from ..tracking.redact import RedactingStream

    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        args = parse_args(argv)
        try:
            return args.func(args)
        except (ReproError, OSError, json.JSONDecodeError) as exc:
            if os.environ.get("PAPER_REPRO_TRACEBACK") == "1":
                raise
            print(f"paper-repro {args.command}: {user_message(exc, args)}", file=sys.stderr)
            return EXIT_USER_ERROR
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order (``CONFIG --model DIR eval.x=y`` as well
    as ``CONFIG eval.x=y --model DIR``). argparse fills a ``nargs="*"`` positional once, from the
    first run of positionals only, and calls the rest unrecognized; those that are overrides
    join the list in the order given, anything else is still an error."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        loose = [a for a in extra if a.startswith("-") or "=" not in a]
        if loose or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(loose or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def check_run_name(name: str) -> None:
    """A run folder name is one safe path component (no "/", "..", spaces): it becomes a
    results/ folder and part of MLflow names (the Snakemake schema uses the same pattern)."""
    if not RUN_NAME.fullmatch(name):
        raise ConfigError("--run-dir", f"run name {name!r} must match {RUN_NAME.pattern}")


def user_message(exc: BaseException, args: argparse.Namespace) -> str:
    """One line naming what failed and where."""
    if isinstance(exc, OSError) and not isinstance(exc, ReproError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            exc = DiskFullError(exc.filename or getattr(args, "run_dir", None) or Path.cwd())
        elif exc.filename is not None:
            return f"{exc.filename}: {exc.strerror or exc}"
    elif isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__
