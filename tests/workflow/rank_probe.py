"""A stand-in rank for launcher tests: joins the gloo group the launcher set up, all-reduces its
rank, records what it saw in OUT/rank-<rank>.json, and with --wait-for-signal sleeps until SIGUSR1
or SIGTERM arrives (as the trainer does before a Slurm time limit) and exits 75 like it. With
--die-with-parent it asks for SIGTERM when its parent dies, as every stage process does."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--wait-for-signal", action="store_true")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args()
    if args.die_with_parent:
        from paper_repro.provenance.lock import die_with_parent

        die_with_parent()
    got: list[str] = []
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: got.append(signal.Signals(s).name))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    record = {"rank": rank, "world_size": world, "rank_sum": total.item(),
              "local_rank": int(os.environ["LOCAL_RANK"]), "host": socket.gethostname(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank-{rank}.ready").write_text(str(os.getpid()))
    if args.wait_for_signal:
        deadline = time.time() + 120
        while not got and time.time() < deadline:
            time.sleep(0.1)
        record["signals"] = got
    (args.out / f"rank-{rank}.json").write_text(json.dumps(record))
    os._exit(75 if got else 0)  # no process-group teardown: a preempted rank just leaves


if __name__ == "__main__":
    raise SystemExit(main())
