#!/usr/bin/env bash
# Start or stop a real one-node Slurm cluster for tests (root, no systemd, no cgroups).
#
#   tests/slurm/cluster.sh start STATE_DIR   # writes STATE_DIR/slurm.conf, starts munged,
#                                            # slurmctld and slurmd, records their PIDs
#   tests/slurm/cluster.sh stop STATE_DIR    # scancel, wait for an empty queue, TERM each PID
#
# The config goes to /etc/slurm/slurm.conf (Snakemake's Slurm job step drops SLURM_* variables,
# SLURM_CONF included, before its inner srun); one written by anything else is never replaced.
# State, spool and logs live in STATE_DIR. Settings follow "Real Slurm on this
# machine"; MinJobAge=300 keeps finished jobs visible to `squeue` (the profile's status command).
set -euo pipefail

action=${1:?usage: cluster.sh start|stop STATE_DIR}
state=${2:?usage: cluster.sh start|stop STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)
SLURM_CONF=/etc/slurm/slurm.conf
MARKER="# Written by tests/slurm/cluster.sh"
pids=$state/pids

log() { echo "cluster.sh: $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "timed out after ${seconds}s waiting for $what"
    return 1
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already answering; reusing it"
        return
    fi
    # munged refuses to run as root with the packaged key: run it as the munge user.
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    setpriv --reuid munge --regid munge --init-groups munged -F >"$state/munged.log" 2>&1 &
    echo "munged $!" >>"$pids"
    wait_for 20 "munged" bash -c 'munge -n </dev/null | unmunge'
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem - 1024))  # leave 1 GiB to the daemons
    mkdir -p "$state/spool/ctld" "$state/spool/d" "$state/log" /etc/slurm
    if [[ -e $SLURM_CONF ]] && ! grep -q "^$MARKER" "$SLURM_CONF"; then
        log "$SLURM_CONF exists and was not written by this script; not touching a real cluster"
        exit 1
    fi
    cat >"$SLURM_CONF" <<CONF
$MARKER: a throwaway one-node cluster for the Slurm test suite.
ClusterName=paperrepro
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
KillWait=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
DefMemPerCPU=$((mem / cpus))
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    if [[ -f $pids ]] && grep -q slurmctld "$pids"; then
        log "already started (see $pids); stop it first"
        exit 1
    fi
    if [[ -e $SLURM_CONF ]] && timeout 5 scontrol ping 2>/dev/null | grep -q UP; then
        log "a Slurm controller already answers for $SLURM_CONF; not starting a second cluster"
        exit 1
    fi
    : >"$pids"
    start_munge
    write_conf
    slurmctld -D -i -f "$SLURM_CONF" >"$state/log/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >>"$pids"
    wait_for 30 "slurmctld" scontrol ping
    slurmd -D -f "$SLURM_CONF" >"$state/log/slurmd.out" 2>&1 &
    echo "slurmd $!" >>"$pids"
    wait_for 30 "node idle" bash -c 'sinfo -h -o %t | grep -qx idle'
    log "up: $(sinfo -h -o '%P %D %t %c CPUs %m MB') ($SLURM_CONF, state in $state)"
}

stop() {
    if [[ ! -f $pids ]]; then
        log "nothing to stop ($pids missing)"
        return
    fi
    if scontrol ping >/dev/null 2>&1; then
        scancel --user "$(id -un)" >/dev/null 2>&1 || true
        wait_for 60 "an empty queue" bash -c '[[ -z $(squeue -h -o %i) ]]' || true
    fi
    # Reverse start order: slurmd, slurmctld, then munged (only the PIDs this script started).
    tac "$pids" | while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                log "$name ($pid) ignored TERM for 10 s; sending KILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        log "stopped $name ($pid)"
    done
    rm -f "$pids"
    if grep -q "^$MARKER" "$SLURM_CONF" 2>/dev/null; then rm -f "$SLURM_CONF"; fi
}

case $action in
    start) start ;;
    stop) stop ;;
    *) log "unknown action '$action' (start|stop)"; exit 2 ;;
esac
