#!/usr/bin/env bash
# Install a one-node Slurm's Debian packages (Debian 12: Slurm 22.05, munge 0.5). Run as root.
# `make test-slurm` calls this before `pytest -m slurm`; tests/slurm/cluster.sh starts and stops
# the daemons (no systemd: they run in the background, recorded by PID).
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_slurm.sh: ${packages[*]} already installed"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install_slurm.sh: installing ${missing[*]} needs root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' postinst scripts try to start services; without systemd that fails harmlessly,
# policy-rc.d makes it explicit (exit 101 = "action forbidden").
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_slurm.sh: installed ${missing[*]} ($(slurmctld -V))"
