"""The dataset card's statistics for whatever the catalog holds, and binned histograms.

For `pairs`: the row count; the distinct urls, image pHashes and texts, each with its ratio to
the rows (COYO-700M's card: 656M unique urls, 580M unique images, i.e. 77.6% of the pHashes, and
566M unique texts among 747M pairs); and count, NULLs, NaNs, mean, min, p50 and max of every
numeric column (generated from the table's schema). For `labels`, when loaded: rows, distinct ids
and top-1 labels, labels per row and the top-1 probability.

Everything is computed in DuckDB with short statements built from the schema (`stats_sql`):
one pass over the numeric columns, and one `count(DISTINCT ...)` per key column, which DuckDB
runs faster one column at a time than all together (measured at 10M rows: 3.7 s vs 4.7 s).
Distinct counts are exact unless `approx` (HyperLogLog); p50 is always approximate (DuckDB's
t-digest `approx_quantile`), because an exact median keeps every value in memory. Float
aggregates skip NaN (counted apart); NULLs are counted apart and skipped by every aggregate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.catalog.schemas import SCORE_COLUMNS
from coyo_db.errors import CatalogError, InputError

if TYPE_CHECKING:
    import duckdb

    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

PAIRS_DISTINCT: tuple[str, ...] = ("url", "image_phash", "text")


@dataclass(frozen=True)
class DistinctCount:
    """How many distinct non-NULL values a column holds, and their ratio to the table's rows."""

    column: str
    distinct: int
    ratio: float
    approximate: bool


@dataclass(frozen=True)
class ColumnStats:
    """Summary of one numeric column (or derived measure); min/p50/max/mean skip NULL and NaN."""

    column: str
    type: str
    count: int  # values that are neither NULL nor NaN
    nulls: int
    nans: int
    mean: float | None
    min: float | None
    p50: float | None  # approximate (t-digest)
    max: float | None


@dataclass(frozen=True)
class TableStats:
    table: str
    rows: int
    distinct: tuple[DistinctCount, ...]
    columns: tuple[ColumnStats, ...]

    def column(self, name: str) -> ColumnStats:
        for column in self.columns:
            if column.column == name:
                return column
        raise KeyError(name)

    def distinct_of(self, name: str) -> DistinctCount:
        for count in self.distinct:
            if count.column == name:
                return count
        raise KeyError(name)

    def columns_table(self) -> pa.Table:
        """The per-column statistics as an Arrow table, one row per column."""
        return pa.Table.from_pylist(
            [asdict(c) for c in self.columns],
            schema=pa.schema(
                [
                    ("column", pa.string()),
                    ("type", pa.string()),
                    ("count", pa.int64()),
                    ("nulls", pa.int64()),
                    ("nans", pa.int64()),
                    ("mean", pa.float64()),
                    ("min", pa.float64()),
                    ("p50", pa.float64()),
                    ("max", pa.float64()),
                ]
            ),
        )


