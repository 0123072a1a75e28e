"""A real one-node Slurm cluster for the session (tests/slurm/cluster.sh), torn down at the end:
queue cancelled and drained, daemons stopped by their PIDs. Needs root and the Debian packages
(`make test-slurm` runs tests/slurm/install_slurm.sh first)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).with_name("cluster.sh")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(b)]
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)}); run tests/slurm/install_slurm.sh")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons as root")
    state = tmp_path_factory.mktemp("slurm-state")
    subprocess.run(["bash", str(CLUSTER), "start", str(state)], check=True, timeout=120)
    try:
        yield state
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], check=True, timeout=180)
