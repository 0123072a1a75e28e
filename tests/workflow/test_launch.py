"""workflow/scripts/launch.sh outside Slurm: argument checks, the single-process environment, and
(slow) a real 2-rank gloo group started through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .smk import ROOT

LAUNCH = ROOT / "workflow" / "scripts" / "launch.sh"
PROBE = Path(__file__).with_name("rank_probe.py")


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(["bash", str(LAUNCH), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--launchers", "0", "--procs", "1", "--", "true"], "positive integers"),
        (["--procs", "x", "--", "true"], "positive integers"),
        (["--launchers", "1"], "no command"),
        (["--nodes", "2", "--", "true"], "unknown option '--nodes'"),
    ],
)
def test_bad_arguments_fail_with_a_message(args, message):
    proc = launch(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_world_size_one_runs_the_command_with_the_rank_environment():
    code = (
        "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
        "('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}))"
    )
    proc = launch("--launchers", "1", "--procs", "1", "--", sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("0", "0", "1")
    assert env["MASTER_ADDR"] == "127.0.0.1" and int(env["MASTER_PORT"]) > 0


def test_exit_code_of_the_command_is_kept():
    proc = launch("--launchers", "1", "--procs", "1", "--", "bash", "-c", "exit 75")
    assert proc.returncode == 75


@pytest.mark.slow
def test_two_ranks_form_one_gloo_group(tmp_path):
    proc = launch(
        "--launchers", "2", "--procs", "1", "--", sys.executable, str(PROBE), str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert [r["rank_sum"] for r in records] == [1.0, 1.0]  # 0 + 1: one group, not two copies
    assert sorted(r["local_rank"] for r in records) == [0, 1]


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.parametrize(
    "killed",
    [
        pytest.param(
            k, marks=pytest.mark.hardening("3", f"SIGKILL of {k}: every rank dies with it")
        )
        for k in ("launch.sh's parent", "torchrun")
    ],
)
def test_ranks_die_with_the_job_that_started_them(tmp_path, killed):
    """SIGKILL of the process that started launch.sh (e.g. Snakemake), or of torchrun itself:
    the kernel sends SIGTERM down the chain (PR_SET_PDEATHSIG), every rank gets it and leaves."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT)
    launch = f"bash {LAUNCH} --launchers 2 --procs 1 -- {sys.executable} {PROBE} {tmp_path} "
    launch += "--wait-for-signal --die-with-parent"
    parent = subprocess.Popen(["bash", "-c", f"{launch} & echo $! > {tmp_path}/pid; wait"], env=env)
    try:
        deadline = time.time() + 120
        while len(list(tmp_path.glob("rank-*.ready"))) < 2:
            assert time.time() < deadline and parent.poll() is None, "ranks did not start"
            time.sleep(0.2)
        ranks = [int(p.read_text()) for p in sorted(tmp_path.glob("rank-*.ready"))]
        torchrun = int((tmp_path / "pid").read_text())  # launch.sh exec'd torchrun: same pid
        os.kill(parent.pid if killed != "torchrun" else torchrun, signal.SIGKILL)
        while not all(_gone(pid) for pid in ranks):
            assert time.time() < deadline + 60, f"orphan ranks: {ranks}"
            time.sleep(0.2)
    finally:
        parent.kill()
        parent.wait()
    for r in (0, 1):  # torchrun's forwarded SIGTERM, the kernel's when torchrun is gone, or both
        signals = json.loads((tmp_path / f"rank-{r}.json").read_text())["signals"]
        assert signals and set(signals) == {"SIGTERM"}
