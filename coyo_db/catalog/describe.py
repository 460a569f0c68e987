"""What `coyo-db tables` shows: every table and view with its columns and row count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog


@dataclass(frozen=True)
class Relation:
    name: str
    kind: str  # "table" (Lance) or "view"
    columns: list[tuple[str, str]]
    rows: int | None


def describe_catalog(catalog: Catalog, *, count_views: bool = True) -> list[Relation]:
    """Tables first (counted from Lance metadata), then views (counted by running them)."""
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
                rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            relations.append(Relation(name, "view", columns, rows))
    return relations