@dataclass(frozen=True)
class Stats:
    """Statistics of every table that was loaded, `pairs` first."""

    tables: tuple[TableStats, ...]

    def __getitem__(self, table: str) -> TableStats:
        for stats in self.tables:
            if stats.table == table:
                return stats
        raise KeyError(table)

    def __contains__(self, table: object) -> bool:
        return any(stats.table == table for stats in self.tables)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN and infinities become None."""
        return _json_ready({stats.table: asdict(stats) for stats in self.tables})


@dataclass(frozen=True)
class Histogram:
    """Equal-width bins: `counts[i]` values lie in [edges[i], edges[i+1]) (the last bin closed)."""

    column: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    nulls: int  # rows left out: NULL, NaN or infinite

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class _Measure:
    """A column or expression summarised by the numeric pass."""

    name: str
    expr: str
    type: str
    floating: bool


# ---- building the statements -----------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _numeric_measures(schema: pa.Schema) -> list[_Measure]:
    return [
        _Measure(f.name, _quote(f.name), str(f.type), pa.types.is_floating(f.type))
        for f in schema
        if f.name != "id" and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]


def _specs(catalog: Catalog) -> dict[str, tuple[list[tuple[str, str]], list[_Measure]]]:
    """For each loaded table: (distinct columns as (name, expr), numeric measures)."""
    specs: dict[str, tuple[list[tuple[str, str]], list[_Measure]]] = {}
    if catalog.has_table(tables.PAIRS.name):
        schema = catalog.dataset(tables.PAIRS.name).schema
        distinct = [(name, _quote(name)) for name in PAIRS_DISTINCT if name in schema.names]
        specs[tables.PAIRS.name] = (distinct, _numeric_measures(schema))
    if catalog.has_table(tables.LABELS.name):
        specs[tables.LABELS.name] = (
            [("id", '"id"'), ("top1_label", '"labels"[1]')],
            [
                _Measure("labels_per_row", 'len("labels")', "int64", False),
                _Measure("top1_prob", '"label_probs"[1]', "float", True),
            ],
        )
    return specs


def _distinct_sql(table: str, expr: str, approx: bool) -> str:
    aggregate = f"approx_count_distinct({expr})" if approx else f"count(DISTINCT {expr})"
    return f"SELECT {aggregate} FROM {_quote(table)}"


def _numeric_sql(table: str, measures: Sequence[_Measure]) -> str:
    # NaN becomes NULL in a projection (with a flag to count it): measured 2x faster at 10M
    # rows than a FILTER (WHERE NOT isnan(x)) on every aggregate.
    projected, items = [], ["count(*)"]
    for m in measures:
        v = _quote(m.name)
        if m.floating:
            flag = _quote(f"nan:{m.name}")
            projected += [
                f"CASE WHEN isnan({m.expr}) THEN NULL ELSE {m.expr} END AS {v}",
                f"isnan({m.expr}) AS {flag}",
            ]
            nans = f"count_if({flag})"
        else:
            projected.append(f"{m.expr} AS {v}")
            nans = "0"
        items += [
            f"count({v})",
            nans,
            f"avg({v})",
            f"min({v})",
            f"approx_quantile({v}, 0.5)",
            f"max({v})",
        ]
    return (
        "SELECT\n    "
        + ",\n    ".join(items)
        + "\nFROM (\n    SELECT\n        "
        + ",\n        ".join(projected)
        + f"\n    FROM {_quote(table)}\n)"
    )


def stats_sql(catalog: Catalog, *, approx: bool = False) -> dict[str, list[str]]:
    """The statements :func:`stats` runs, per table: the numeric pass, then one per distinct."""
    return {
        table: [_numeric_sql(table, measures)]
        + [_distinct_sql(table, expr, approx) for _, expr in distinct]
        for table, (distinct, measures) in _specs(catalog).items()
    }


# ---- running them ----------------------------------------------------------------------------


def stats(catalog: Catalog, *, approx: bool = False) -> Stats:
    """The dataset card's statistics of `pairs` and, when loaded, `labels`."""
    specs = _specs(catalog)
    if not specs:
        raise CatalogError(
            f"the catalog at {catalog.location} holds neither 'pairs' nor 'labels'; "
            "load data with 'coyo-db ingest metadata' first"
        )
    results = []
    with catalog.connection() as con:
        _quiet(con)
        for table, (distinct, measures) in specs.items():
            results.append(_table_stats(con, table, distinct, measures, approx))
    return Stats(tuple(results))


def _table_stats(
    con: duckdb.DuckDBPyConnection,
    table: str,
    distinct: list[tuple[str, str]],
    measures: list[_Measure],
    approx: bool,
) -> TableStats:
    log.info("stats of %s: numeric pass over %d columns", table, len(measures))
    row = con.execute(_numeric_sql(table, measures)).fetchone()
    assert row is not None
    rows = int(row[0])
    columns = []
    for index, m in enumerate(measures):
        valid, nans, mean, lo, p50, hi = row[1 + 6 * index : 7 + 6 * index]
        nans = int(nans or 0)  # count_if of no rows is NULL
        columns.append(
            ColumnStats(
                column=m.name,
                type=m.type,
                count=int(valid),
                nulls=rows - int(valid) - nans,
                nans=nans,
                mean=_float(mean),
                min=_float(lo),
                p50=_float(p50),
                max=_float(hi),
            )
        )
    counts = []
    for name, expr in distinct:
        log.info("stats of %s: distinct %s", table, name)
        (value,) = con.execute(_distinct_sql(table, expr, approx)).fetchone() or (0,)
        value = min(int(value), rows)  # HyperLogLog may overshoot the row count
        counts.append(DistinctCount(name, value, value / rows if rows else 0.0, approx))
    return TableStats(table, rows, tuple(counts), tuple(columns))


