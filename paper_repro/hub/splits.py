"""One split of a hub dataset: its data files fetched and verified like a model snapshot, then
copied row for row into the jsonl that prepare_data validates (never parsed by ``datasets`` or
pyarrow's JSON reader, where one bad row would stop the whole file)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..data.errors import DataError
from ..data.rows import count_rows
from ..provenance.io import atomic_path
from .errors import HubError
from .snapshot import _wanted, fetch_snapshot

# Data-file formats of the upstream repos: tulu-2.5-preference-data and tulu-2.5-prompts ship
# ``data/<split>-00000-of-00001.jsonl``, reward-bench ``data/<split>-*.parquet``. A ``.json`` file
# is read as JSON lines too.
ROW_FORMATS = (".jsonl", ".json", ".parquet")


def split_patterns(split: str) -> list[str]:
    """The hub file layouts of one split (sharded ``<split>-00000-of-00001.*`` under ``data/``
    or at the top, or a single ``<split>.*``). The shard patterns start with a digit so that
    split ``a`` never picks up split ``a-b``."""
    return [f"data/{split}-[0-9]*", f"{split}-[0-9]*", f"{split}.*", f"data/{split}.*"]


def fetch_dataset_split(
    repo_id: str,
    split: str,
    revision: str | None,
    dest: str | Path,
    manifest_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """The data files of one split of a dataset repo (and its README, the dataset card), fetched,
    verified and locked exactly like a model snapshot. Returns (manifest, data files in
    ``dest``), the files sorted so shards load in order."""
    data = split_patterns(split)
    manifest = fetch_snapshot(
        repo_id,
        revision,
        dest,
        manifest_path,
        allow=[*data, "README.md"],
        repo_type="dataset",
        require=(data, f"no data file for split {split!r}"),
        cache_dir=cache_dir,
        endpoint=endpoint,
        split=split,
    )
    files = [Path(dest) / n for n in sorted(manifest["files"]) if _wanted(n, data, [])]
    return manifest, files


def local_data_files(split: str, local_path: str | Path) -> list[Path]:
    """The data files of ``local_path``: the file itself, or the files of ``split`` inside a
    folder laid out as the hub repo (``data/<split>-00000-of-00001.jsonl``, ...)."""
    p = Path(local_path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = [
            f
            for f in sorted(p.rglob("*"))
            if _wanted(str(f.relative_to(p)), split_patterns(split), [])
        ]
        if files:
            return files
        raise HubError(
            f"local_path {p}: no data file for split {split!r} ({', '.join(split_patterns(split))})"
        )
    raise HubError(f"local_path {p} does not exist")


def _unsupported(value: Any) -> dict[str, str]:
    """A parquet value JSON cannot hold (bytes, dates, decimals): kept as a marker object, so the
    row's validation in prepare_data counts it as a wrong type instead of reading a string."""
    return {"unsupported_type": type(value).__name__}


def duplicate_names(schema) -> list[str]:
    """Column and struct-field names that occur twice at one level (``a.b`` for a field).
    ``to_pylist`` turns each row into a dict, so the last of two ``chosen`` columns would
    silently replace the first."""
    import pyarrow as pa

    out, stack = [], [("", list(schema))]
    while stack:
        prefix, fields = stack.pop()
        names = [f.name for f in fields]
        out += sorted({prefix + n for n in names if names.count(n) > 1})
        for f in fields:
            t = f.type
            while getattr(t, "value_type", None) is not None:  # lists (of lists) of structs
                t = t.value_type
            if pa.types.is_struct(t):
                stack.append((f"{prefix}{f.name}.", [t.field(i) for i in range(t.num_fields)]))
    return out


def _bad_utf8(path: Path, batch, first_row: int) -> DataError:
    """The column and 1-based row of the first undecodable string of ``batch``."""
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        for i in range(len(column)):
            try:
                column[i].as_py()
            except UnicodeDecodeError:
                return DataError(
                    f"{path}: column {name!r}, row {first_row + i + 1}: invalid UTF-8 in a "
                    "string column (the parquet format requires UTF-8); nothing was written"
                )
    return DataError(f"{path}: invalid UTF-8 in a string column; nothing was written")


def _parquet_lines(path: Path):
    """One JSON line per row of a parquet file, read batch by batch (never the whole table).
    A file that breaks the format (duplicate column names, invalid UTF-8 in a string column) is a
    DataError naming the file, not a row to count: it is not a table of rows at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        if dup := duplicate_names(pf.schema_arrow):
            raise DataError(
                f"{path}: duplicate column names {dup} (a reader would keep only the last); "
                "nothing was written"
            )
        done = 0
        for batch in pf.iter_batches(batch_size=1024):
            try:
                rows = batch.to_pylist()
            except UnicodeDecodeError:
                raise _bad_utf8(path, batch, done) from None
            for row in rows:
                line = json.dumps(row, ensure_ascii=False, sort_keys=True, default=_unsupported)
                yield (line + "\n").encode("utf-8", "surrogatepass")
            done += len(rows)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None


def copy_rows(files: list[Path], dest: str | Path, expected: int | None = None) -> int:
    """Write the rows of ``files`` (jsonl copied byte for byte, parquet converted row by row) to
    the jsonl ``dest`` through a temporary name; returns the row count. Nothing is parsed here:
    prepare_data validates and counts every row, whatever the source. With ``expected``, any other
    count is a DataError and ``dest`` is left as it was."""
    formats = {f.suffix for f in files}
    if not formats <= set(ROW_FORMATS):
        raise HubError(f"data files {[str(f) for f in files]}: need {', '.join(ROW_FORMATS)}")
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            for f in files:
                if f.suffix == ".parquet":
                    out.writelines(_parquet_lines(f))
                    continue
                with open(f, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                if f.stat().st_size and not _ends_with_newline(f):
                    out.write(b"\n")  # the next file's first row starts a new line
        n = count_rows(tmp)
        if expected is not None and n != expected:
            raise DataError(
                f"{', '.join(map(str, files))}: {n} rows, expected {expected} "
                "(a truncated or wrong file); nothing was written"
            )
    return n


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
