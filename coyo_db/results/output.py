"""`coyo-db query`: SQL over the catalog, its result as a terminal table, CSV, JSON lines or
Parquet, to a file or stdout."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import pyarrow as pa

from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

Format = Literal["table", "csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")


#: file name extensions and the format they stand for
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "table",
}


def query(
    catalog: Catalog,
    sql: str,
    *,
    write: bool = False,
    fmt: str | None = None,
    output: str | Path | None = None,
) -> pa.Table:
    """Run `sql` over the catalog (read-only unless `write`) and return the last statement's
    result as Arrow; with `output`, also write it there as `fmt` (default: by the file's
    extension, Parquet for another extension)."""
    result = catalog.sql(sql, write=write)
    if output is not None:
        write_result(result, output_format(fmt, output, default="parquet"), output)
    return result


def output_format(fmt: str | None, output: str | Path | None, *, default: str = "table") -> str:
    """The format to write: `fmt` when given, else the one `output`'s extension names, else
    `default` (stdout, or a file with another extension). A `fmt` that contradicts a known
    extension (``-o x.csv --format json``) is refused."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output is None or str(output) == "-":
        return fmt or default
    implied = EXTENSIONS.get(Path(output).suffix.lower())
    if fmt is None:
        return implied or default
    if implied is not None and implied != fmt:
        raise InputError(
            f"{output} names a {implied} file but the format is {fmt}; "
            "drop --format or change the extension"
        )
    return fmt


def write_result(
    table: pa.Table,
    fmt: str | None = None,
    output: str | Path | None = None,
    *,
    max_rows: int = 40,
) -> None:
    """Write `table` as `fmt` to `output` (a path) or to stdout when `output` is None or '-'.

    Without `fmt`, a file gets the format its extension names (`.csv`, `.json`, `.jsonl`,
    `.parquet`, `.txt` for the text table) and stdout the text table; a `fmt` that contradicts
    the extension is refused (see :func:`output_format`)."""
    fmt = output_format(fmt, output)
    to_stdout = output is None or str(output) == "-"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if to_stdout:
            if sys.stdout.isatty():
                raise InputError("--format parquet writes binary; give --output FILE")
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            sys.stdout.buffer.write(buffer.getvalue())
            sys.stdout.buffer.flush()
        else:
            pq.write_table(table, str(output))
        return
    if to_stdout:
        _write_text(table, fmt, sys.stdout, max_rows=max_rows)
    else:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            _write_text(table, fmt, fh, max_rows=None)


def _write_text(table: pa.Table, fmt: str, fh: IO[str], *, max_rows: int | None) -> None:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        fh.write(buffer.getvalue().decode("utf-8"))
    elif fmt == "json":
        for batch in table.to_batches(max_chunksize=65536):
            for row in batch.to_pylist():
                fh.write(json.dumps(row, default=_json_default, ensure_ascii=False))
                fh.write("\n")
    else:
        fh.write(render_table(table, max_rows=max_rows))


def render_table(table: pa.Table, *, max_rows: int | None = 40) -> str:
    """A boxed text table of the first `max_rows` rows, with a row count footer. Names and
    values print verbatim: brackets, emoji codes and the like are data, not markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    shown = table if max_rows is None else table.slice(0, max_rows)
    grid = Table(show_lines=False, header_style="bold")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        grid.add_column(Text(f"{field.name}\n{field.type}"), justify="right" if numeric else "left")
    for row in shown.to_pylist():
        grid.add_row(*(Text(_cell(v)) for v in row.values()))
    console = Console(
        file=io.StringIO(), width=200, highlight=False, color_system=None, markup=False, emoji=False
    )
    console.print(grid)
    footer = f"{table.num_rows:,} row{'s' if table.num_rows != 1 else ''}"
    if shown.num_rows < table.num_rows:
        footer += f" (first {shown.num_rows:,} shown; use --format csv or --output for all)"
    return console.file.getvalue() + footer + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
