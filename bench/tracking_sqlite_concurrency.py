"""N processes log into one sqlite MLflow store at the same moment: plain MlflowClient (no lock,
no retry) on a fresh store (raw) and on a store whose schema and experiment exist (raw_warm), vs
``paper_repro.tracking.stage_run`` (flock around store, experiment and parent-run creation,
backoff on "database is locked", offline buffer). Prints failures and lost records.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tracking_sqlite_concurrency.py --procs 8 --steps 60
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

RAW = textwrap.dedent(
    """
    import sys, time
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    uri, name, steps, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start_at:
        time.sleep(0.005)
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("bench")
    exp_id = exp.experiment_id if exp else c.create_experiment("bench")
    run = c.create_run(exp_id, run_name=name)
    c.log_batch(run.info.run_id, params=[Param(f"p{i}", str(i)) for i in range(100)])
    for s in range(steps):
        ts = int(time.time() * 1000)
        c.log_batch(run.info.run_id, metrics=[Metric(k, s, ts, s) for k in ("loss", "acc", "lr")])
    c.set_terminated(run.info.run_id)
    """
)
TRACKED = textwrap.dedent(
    """
    import sys, time
    from paper_repro import tracking
    from paper_repro.config import load_config
    from paper_repro.provenance.paths import RunPaths
    run_dir, stage, steps, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    cfg = load_config("tiny", ["tracking.experiment=bench"])
    while time.time() < start_at:
        time.sleep(0.005)
    with tracking.stage_run(cfg, RunPaths(run_dir), stage) as tr:
        tr.log_params({f"p{i}": i for i in range(100)})
        for s in range(steps):
            tr.log_metrics({"loss": s, "acc": s, "lr": s}, step=s)
    """
)


def count(uri: str) -> tuple[int, int, int]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exps = [e for e in c.search_experiments() if e.name == "bench"]
    runs = [r for e in exps for r in c.search_runs([e.experiment_id], max_results=1000)]
    metrics = sum(
        len(c.get_metric_history(r.info.run_id, k)) for r in runs for k in ("loss", "acc", "lr")
    )
    return len(exps), len(runs), metrics


def trial(mode: str, procs: int, steps: int, root: Path) -> None:
    from paper_repro.config import STAGES

    db = root / mode / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    script = root / f"{mode}.py"
    script.write_text(TRACKED if mode == "tracked" else RAW)
    if mode == "raw_warm":  # schema and experiment created up front: only write contention left
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).create_experiment("bench")
    start_at = time.time() + 3 + procs * 1.5  # after every interpreter has imported mlflow
    names = [STAGES[i % len(STAGES)] for i in range(procs)]
    cmds = [
        [
            sys.executable,
            str(script),
            str(db.parent) if mode == "tracked" else uri,
            n,
            str(steps),
            str(start_at),
        ]
        for n in names
    ]
    t0 = time.time()
    ps = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    outs = [p.communicate() for p in ps]
    wall = time.time() - max(t0, start_at)
    failed = sum(p.returncode != 0 for p in ps)
    locked = sum("database is locked" in err for _, err in outs)
    buffered = len(list((db.parent / "tracking").glob("*.pending.jsonl")))
    errors = sorted(
        {
            err.strip().splitlines()[-1][:120]
            for p, (_, err) in zip(ps, outs, strict=True)
            if p.returncode != 0 and err.strip()
        }
    )
    want_runs = procs + (1 if mode == "tracked" else 0)
    try:
        exps, runs, metrics = count(uri)
        store = (
            f"experiments {exps}, runs {runs}/{want_runs}, metric points {metrics}/"
            f"{procs * steps * 3}"
        )
    except Exception as exc:  # the schema race can leave a half-migrated database behind
        store = (
            f"store unusable afterwards ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
        )
    print(
        f"{mode:8s} procs {procs}: failed {failed}, 'database is locked' in {locked} stderr, "
        f"{store}, buffered files {buffered}, {wall:.1f} s after the start signal",
        flush=True,
    )
    for e in errors:
        print(f"         error: {e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--modes", nargs="+", default=["raw", "raw_warm", "tracked"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            trial(mode, args.procs, args.steps, Path(tmp))


if __name__ == "__main__":
    main()
