"""What an export's ``--where`` reads: the source table or view, and where its text is.

The default source is `pairs` (COYO's metadata). A catalog built from a crawl of one's own
holds `images` and no `pairs`; there the default is `images`, and an export's ``text`` is the
image's ``caption`` (the .txt or json caption img2dataset saved). Any source without a ``text``
column but with a ``caption`` column (a view over `images`, say) gets the same treatment. A
source the catalog does not hold is refused in the catalog's terms: what is missing and which
command fills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from coyo_db.catalog import tables
from coyo_db.catalog.sql_errors import missing_relation, relation_columns
from coyo_db.errors import CatalogError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

#: the column an export's ``text`` comes from, in order of preference
TEXT_COLUMNS: tuple[str, ...] = ("text", "caption")


@dataclass(frozen=True)
class ExportSource:
    """A table or view an export reads, with its columns."""

    table: str
    columns: tuple[str, ...]

    @property
    def text_column(self) -> str | None:
        """The column that holds the text: ``text``, else ``caption``, else None."""
        return next((c for c in TEXT_COLUMNS if c in self.columns), None)


def export_source(catalog: Catalog, table: str | None = None) -> ExportSource:
    """The source `table` names, or the default one: `pairs`, or `images` in a catalog that
    has images and no pairs. Raises :class:`CatalogError` for a source the catalog lacks."""
    with catalog.connection(restricted=True) as con:
        rows = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT internal "
            "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        available = {name for (name,) in rows}
        if table is None:
            table = tables.PAIRS.name
            if table not in available and tables.IMAGES.name in available:
                table = tables.IMAGES.name
        if table not in available:
            message = missing_relation(table, available)
            if table == tables.PAIRS.name:
                message += "; a crawl of your own: `coyo-db ingest images`, then export"
            raise CatalogError(message)
        return ExportSource(table, tuple(relation_columns(con, table)))
