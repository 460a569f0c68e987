"""What an export runs: the selection, the default exclusions, the SQL as run, and the table
versions it reads (see :mod:`coyo_db.export.subset`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coyo_db.catalog import tables
from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

DEFAULT_COLUMNS: tuple[str, ...] = ("url", "text", "id")
DEFAULT_TABLE = tables.PAIRS.name  # what --where reads unless --from names another


@dataclass(frozen=True)
class Exclusion:
    """A default exclusion: ids of `view` (made from `table`) leave the export."""

    reason: str
    table: str
    view: str
    keep_option: str


EXCLUSIONS: tuple[Exclusion, ...] = (
    Exclusion("duplicates", tables.DUP_GROUPS.name, "export_duplicate_ids", "--keep-duplicates"),
    Exclusion(
        "contaminated", tables.CONTAMINATION.name, "export_contaminated_ids", "--keep-contaminated"
    ),
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def selection_sql(
    *,
    where: str | None = None,
    sql: str | None = None,
    columns: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    text_from: str = "text",
) -> str:
    """The selection of an export: from `where` over `table` (``url, text, id`` plus
    `columns`; ``*`` for all), or `sql` (one SELECT statement). `text_from` names the column
    that holds the text when `table` has no ``text`` (``caption`` in `images`).

    DuckDB's parser checks that `where` is one condition and that `sql`, or the selection
    `where` makes, is exactly one SELECT: no text of theirs can start another statement."""
    from coyo_db.catalog.readonly import one_select, where_select

    if (where is None) == (sql is None):
        raise InputError("give the rows to export with --where or with --sql-file, not both")
    if sql is not None:
        if columns:
            raise InputError("--columns goes with --where; a --sql-file selects its own columns")
        return one_select(sql, "an export's --sql-file")
    if not where.strip():
        raise InputError("--where is empty; use --where 'true' to export every row")
    wanted = [c.strip() for c in columns if c.strip()]
    text = "text" if text_from == "text" else f"{_quote(text_from)} AS text"
    if "*" in wanted:
        projection = "*" if text_from == "text" else f"*, {text}"
    else:
        names = list(dict.fromkeys([*DEFAULT_COLUMNS, *wanted]))
        projection = ", ".join(text if n == "text" else _quote(n) for n in names)
    return where_select(f"SELECT {projection}\nFROM {_quote(table)}", where)


def export_sql(selection: str, views: Sequence[str]) -> str:
    """The SQL as run: `selection` without the ids of each exclusion view in `views`."""
    if not views:
        return selection
    conditions = "\n  AND ".join(f"id NOT IN (SELECT id FROM {view})" for view in views)
    return f"WITH selection AS (\n{selection}\n)\nSELECT *\nFROM selection\nWHERE {conditions}"


@dataclass
class ExportPlan:
    """What an export will run: the selection, the SQL as run and the table versions."""

    selection: str
    sql: str
    versions: dict[str, int]
    exclusions: list[dict[str, Any]]

    @property
    def applied_views(self) -> list[str]:
        return [e["view"] for e in self.exclusions if e["applied"]]

    @property
    def present_views(self) -> list[str]:
        return [e["view"] for e in self.exclusions if e["present"]]


def plan_export(
    catalog: Catalog,
    selection: str,
    *,
    keep_duplicates: bool = False,
    keep_contaminated: bool = False,
) -> ExportPlan:
    """The SQL as run and the table versions for `selection`, exclusions decided by which
    tables the catalog holds now."""
    versions = catalog.versions()
    keep = {"duplicates": keep_duplicates, "contaminated": keep_contaminated}
    entries = []
    for exclusion in EXCLUSIONS:
        present = exclusion.table in versions
        entry: dict[str, Any] = {
            "reason": exclusion.reason,
            "table": exclusion.table,
            "view": exclusion.view,
            "present": present,
            "applied": present and not keep[exclusion.reason],
            "table_version": versions.get(exclusion.table),
        }
        if not present:
            entry["note"] = f"no {exclusion.table} table in the catalog: nothing excluded"
        elif keep[exclusion.reason]:
            entry["note"] = f"kept ({exclusion.keep_option})"
        entries.append(entry)
    views = [e["view"] for e in entries if e["applied"]]
    return ExportPlan(selection, export_sql(selection, views), versions, entries)
