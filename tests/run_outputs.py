"""Compare two run folders of the same config file by file: what a code change that should not
change results (a refactor, a move) must leave equal. Timings, dates, code versions and the run's
own absolute path are masked; everything else (weights, parquet, JSON values, report text) must
be equal byte for byte or value for value."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# Not results: MLflow's own store and our books of it, logs, Snakemake benchmarks, stage locks
# (pid, time), and checkpoints (train_rm does not seed the global RNGs: their RNG files differ
# per process).
SKIPPED = ("tracking", "mlflow.db", "mlruns", "mlartifacts", "logs", "benchmarks", "checkpoints")
SKIPPED_NAMES = (".lock",)
# Records of records: the sha256 values in manifests and identities hash files that hold
# timings (metrics.jsonl, summary.json); those files are compared themselves, masked.
DIGEST_FILES = ("manifest.json", "identity.json", "provenance.json")
HEX_DIGEST = re.compile(r"^[0-9a-f]{16}$|^[0-9a-f]{64}$")
VOLATILE_KEY = re.compile(
    r"(time|seconds|elapsed|wall|date|started|finished|created|duration|per_s|rate_|throughput|"
    r"^code$|code_version|git_commit|run_id|hostname|^pid$|_s$|^stat$)",
    re.IGNORECASE,
)
CODE_PATH = re.compile(r"/[^\s'\"]*/paper_repro/")
# a table row whose label names a time (markdown `| wall_s | 35.8 |`, LaTeX `wall time (s) & 35.8`)
TIMED_CELL = re.compile(r"((?:wall|time|seconds|elapsed)[^|&\n]*[|&]\s*)[-+0-9.e]+")
VOLATILE_TEXT = [
    re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"),
    re.compile(r"\b\d+(\.\d+)?\s?(s|ms|min|h|seconds|minutes|hours)\b"),
    re.compile(rb"/(CreationDate|ModDate) ?\(D:[^)]*\)".decode()),
]


def files(run: Path) -> dict[str, Path]:
    """Relative path -> file, for everything in the run folder that is a result."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run)
        if (
            p.is_file()
            and rel.parts[0] not in SKIPPED
            and p.name not in SKIPPED_NAMES
            and "__pycache__" not in rel.parts
        ):
            out[rel.as_posix()] = p
    return out


def code_versions(run: Path) -> set[str]:
    """The code versions the run's stage identities record (masked in free text)."""
    found = set()
    for ident in run.glob("*/identity.json"):
        found.update(re.findall(r'"code(?:_version)?": "([0-9a-f]{8,64})"', ident.read_text()))
    return found


def _masked_json(value: Any, digests: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            k: "<volatile>" if VOLATILE_KEY.search(k) else _masked_json(v, digests)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked_json(v, digests) for v in value]
    if digests and isinstance(value, str) and HEX_DIGEST.match(value):
        return "<digest>"
    return value


def _masked_text(text: str, run: Path, codes: set[str]) -> str:
    text = text.replace(str(run.resolve()), "<run>").replace(str(run), "<run>")
    text = CODE_PATH.sub("<code>/paper_repro/", text)  # the package folder each run imported
    for code in codes:
        text = text.replace(code, "<code>")
    text = TIMED_CELL.sub(r"\1<volatile>", text)
    for pattern in VOLATILE_TEXT:
        text = pattern.sub("<volatile>", text)
    return text


def _normal(path: Path, run: Path, codes: set[str]) -> Any:
    data = path.read_bytes()
    try:
        text = data.decode()
    except UnicodeDecodeError:
        if path.suffix == ".pdf":  # dates live in the PDF's info dictionary, in latin-1
            return _masked_text(data.decode("latin-1"), run, codes)
        return data
    text = _masked_text(text, run, codes)
    if path.suffix == ".json":
        return _masked_json(json.loads(text), digests=path.name in DIGEST_FILES)
    if path.suffix == ".jsonl":
        return [_masked_json(json.loads(line)) for line in text.splitlines() if line.strip()]
    return text


def differences(a: Path, b: Path) -> list[str]:
    """What differs between run folders ``a`` and ``b`` (empty: the same results)."""
    fa, fb = files(a), files(b)
    out = [f"only in {a}: {r}" for r in sorted(set(fa) - set(fb))]
    out += [f"only in {b}: {r}" for r in sorted(set(fb) - set(fa))]
    ca, cb = code_versions(a), code_versions(b)
    for rel in sorted(set(fa) & set(fb)):
        if _normal(fa[rel], a, ca) != _normal(fb[rel], b, cb):
            out.append(f"differs: {rel}")
    return out
