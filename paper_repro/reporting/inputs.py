"""Read the stage outputs the report is built from (formats: docs/architecture.md).

Every file is optional here: the report says which ones are missing instead of crashing, and a
malformed file is an error that names the file and line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError, ReproError
from ..provenance.io import parse_json
from ..provenance.paths import RunPaths
from ..provenance.verified import read_bytes


class ReportInputError(ReproError, ValueError):
    pass


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(read_bytes(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = parse_json(line, f"{path}:{i}")
        except CorruptFileError as exc:
            raise ReportInputError(str(exc)) from None
        if not isinstance(row, dict):
            raise ReportInputError(f"{path}:{i}: expected an object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _json(path: Path) -> Any:
    try:
        return parse_json(read_bytes(path), path)
    except CorruptFileError as exc:
        raise ReportInputError(str(exc)) from None


@dataclass
class ReportInputs:
    data_report: dict[str, Any] | None = None
    train_metrics: list[dict[str, Any]] | None = None
    train_summary: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    pairs: dict[str, list] | None = None  # columns of eval_rewardbench/pairs.parquet
    reference_scores: dict[str, Any] | None = None  # eval_reference/scores.json
    reference_pairs: dict[str, list] | None = None  # eval_reference/pairs.parquet
    ppo_metrics: list[dict[str, Any]] | None = None
    ppo_summary: dict[str, Any] | None = None
    downstream: dict[str, Any] | None = None  # eval_downstream/results.json
    rm_parameters: int | None = None  # exact, from export_rm/model's safetensors headers
    read: list[Path] = field(default_factory=list)  # files actually read (for provenance)
    missing: list[Path] = field(default_factory=list)


def series(rows: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    """(x, y) over the rows that have a numeric ``y``, sorted by x; when a resumed job wrote a
    step twice, its last line wins."""
    pts = {r[x]: r[y] for r in rows if isinstance(r.get(y), int | float) and x in r}
    xs = sorted(pts)
    return xs, [pts[k] for k in xs]


def headline(inp: ReportInputs) -> dict[str, float]:
    """The numbers pipelines are compared by (the parent MLflow run's metrics): RewardBench Score
    and sections, held-out accuracy, PPO held-out reward before and after, final KL."""
    out: dict[str, Any] = {}
    if inp.scores:
        out["rewardbench.score"] = inp.scores["score"]["score"]
        for name, est in inp.scores["sections"].items():
            out[f"rewardbench.{name.lower().replace(' ', '_')}"] = est["score"]
    if inp.train_summary:
        out["heldout_accuracy"] = inp.train_summary.get("heldout_accuracy")
    if inp.ppo_summary:
        out["ppo.heldout_reward_before"] = inp.ppo_summary.get("eval_reward_before")
        out["ppo.heldout_reward_after"] = inp.ppo_summary.get("eval_reward_after")
        out["ppo.kl"] = inp.ppo_summary.get("kl_final")
    return {k: v for k, v in out.items() if isinstance(v, int | float)}


def load_inputs(paths: RunPaths) -> ReportInputs:
    inp = ReportInputs()

    def take(path: Path, reader):
        if not path.is_file():
            inp.missing.append(path)
            return None
        inp.read.append(path)
        return reader(path)

    inp.data_report = take(paths.data_report, _json)
    inp.train_metrics = take(paths.train_metrics, read_jsonl)
    inp.train_summary = take(paths.train_summary, _json)
    inp.scores = take(paths.eval_scores, _json)
    inp.comparison = take(paths.eval_comparison, _json)
    inp.pairs = take(paths.eval_pairs, _read_pairs)
    inp.rm_parameters = parameter_count(paths.rm_model)
    ref = paths.eval_files("eval_reference")
    inp.reference_scores = take(ref.scores, _json)
    inp.reference_pairs = take(ref.pairs, _read_pairs)
    inp.ppo_metrics = take(paths.ppo_metrics, read_jsonl)
    inp.ppo_summary = take(paths.ppo_summary, _json)
    inp.downstream = take(paths.downstream_results, _json)
    _check(inp, paths)
    return inp


def parameter_count(folder: Path) -> int | None:
    """Parameters of the model in ``folder``, exactly: the tensor shapes in the safetensors
    headers (8-byte little-endian length, then JSON); no weights are read."""
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            header = parse_json(fh.read(int.from_bytes(fh.read(8), "little")), f)
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def _read_pairs(path: Path) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(read_bytes(path)))  # the bytes its manifest lists
    need = {"id", "subset", "reward_chosen", "reward_rejected"}
    if missing := need - set(table.column_names):
        raise ReportInputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _check(inp: ReportInputs, paths: RunPaths) -> None:
    """The keys the tables read; a stage that wrote something else fails here, by name."""
    for scores, path in (
        (inp.scores, paths.eval_scores),
        (inp.reference_scores, paths.eval_files("eval_reference").scores),
    ):
        for key in ("subsets", "sections", "score") if scores is not None else ():
            if key not in scores:
                raise ReportInputError(f"{path}: missing key '{key}'")
    if inp.comparison is not None and not isinstance(inp.comparison.get("rows"), list):
        raise ReportInputError(f"{paths.eval_comparison}: missing list 'rows'")
    if inp.train_metrics is not None:
        for i, row in enumerate(inp.train_metrics, start=1):
            if "update" not in row:
                raise ReportInputError(f"{paths.train_metrics}:{i}: no 'update' field")
    if inp.ppo_metrics is not None:
        for i, row in enumerate(inp.ppo_metrics, start=1):
            if "step" not in row:
                raise ReportInputError(f"{paths.ppo_metrics}:{i}: no 'step' field")
