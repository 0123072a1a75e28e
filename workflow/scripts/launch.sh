#!/usr/bin/env bash
# Start the ranks of a distributed stage (train_rm, ppo): one launcher per node, locally or on Slurm.
#
#   launch.sh --launchers L --procs P -- CMD [ARG...]
#
# L launcher tasks x P ranks each = world size (workflow/rules/common.smk computes both from the
# preset: on GPU nodes L = nodes and P = GPUs per node; on CPU, one launcher per rank).
#
# - No Slurm: world size 1 runs CMD itself (RANK/WORLD_SIZE/MASTER_* set for DeepSpeed);
#   otherwise `torchrun --standalone --nproc-per-node L*P`.
# - Slurm batch step (the rule's `mpi` resource keeps the shell out of the executor's own srun):
#   `srun` starts L tasks spread over the allocation's nodes; each task runs this script with
#   --task, which starts `torchrun --nnodes L --node-rank $SLURM_PROCID --nproc-per-node P` with a
#   static rendezvous at the first node of the allocation. A request for N GPUs is one task per
#   node seeing all its GPUs, never N one-GPU copies (snakemake-executor-plugin-slurm).
# - Slurm step already (a profile without `mpi`): a nested srun would block, so run in place.
#
# Signals: Slurm's `--signal=USR1@T` (slurm_extra of the rule) is delivered to every process of
# every job step, not to the batch step. Inside the step only the ranks act on it (the trainer
# checkpoints and exits); this script and torchrun ignore USR1 (an ignored signal is inherited
# through exec, the trainer installs its own handler), so the step is not torn down while the
# ranks write their checkpoint. SIGTERM (scancel, time limit) reaches torchrun, which forwards it.
#
# Orphans: the workflow `exec`s this script, and it `exec`s torchrun with PR_SET_PDEATHSIG, so
# torchrun gets SIGTERM when Snakemake (its parent) dies, however it dies; it forwards SIGTERM to the
# ranks, which checkpoint and exit. Each rank asks the same for itself (paper_repro/provenance/lock.py), in case
# torchrun itself is killed. No trainer outlives the job that started it.
set -euo pipefail

launchers=1
procs=1
task=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --launchers) launchers=$2; shift 2 ;;
        --procs) procs=$2; shift 2 ;;
        --task) task=1; shift ;;
        --) shift; break ;;
        *) echo "launch.sh: unknown option '$1' (usage: launch.sh --launchers L --procs P -- CMD...)" >&2
           exit 2 ;;
    esac
done
if [[ $# -eq 0 ]]; then
    echo "launch.sh: no command given after --" >&2
    exit 2
fi
if ! [[ $launchers =~ ^[1-9][0-9]*$ && $procs =~ ^[1-9][0-9]*$ ]]; then
    echo "launch.sh: --launchers and --procs must be positive integers (got '$launchers', '$procs')" >&2
    exit 2
fi
world=$((launchers * procs))

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# exec "$@" with PR_SET_PDEATHSIG=SIGTERM (kept across exec): it dies with this script's parent.
exec_with_parent() {
    exec python -c '
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent is already gone
    sys.exit(128 + signal.SIGTERM)
os.execvp(sys.argv[2], sys.argv[2:])
' "$PPID" "$@"
}

run_single() {  # one process, world size 1: no launcher, but the env DeepSpeed expects
    export RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1
    export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-$(free_port)}
    exec "$@"
}

echo "launch.sh: world size $world ($launchers launcher(s) x $procs rank(s)) on $(hostname -s)" >&2

if [[ $task -eq 1 ]]; then
    # One Slurm task of the step: this node's launcher.
    trap '' USR1
    # One thread per rank unless the caller chose (torchrun only sets it for P > 1).
    cpus=${SLURM_CPUS_PER_TASK:-$procs}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((cpus / procs > 0 ? cpus / procs : 1))}
    if [[ $world -eq 1 ]]; then
        run_single "$@"
    fi
    master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    # Same port on every node without talking to each other: derived from the job id.
    port=$((20000 + SLURM_JOB_ID % 20000))
    exec_with_parent torchrun --nnodes "$launchers" --node-rank "$SLURM_PROCID" \
        --nproc-per-node "$procs" --master-addr "$master" --master-port "$port" --no-python "$@"
fi

if [[ -n ${SLURM_JOB_ID:-} && -z ${SLURM_STEP_ID:-} ]]; then
    # Slurm batch step: start the launchers as one job step.
    nodes=${SLURM_JOB_NUM_NODES:-1}
    if ((launchers % nodes)); then
        echo "launch.sh: $launchers launchers do not spread evenly over $nodes node(s)" >&2
        exit 2
    fi
    srun_args=(--ntasks "$launchers" --nodes "$nodes" --ntasks-per-node $((launchers / nodes))
               --kill-on-bad-exit=1)
    # srun no longer inherits --cpus-per-task from sbatch (Slurm >= 22.05).
    if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
        srun_args+=(--cpus-per-task "$SLURM_CPUS_PER_TASK")
    fi
    exec srun "${srun_args[@]}" bash "${BASH_SOURCE[0]}" --task --launchers "$launchers" \
        --procs "$procs" -- "$@"
fi

# Local machine, or already inside a Slurm step: everything on this node.
if [[ -n ${SLURM_STEP_ID:-} ]]; then
    trap '' USR1
fi
if [[ $world -eq 1 ]]; then
    run_single "$@"
fi
exec_with_parent torchrun --standalone --nnodes 1 --nproc-per-node "$world" --no-python "$@"
