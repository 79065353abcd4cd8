"""Reading and writing a submission's `predictions.parquet` (contract section 6 + `config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ksmith.errors import SpecError
from ksmith.leaderboard.schema import MODES, PREDICTION_COLUMNS, STAGES

_SORT = ["config", "probe_id", "stage", "mode"]


def _arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int32(), "float": pa.float64(), "bool": pa.bool_()}
    return pa.schema([(name, types[t]) for name, t in PREDICTION_COLUMNS.items()])


def _type_ok(arrow_type, expected: str) -> bool:
    import pyarrow.types as t

    if expected == "string":
        return t.is_string(arrow_type) or t.is_large_string(arrow_type)
    if expected == "int":
        return t.is_integer(arrow_type)
    if expected == "float":
        return t.is_floating(arrow_type) or t.is_integer(arrow_type)
    return t.is_boolean(arrow_type)


def read_predictions(path: str | Path, *, with_config: bool = True) -> list[dict[str, Any]]:
    """Validated rows of a predictions file; errors name the file and the column.

    `with_config=False` reads an evaluation folder's file (contract section 6, no `config`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise SpecError("missing file", file=path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise SpecError(f"not a readable parquet file ({e})", file=path) from e
    columns = dict(PREDICTION_COLUMNS)
    if not with_config:
        columns.pop("config")
    for name, expected in columns.items():
        if name not in table.column_names:
            raise SpecError("missing column", file=path, field=name)
        col = table.schema.field(name).type
        if not _type_ok(col, expected):
            raise SpecError(f"column has type {col}, expected {expected}", file=path, field=name)
        if table.column(name).null_count:
            raise SpecError("column has null values", file=path, field=name)
    rows = table.select(list(columns)).to_pylist()
    for i, row in enumerate(rows):
        if row["stage"] not in STAGES:
            raise SpecError(
                f"row {i}: stage {row['stage']!r} is not one of {STAGES}", file=path, field="stage"
            )
        if row["mode"] not in MODES:
            raise SpecError(
                f"row {i}: mode {row['mode']!r} is not one of {MODES}", file=path, field="mode"
            )
    return rows


def write_predictions(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (with `config`) sorted by (config, probe_id, stage, mode): same rows, same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    ordered = sorted(rows, key=lambda r: tuple(r[k] for k in _SORT))
    cols = {name: [r[name] for r in ordered] for name in schema.names}
    table = pa.Table.from_pydict(cols, schema=schema)
    pq.write_table(table, path, compression="zstd")
