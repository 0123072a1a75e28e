"""launch.sh on real Slurm: a 2-task step forms one gloo group, and the pre-timeout signal that
the rules ask for (`--signal=USR1@T`, no `B:`) reaches the ranks through srun and torchrun, which
must not die of it themselves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "workflow" / "scripts" / "launch.sh"
PROBE = ROOT / "tests" / "workflow" / "rank_probe.py"

pytestmark = pytest.mark.slurm


def wait_until_gone(job: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
        )
        if out.stdout.strip() in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return
        time.sleep(1)
    raise AssertionError(f"job {job} still in the queue after {timeout} s")


def test_time_limit_signal_reaches_both_ranks(slurm_cluster, tmp_path):
    # Like the plugin's batch step for a rule with the `mpi` resource: 2 tasks, the rule's shell
    # in the batch script, launch.sh starting the step. --time=1 with USR1 50 s before the end:
    # Slurm sends it a few seconds after the start (its timer ticks are coarse).
    bindir = Path(sys.executable).parent
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f'export PATH={bindir}:"$PATH"\n'
        f"bash {LAUNCH} --launchers 2 --procs 1 -- python {PROBE} {tmp_path / 'ranks'} --wait-for-signal\n"
        'echo "launch.sh exit $?"\n'
    )
    job = subprocess.run(
        ["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1", "--mem=1024", "--time=1",
         "--signal=USR1@50", f"--output={tmp_path / 'slurm.log'}", str(script)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    wait_until_gone(job, timeout=120)
    log = (tmp_path / "slurm.log").read_text()
    records = [json.loads((tmp_path / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["signals"] for r in records] == [["SIGUSR1"], ["SIGUSR1"]], log
    assert [r["world_size"] for r in records] == [2, 2]
    assert [r["rank_sum"] for r in records] == [1.0, 1.0]
    assert all(r["omp_num_threads"] == "1" for r in records)
    # The ranks exited with the trainer's "checkpointed, rerun me" code; srun and torchrun
    # survived the signal and reported the ranks' failure instead of being killed by it.
    assert "launch.sh exit 1" in log, log
    assert "User defined signal" not in log, log
