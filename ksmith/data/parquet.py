"""Parquet files with pinned writer options, so the same rows always give the same bytes.

Nothing that varies between runs enters a file: no pandas metadata, no timestamps, no absolute
paths; compression, page layout and row-group size are fixed here. Large tables are streamed
(`RowGroupWriter`): rows are cut into row groups of exactly `ROW_GROUP_SIZE` (the last one
shorter) however they arrive, so the bytes equal those of writing the whole table at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ksmith.errors import KsmithError

ROW_GROUP_SIZE = 65_536
_WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "store_schema": True,
}
_WRITE_OPTIONS: dict[str, Any] = {**_WRITER_OPTIONS, "row_group_size": ROW_GROUP_SIZE}


def table_from_rows(schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.Table:
    """An arrow table from row tuples ordered as `schema`'s fields."""
    if rows:
        columns = [list(c) for c in zip(*rows, strict=True)]
    else:
        columns = [[] for _ in schema]
    return table_from_columns(schema, columns)


def table_from_columns(
    schema: pa.Schema, columns: Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]]
) -> pa.Table:
    """An arrow table from column lists (in schema order, or by name)."""
    if isinstance(columns, Mapping):
        columns = [columns[f.name] for f in schema]
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


def write_columns(path: str | Path, schema: pa.Schema, columns) -> int:
    """Write column lists (schema order or by name) to a parquet file; returns the row count."""
    table = table_from_columns(schema, columns)
    write_table(path, table)
    return table.num_rows


class RowGroupWriter:
    """Stream tables with one schema into a parquet file, in fixed-size row groups."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.rows = 0
        self._writer = pq.ParquetWriter(path, schema, **_WRITER_OPTIONS)
        self._pending: list[pa.Table] = []
        self._n = 0

    def write(self, table: pa.Table) -> None:
        table = pa.Table.from_arrays(table.columns, schema=self.schema)
        self._pending.append(table)
        self._n += table.num_rows
        self.rows += table.num_rows
        if self._n >= ROW_GROUP_SIZE:
            whole = pa.concat_tables(self._pending)
            cut = (self._n // ROW_GROUP_SIZE) * ROW_GROUP_SIZE
            self._writer.write_table(
                whole.slice(0, cut).combine_chunks(), row_group_size=ROW_GROUP_SIZE
            )
            rest = whole.slice(cut)
            self._pending, self._n = [rest], rest.num_rows

    def close(self) -> int:
        """Flush the last (short) row group and close; returns the rows written."""
        if self._n or not self.rows:
            whole = pa.concat_tables(self._pending) if self._pending else self.schema.empty_table()
            self._writer.write_table(whole.combine_chunks(), row_group_size=ROW_GROUP_SIZE)
        self._pending, self._n = [], 0
        self._writer.close()
        return self.rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a parquet file as dicts (list columns as Python lists)."""
    path = Path(path)
    if not path.is_file():
        raise KsmithError(f"{path}: no such file (is this a ksmith dataset folder?)")
    return pq.read_table(path).to_pylist()
