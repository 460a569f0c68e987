"""The COYO filter funnel: how many rows of `pairs` each COYO filter rule removes, in order.

The rules and the funnel are the views of `sql/filters.sql` (`pairs_rules`, `pairs_filtered`,
`filter_funnel`); this module reads `filter_funnel` and shapes it for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.errors import CatalogError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

FUNNEL_VIEW = "filter_funnel"
_COLUMNS = ("step", "rule", "description", "removed", "remaining")


@dataclass(frozen=True)
class FunnelStep:
    """One rule of the funnel: the rows it removed among those that passed every earlier rule."""

    step: int
    rule: str
    description: str
    removed: int
    remaining: int
    input_rows: int  # rows of `pairs` entering the funnel (the same for every step)

    @property
    def removed_pct(self) -> float:
        """`removed` as a percentage of the funnel's input (0 for an empty table)."""
        return 100.0 * self.removed / self.input_rows if self.input_rows else 0.0

    @property
    def remaining_pct(self) -> float:
        return 100.0 * self.remaining / self.input_rows if self.input_rows else 0.0


def funnel_sql() -> str:
    """The statement :func:`funnel` runs (the view itself is in `sql/filters.sql`)."""
    return f"SELECT {', '.join(_COLUMNS)} FROM {FUNNEL_VIEW} ORDER BY step"


def funnel(catalog: Catalog) -> list[FunnelStep]:
    """The filter funnel of the catalog's `pairs`, one step per rule in COYO's order."""
    if not catalog.has_table(tables.PAIRS.name):
        raise CatalogError(
            f"the catalog at {catalog.location} has no table 'pairs'; "
            "load it with 'coyo-db ingest metadata'"
        )
    with catalog.connection() as con:
        # DuckDB draws its progress bar on stdout, which would corrupt --format csv/json
        con.execute("SET enable_progress_bar = false")
        rows = con.sql(funnel_sql()).to_arrow_table().to_pylist()
    if not rows:
        return []
    input_rows = rows[0]["removed"] + rows[0]["remaining"]
    return [FunnelStep(**row, input_rows=input_rows) for row in rows]


def funnel_table(steps: list[FunnelStep]) -> pa.Table:
    """The funnel as an Arrow table: step, rule, removed, removed_pct, remaining, description.

    `removed_pct` is the share of the funnel's input (not of the rows reaching the step), so the
    percentages of all steps and the kept share add up to 100.
    """
    return pa.table(
        {
            "step": pa.array([s.step for s in steps], pa.int32()),
            "rule": pa.array([s.rule for s in steps], pa.string()),
            "removed": pa.array([s.removed for s in steps], pa.int64()),
            "removed_pct": pa.array([round(s.removed_pct, 3) for s in steps], pa.float64()),
            "remaining": pa.array([s.remaining for s in steps], pa.int64()),
            "description": pa.array([s.description for s in steps], pa.string()),
        }
    )
