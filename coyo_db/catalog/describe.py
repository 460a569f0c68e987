"""What `coyo-db tables` shows: every table and view with its columns and row count.

A table's count is read from its Lance manifest (no scan: constant time at any size); a view's
count means running the view, which at 100M rows takes minutes, so it is only done when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from coyo_db.catalog.readonly import query_error
from coyo_db.errors import QueryError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog


@dataclass(frozen=True)
class Relation:
    name: str
    kind: str  # "table" (Lance) or "view"
    columns: list[tuple[str, str]]
    rows: int | None


def describe_catalog(catalog: Catalog, *, count_views: bool = False) -> list[Relation]:
    """Tables first (counted from Lance metadata), then views (counted by running them only
    with `count_views`; otherwise their `rows` is None)."""
    tables = set(catalog.table_names())
    relations: list[Relation] = []
    with catalog.connection() as con:
        names = [
            row[0]
            for row in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name"
            ).fetchall()
        ]
        for name in sorted(tables):
            dataset = catalog.dataset(name)
            columns = [(f.name, str(f.type)) for f in dataset.schema]
            relations.append(Relation(name, "table", columns, dataset.count_rows()))
        for name in names:
            if name in tables:
                continue
            described = con.execute(f'DESCRIBE "{name}"').fetchall()
            columns = [(row[0], row[1]) for row in described]
            rows = None
            if count_views:
                try:
                    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                except duckdb.Error as exc:
                    raise QueryError(f"view {name!r}: {query_error(exc)}") from None
            relations.append(Relation(name, "view", columns, rows))
    return relations
