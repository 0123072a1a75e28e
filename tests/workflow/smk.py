"""Helpers for the workflow tests: run the repository's Snakefile with another working directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def snakemake(
    workdir: Path,
    *args: str,
    timeout: float = 300,
    check: bool = True,
    root: Path = ROOT,
    **env: str,
) -> subprocess.CompletedProcess:
    """`snakemake` on the repository's Snakefile and config/config.yaml (or those of a copy of
    the repository at ``root``), outputs under workdir."""
    cmd = [str(SNAKEMAKE), "-s", str(root / "Snakefile"), "-d", str(workdir),
           "--configfile", str(root / "config" / "config.yaml"), *args]  # fmt: skip
    if root != ROOT:  # the Snakefile imports paper_repro from its own folder first
        env = {"PYTHONPATH": str(root), **env}
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def repo_copy(dest: Path) -> Path:
    """What the workflow reads of the repository (Snakefile, workflow/, config/, the package),
    copied to ``dest`` so that a test can edit code."""
    import shutil

    for name in ("Snakefile", "workflow", "config", "paper_repro", "environment.yml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def config_arg(**values: object) -> list[str]:
    """`--config key=value ...` with lists as JSON (Snakemake parses the values as YAML)."""
    return [
        "--config",
        *(f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in values.items()),
    ]


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def job_resources(output: str, rule: str) -> dict[str, str]:
    """The `resources:` line of a rule's job in a dry run, as strings."""
    block = output.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
    line = re.search(r"^\s+resources: (.*)$", block, re.M)[1]
    return dict(item.split("=", 1) for item in line.split(", "))


def job_shell(output: str, rule: str) -> str:
    block = output.split(f"rule {rule}:", 1)[1]
    return re.search(r"^Shell command: (.*)$", block, re.M)[1]
