"""Parquet files with pinned writer options, so the same rows always give the same bytes.

Nothing that varies between runs enters a file: no pandas metadata, no timestamps, no absolute
paths; compression, page layout and row-group size are fixed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ksmith.errors import KsmithError

ROW_GROUP_SIZE = 65_536
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "row_group_size": ROW_GROUP_SIZE,
    "store_schema": True,
}


def table_from_rows(schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.Table:
    """An arrow table from row tuples ordered as `schema`'s fields."""
    if rows:
        columns = [list(c) for c in zip(*rows, strict=True)]
    else:
        columns = [[] for _ in schema]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(path: str | Path, table: pa.Table) -> None:
    """Write `table` to `path` (parents created) with the pinned options."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **_WRITE_OPTIONS)


def write_rows(path: str | Path, schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> int:
    """Write row tuples (ordered as `schema`) to a parquet file; returns the row count."""
    write_table(path, table_from_rows(schema, rows))
    return len(rows)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a parquet file as dicts (list columns as Python lists)."""
    path = Path(path)
    if not path.is_file():
        raise KsmithError(f"{path}: no such file (is this a ksmith dataset folder?)")
    return pq.read_table(path).to_pylist()
