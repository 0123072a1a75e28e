"""The parquet files prepare_data writes and later stages read (``PairData``, ``PromptData``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..provenance.io import atomic_path
from .errors import DataError

PAIR_COLUMNS = ("chosen_input_ids", "rejected_input_ids", "chosen_len", "rejected_len", "row")
PROMPT_COLUMNS = ("prompt_input_ids", "prompt_len", "row")


def _schema(kind: str):
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    if kind == "prompts":
        cols = [("prompt_input_ids", ids), ("prompt_len", pa.int32()), ("row", pa.int64())]
    else:
        cols = [
            ("chosen_input_ids", ids),
            ("rejected_input_ids", ids),
            ("chosen_len", pa.int32()),
            ("rejected_len", pa.int32()),
            ("row", pa.int64()),
        ]
        if kind == "rewardbench":
            cols += [("id", pa.int64()), ("subset", pa.string())]
    return pa.schema(cols)


def write_parquet(path: str | Path, rows: list[dict], kind: str) -> None:
    """kind: 'pairs' | 'rewardbench' | 'prompts'. Deterministic bytes for the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(kind)
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=8192)


def _list_column(table, name: str) -> list[np.ndarray]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(col))]


def _read(path: str | Path, columns: tuple[str, ...]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..provenance.verified import read_bytes

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prepared data not found (run prepare-data first)")
    table = pq.read_table(pa.BufferReader(read_bytes(path)))  # the bytes the manifest vouches for
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    return table


@dataclass
class PairData:
    """Tokenized pairs: ``chosen[i]``/``rejected[i]`` are int32 id arrays (BOS ... EOS)."""

    chosen: list[np.ndarray]
    rejected: list[np.ndarray]
    row: np.ndarray
    id: np.ndarray | None = None  # RewardBench only
    subset: list[str] | None = None  # RewardBench only

    def __len__(self) -> int:
        return len(self.chosen)


@dataclass
class PromptData:
    """Tokenized PPO prompts (left-pad them for generation; no BOS by default)."""

    input_ids: list[np.ndarray]
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def load_pairs(path: str | Path) -> PairData:
    """Read train/heldout/rewardbench parquet written by prepare_data."""
    t = _read(path, PAIR_COLUMNS)
    has_rb = "id" in t.column_names
    return PairData(
        chosen=_list_column(t, "chosen_input_ids"),
        rejected=_list_column(t, "rejected_input_ids"),
        row=t.column("row").to_numpy(),
        id=t.column("id").to_numpy() if has_rb else None,
        subset=t.column("subset").to_pylist() if has_rb else None,
    )


def load_prompts(path: str | Path) -> PromptData:
    t = _read(path, PROMPT_COLUMNS)
    return PromptData(input_ids=_list_column(t, "prompt_input_ids"), row=t.column("row").to_numpy())
