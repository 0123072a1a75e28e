"""Mutation check of the faithful choices: undo each one, one at a time, and see a test fail.

``bench/mutations.toml`` lists the mutations: a file, an exact snippet of it, its replacement,
the tests that must catch the change, and the faithful choice it undoes (docs/fidelity.md). This
script copies the repository (git's tracked and untracked, non-ignored files) into a scratch
folder, never touching the working tree, and for each mutation:

1. checks that the original snippet occurs exactly once in the file (otherwise the entry is
   STALE: the code moved on and the table must follow);
2. applies it in the scratch copy, runs the listed tests there (``PYTHONPATH`` = the copy), and
   restores the file;
3. reports ``caught`` with the first failing test, ``UNCAUGHT`` when they all pass, or ``ERROR``
   when pytest did not get to run them (collection error, timeout): a broken mutation is not a
   catch.

Before that, the listed tests run once unmutated (a baseline): a test that already fails
catches nothing. Prints a table and ``caught N / total M``; exits 1 unless every mutation is
caught::

    .venv/bin/python bench/mutation.py                  # all of them (`make mutation`)
    .venv/bin/python bench/mutation.py --only rm-torch-clip --jobs 1
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "bench" / "mutations.toml"
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Mutation:
    name: str
    undoes: str  # the faithful choice the change undoes, one line
    file: str  # relative to the repository root
    original: str  # must occur exactly once in ``file``
    replacement: str
    tests: tuple[str, ...]  # pytest node ids or files that must catch it


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # caught | UNCAUGHT | STALE | ERROR
    detail: str  # the catching test, or why not
    seconds: float


def load_table(path: Path = TABLE) -> list[Mutation]:
    with path.open("rb") as f:
        rows = tomllib.load(f)["mutation"]
    out = [
        Mutation(
            name=r["name"],
            undoes=r["undoes"],
            file=r["file"],
            original=r["original"],
            replacement=r["replacement"],
            tests=tuple(r["tests"]),
        )
        for r in rows
    ]
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: duplicate mutation names")
    return out


def stale_reason(m: Mutation, root: Path) -> str | None:
    """Why the entry cannot be applied to the files under ``root``, or None."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    if m.original == m.replacement:
        return "replacement equals the original"
    count = path.read_text().count(m.original)
    return None if count == 1 else f"original snippet occurs {count} times in {m.file}"


def scratch_copy(dest: Path) -> None:
    """The working tree as git sees it (tracked plus untracked, non-ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a deleted-but-tracked file is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """pytest in ``root`` on ``tests``: (exit code or None on timeout, output)."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(
            cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, ""
    return proc.returncode, proc.stdout + proc.stderr


def check_imports_from(root: Path) -> None:
    """The copy's package must be the one imported (not an editable install elsewhere)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", "import paper_repro; print(paper_repro.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the scratch copy imports paper_repro from {out}, not from {root}")


def try_mutation(m: Mutation, root: Path, timeout: float) -> Outcome:
    t0 = time.perf_counter()
    reason = stale_reason(m, root)
    if reason is not None:
        return Outcome(m, "STALE", reason, 0.0)
    path = root / m.file
    original = path.read_text()
    path.write_text(original.replace(m.original, m.replacement))
    try:
        code, out = run_tests(root, m.tests, timeout)
    finally:
        path.write_text(original)
    dt = time.perf_counter() - t0
    if code is None:
        return Outcome(m, "ERROR", f"timed out after {timeout:.0f} s", dt)
    if code == 0:
        return Outcome(m, "UNCAUGHT", "all listed tests pass", dt)
    if code == 1:  # pytest: tests ran and some failed
        failed = FAILED.findall(out)
        return Outcome(m, "caught", failed[0] if failed else "a test failed", dt)
    tail = out.strip().splitlines()[-1:] or ["no output"]
    return Outcome(m, "ERROR", f"pytest exit {code}: {tail[0]}", dt)


def print_table(outcomes: list[Outcome]) -> None:
    width = max(len(o.mutation.name) for o in outcomes)
    print(f"{'mutation':<{width}}  {'result':<8}  {'s':>6}  detail")
    for o in outcomes:
        print(f"{o.mutation.name:<{width}}  {o.status:<8}  {o.seconds:6.1f}  {o.detail}")
        if o.status != "caught":
            print(f"{'':<{width}}  undoes: {o.mutation.undoes}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    ap.add_argument("--jobs", type=int, default=2, help="mutations tested in parallel")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--list", action="store_true", help="print the table and exit")
    args = ap.parse_args(argv)

    table = load_table()
    if args.only:
        unknown = set(args.only) - {m.name for m in table}
        if unknown:
            raise SystemExit(f"unknown mutation(s): {', '.join(sorted(unknown))}")
        table = [m for m in table if m.name in args.only]
    if args.list:
        for m in table:
            print(f"{m.name}: {m.undoes} ({m.file})")
        return 0

    t_start = time.perf_counter()
    jobs = max(1, args.jobs)
    with tempfile.TemporaryDirectory(prefix="paper-repro-mutation-") as tmp:
        roots = [Path(tmp) / f"copy{i}" for i in range(jobs)]  # one copy per parallel job
        for root in roots:
            scratch_copy(root)
        check_imports_from(roots[0])
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in table for t in m.tests))
            code, out = run_tests(roots[0], tests, args.timeout * 2)
            if code != 0:
                print(out[-4000:])
                print(f"baseline: the listed tests fail without any mutation (exit {code})")
                return 1
            print(f"baseline: {len(tests)} test ids pass unmutated")
        free = list(roots)

        def work(m: Mutation) -> Outcome:
            root = free.pop()  # list.pop/append are atomic; never more workers than copies
            try:
                return try_mutation(m, root, args.timeout)
            finally:
                free.append(root)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(work, table))

    print_table(outcomes)
    caught = sum(o.status == "caught" for o in outcomes)
    print(
        f"caught {caught} / total {len(outcomes)} "
        f"({time.perf_counter() - t_start:.0f} s wall, {jobs} job(s))"
    )
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
