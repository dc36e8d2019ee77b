"""Writing report tables: a terminal table, CSV, JSON or Parquet, money kept exact.

Every report turns into a :class:`Table` (columns and rows of plain values). Money is a
``Decimal`` in the table and stays exact in every format: CSV and JSON write it as a plain
decimal string (``"229.978759"``, never a float), Parquet as a ``decimal128`` column whose scale
is the largest number of decimal places in that column. Unknown values (an unpriced call's cost)
are empty in CSV, ``null`` in JSON and Parquet, and ``unknown`` in the terminal table.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from tokenward.errors import ConfigError, MissingDependency
from tokenward.numbers import plain

__all__ = ["FORMATS", "Table", "to_jsonable", "write_table"]

FORMATS = ("table", "csv", "json", "parquet")


@dataclass
class Table:
    """A report as rows and columns.

    Attributes:
        title: what it is.
        columns: column names.
        rows: one tuple per line; values are str, int, bool, Decimal, datetime or None.
        notes: lines printed under a terminal table (what "unknown" means, and the like).
        meta: extra JSON-ready facts for the JSON form (period, totals, targets).
    """

    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def to_jsonable(value: Any) -> Any:
    """Decimals as plain strings, datetimes as ISO 8601 UTC, containers recursively."""
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _terminal(table: Table, stream: IO[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    cells = [[_cell(v) for v in row] for row in table.rows]
    needed = (
        sum(max([len(name), *(len(r[i]) for r in cells)]) + 3 for i, name in enumerate(table.columns)) + 1
    )
    console = Console(file=stream, width=max(needed, 80))
    out = RichTable(title=table.title)
    for name in table.columns:
        sample = next(
            (r[table.columns.index(name)] for r in table.rows if r[table.columns.index(name)] is not None),
            None,
        )
        numeric = isinstance(sample, int | Decimal) and not isinstance(sample, bool)
        out.add_column(name, justify="right" if numeric else "left")
    for row in cells:
        out.add_row(*(escape(v) for v in row))
    console.print(out)
    for note in table.notes:
        console.print(note, style="dim", highlight=False)


def _csv(table: Table, stream: IO[str]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(
            ["" if v is None else (plain(v) if isinstance(v, Decimal) else to_jsonable(v)) for v in row]
        )


def _parquet(table: Table, path: Path) -> None:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise MissingDependency("pyarrow", "parquet") from None
    arrays, fields = [], []
    for index, name in enumerate(table.columns):
        values = [row[index] for row in table.rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, Decimal) for v in present):
            scale = max(max(0, -int(v.as_tuple().exponent)) for v in present)
            scale = min(scale, 30)
            digits = max(len(str(abs(int(v)))) for v in present) + scale
            kind = pa.decimal128(min(38, max(digits, scale + 1)), scale)
            arrays.append(
                pa.array([None if v is None else v.quantize(Decimal(1).scaleb(-scale)) for v in values], kind)
            )
        elif present and all(isinstance(v, bool) for v in present):
            arrays.append(pa.array(values, pa.bool_()))
        elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            arrays.append(pa.array(values, pa.int64()))
        elif present and all(isinstance(v, datetime) for v in present):
            arrays.append(pa.array(values, pa.timestamp("us", tz="UTC")))
        else:
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
        fields.append(pa.field(name, arrays[-1].type))
    metadata = {
        b"tokenward.title": table.title.encode(),
        b"tokenward.meta": json.dumps(to_jsonable(table.meta)).encode(),
    }
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata)), path)


def write_table(
    table: Table, fmt: str = "table", output: str | Path | None = None, *, stream: IO[str] | None = None
) -> None:
    """Write ``table`` in ``fmt`` to ``output`` (a file) or ``stream`` (default stdout).

    Raises:
        ConfigError: an unknown format, or Parquet without an output file.
        MissingDependency: Parquet without ``pyarrow`` (``tokenward[parquet]``).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if output is None:
            raise ConfigError("Parquet is a binary format: give a file with --output")
        _parquet(table, Path(output))
        return
    buffer = io.StringIO()
    if fmt == "table":
        _terminal(table, buffer)
    elif fmt == "csv":
        _csv(table, buffer)
    else:
        payload = {"title": table.title, **to_jsonable(table.meta), "rows": to_jsonable(table.records())}
        buffer.write(json.dumps(payload, indent=2) + "\n")
    if output is not None:
        Path(output).write_text(buffer.getvalue(), encoding="utf-8")
    else:
        (stream or sys.stdout).write(buffer.getvalue())


def columns_of(tables: Sequence[Table]) -> list[str]:
    """Every column name in order of first appearance (for combined exports)."""
    seen: dict[str, None] = {}
    for table in tables:
        for name in table.columns:
            seen.setdefault(name, None)
    return list(seen)