def _quiet(con: duckdb.DuckDBPyConnection) -> None:
    # DuckDB draws its progress bar on stdout, which would corrupt `--format json`
    con.execute("SET enable_progress_bar = false")


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- histograms ------------------------------------------------------------------------------


def histograms(
    catalog: Catalog,
    columns: Sequence[str] = SCORE_COLUMNS,
    *,
    bins: int = 50,
    table: str = tables.PAIRS.name,
) -> dict[str, Histogram]:
    """Equal-width histograms of numeric `columns`, binned and counted in DuckDB.

    Two passes over those columns only: their finite range, then one `histogram()` of bin
    indices per column (no value travels to Python). Columns the table lacks are left out
    (logged); a column without a finite value gets a histogram with no bins; a column holding
    a single value gets one bin of width 1 around it.
    """
    if bins < 1:
        raise InputError(f"bins must be at least 1, not {bins}")
    if not catalog.has_table(table):
        raise CatalogError(f"the catalog at {catalog.location} has no table {table!r}")
    wanted = _histogram_columns(catalog.dataset(table).schema, columns, table)
    if not wanted:
        return {}
    relation = _quote(table)
    ranges = ", ".join(
        f"min({_quote(n)}) FILTER (WHERE {_finite(n, f)}), "
        f"max({_quote(n)}) FILTER (WHERE {_finite(n, f)})"
        for n, f in wanted
    )
    result: dict[str, Histogram] = {}
    with catalog.connection() as con:
        _quiet(con)
        row = con.execute(f"SELECT count(*), {ranges} FROM {relation}").fetchone()
        assert row is not None
        rows = int(row[0])
        plans: list[_BinPlan] = []
        for index, (name, floating) in enumerate(wanted):
            lo, hi = row[1 + 2 * index], row[2 + 2 * index]
            if lo is None:
                result[name] = Histogram(name, (), (), rows)
            elif lo == hi:
                plans.append(_BinPlan(name, floating, float(lo) - 0.5, float(hi) + 0.5, 1))
            else:
                plans.append(_BinPlan(name, floating, float(lo), float(hi), bins))
        if plans:
            items = [
                f"histogram(least(floor(({_quote(p.name)}::DOUBLE - ?) / ?), {p.bins - 1})"
                f"::INTEGER) FILTER (WHERE {_finite(p.name, p.floating)})"
                for p in plans
            ]
            params = [value for p in plans for value in (p.lo, p.width)]
            counted = con.execute(f"SELECT {', '.join(items)} FROM {relation}", params).fetchone()
            assert counted is not None
            for plan, by_bin in zip(plans, counted, strict=True):
                counts = tuple(int((by_bin or {}).get(i, 0)) for i in range(plan.bins))
                result[plan.name] = Histogram(plan.name, plan.edges, counts, rows - sum(counts))
    return {name: result[name] for name, _ in wanted}


@dataclass(frozen=True)
class _BinPlan:
    name: str
    floating: bool
    lo: float
    hi: float
    bins: int

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.bins

    @property
    def edges(self) -> tuple[float, ...]:
        return tuple([self.lo + i * self.width for i in range(self.bins)] + [self.hi])


def _histogram_columns(
    schema: pa.Schema, columns: Sequence[str], table: str
) -> list[tuple[str, bool]]:
    """(name, is float) of the requested columns the table has; non-numeric ones are refused."""
    wanted = []
    for name in columns:
        if name not in schema.names:
            log.warning("%s has no column %r; no histogram for it", table, name)
            continue
        field = schema.field(name)
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            raise InputError(f"{table}.{name} is {field.type}, not numeric")
        wanted.append((name, pa.types.is_floating(field.type)))
    return wanted


def _finite(name: str, floating: bool) -> str:
    return f"isfinite({_quote(name)})" if floating else f"{_quote(name)} IS NOT NULL"
