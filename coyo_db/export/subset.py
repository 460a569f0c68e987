"""`coyo-db export`: a SQL-selected subset written as Parquet, webdataset or Lance, reproducibly.

The rows are exactly what one SQL statement returns:

1. the *selection*: ``SELECT url, text, id[, columns] FROM pairs WHERE (<--where>)``, or the
   query of ``--sql-file`` (one SELECT with an ``id`` column);
2. the *SQL as run*: the selection minus the default exclusions, each applied only when its
   table exists and not kept by an option:

   - duplicates: ids in ``export_duplicate_ids`` (non-keepers of every ``dup_groups`` method;
     ``--keep-duplicates`` keeps them);
   - contaminated: ids in ``export_contaminated_ids`` (every id of ``contamination``;
     ``--keep-contaminated`` keeps them).

The export reads every table at the Lance version it had when the export began, and records
those versions, the SQL as run, the exclusions with their counts, the files and fingerprints of
the ids in a manifest (:mod:`coyo_db.export.manifest`) inside the export folder; re-running the SQL
at
those versions gives the same ids. Output goes to a temporary folder beside the target and is
renamed into place at the end, so a target is never left half-written.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db.errors import InputError
from coyo_db.export.writers import IdTally, WrittenFile
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    import duckdb

    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("parquet", "webdataset", "lance")
DEFAULT_COLUMNS: tuple[str, ...] = ("url", "text", "id")
DEFAULT_SOURCE = "pairs"
DEFAULT_SHARD_ROWS = 1_000_000
DEFAULT_SAMPLES_PER_SHARD = 10_000
BATCH_ROWS = 1 << 17
_INTEGER_TYPES = {
    "BIGINT",
    "INTEGER",
    "SMALLINT",
    "TINYINT",
    "UBIGINT",
    "UINTEGER",
    "USMALLINT",
    "UTINYINT",
}


@dataclass(frozen=True)
class Exclusion:
    """A default exclusion: ids of `view` (made from `table`) leave the export."""

    reason: str
    table: str
    view: str
    keep_option: str


EXCLUSIONS: tuple[Exclusion, ...] = (
    Exclusion("duplicates", "dup_groups", "export_duplicate_ids", "--keep-duplicates"),
    Exclusion("contaminated", "contamination", "export_contaminated_ids", "--keep-contaminated"),
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def selection_sql(
    *,
    where: str | None = None,
    sql: str | None = None,
    columns: Sequence[str] = (),
    source: str = DEFAULT_SOURCE,
) -> str:
    """The selection of an export: from `where` over `source` (``url, text, id`` plus
    `columns`; ``*`` for all), or `sql` (one SELECT statement)."""
    from coyo_db.catalog.readonly import split_statements

    if (where is None) == (sql is None):
        raise InputError("give the rows to export with --where or with --sql-file, not both")
    if sql is not None:
        if columns:
            raise InputError("--columns goes with --where; a --sql-file selects its own columns")
        statements = split_statements(sql)
        if len(statements) != 1 or statements[0].type.name != "SELECT":
            raise InputError("an export's --sql-file must hold exactly one SELECT statement")
        return sql.strip().rstrip(";").strip()
    if not where.strip():
        raise InputError("--where is empty; use --where 'true' to export every row")
    wanted = [c.strip() for c in columns if c.strip()]
    if "*" in wanted:
        projection = "*"
    else:
        names = list(dict.fromkeys([*DEFAULT_COLUMNS, *wanted]))
        projection = ", ".join(_quote(n) for n in names)
    return f"SELECT {projection}\nFROM {_quote(source)}\nWHERE ({where}\n)"


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


@dataclass
class ExportResult:
    """An export that finished: where it went and what its manifest says."""

    path: Path
    format: str
    manifest: dict[str, Any]
    manifest_path: Path
    seconds: float
    files: list[WrittenFile] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]

    @property
    def rows(self) -> int:
        return self.counts["exported"]

    def line(self) -> str:
        counts = self.counts
        parts = [
            f"exported {counts['exported']:,} rows to {self.path} ({self.format}, "
            f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}) in {self.seconds:.1f} s"
        ]
        if counts.get("selected") is not None:
            parts.append(f"{counts['selected']:,} selected")
        for entry in self.manifest["exclusions"]:
            if entry["applied"]:
                parts.append(f"{entry['excluded']:,} excluded as {entry['reason']}")
            elif entry["present"]:
                parts.append(f"{entry.get('kept', 0):,} {entry['reason']} kept")
            else:
                parts.append(f"no {entry['table']} table")
        if counts.get("missing_images"):
            parts.append(f"{counts['missing_images']:,} without a readable image")
        return "; ".join(parts)


def export(
    catalog: Catalog,
    to: str | Path,
    *,
    where: str | None = None,
    sql: str | None = None,
    fmt: str = "parquet",
    columns: Sequence[str] = (),
    source: str = DEFAULT_SOURCE,
    keep_duplicates: bool = False,
    keep_contaminated: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export the rows of `where` (over `source`) or of `sql` to folder `to` as `fmt`, without
    duplicates and contaminated ids unless kept; a manifest goes inside the folder."""
    selection = selection_sql(where=where, sql=sql, columns=columns, source=source)
    plan = plan_export(
        catalog, selection, keep_duplicates=keep_duplicates, keep_contaminated=keep_contaminated
    )
    origin = {"where": where, "source": source if where is not None else None}
    origin["columns"] = list(columns)
    return run_export(
        catalog,
        plan,
        to,
        fmt,
        origin=origin,
        shard_rows=shard_rows,
        samples_per_shard=samples_per_shard,
        overwrite=overwrite,
        progress=progress,
    )


def run_export(
    catalog: Catalog,
    plan: ExportPlan,
    to: str | Path,
    fmt: str,
    *,
    origin: dict[str, Any] | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Run `plan` at its table versions and write the result to `to` (atomically)."""
    from coyo_db.export import manifest as manifests

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if shard_rows < 1 or samples_per_shard < 1:
        raise InputError("--shard-rows and --samples-per-shard must be at least 1")
    progress = progress or NullProgress()
    target = Path(to).expanduser().resolve()
    check_target(target, overwrite=overwrite)
    started = time.perf_counter()
    created_at = manifests.utc_now()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with catalog.connection(versions=plan.versions) as con:
            rows = ExportRows(con, plan)
            if fmt == "webdataset":
                written = _write_webdataset(con, plan, rows, staging, samples_per_shard, progress)
            else:
                written = _write_table(rows, fmt, staging, shard_rows, progress)
        ids, query_ids = written.ids, written.query_ids
        counts: dict[str, Any] = {
            "selected": rows.selected,
            "excluded": rows.selected - query_ids.count,
            "exported": ids.count,
        }
        if fmt == "webdataset":
            counts["missing_images"] = query_ids.count - ids.count
        seconds = time.perf_counter() - started
        manifest = manifests.build_manifest(
            catalog=catalog,
            fmt=fmt,
            origin=origin or {},
            plan=plan,
            exclusions=rows.exclusions,
            counts=counts,
            files=written.files,
            ids=ids,
            query_ids=query_ids,
            options={"shard_rows": shard_rows, "samples_per_shard": samples_per_shard},
            created_at=created_at,
            seconds=seconds,
            extra=written.extra,
        )
        manifests.write_manifest(staging, manifest)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %d rows to %s in %.1f s", ids.count, target, seconds)
    path = target / manifests.MANIFEST_NAME
    return ExportResult(target, fmt, manifest, path, seconds, written.files)


def check_target(target: Path, *, overwrite: bool) -> None:
    """Refuse a target that holds something, unless `overwrite`."""
    if not target.exists() or overwrite:
        return
    if target.is_dir() and not any(target.iterdir()):
        return
    what = "folder" if target.is_dir() else "file"
    raise InputError(f"{target} is a non-empty {what}; choose another --to or pass --overwrite")


def _move_into_place(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    staging.rename(target)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _query_error(exc: Exception) -> Exception:
    from coyo_db.errors import QueryError

    return QueryError(" ".join(str(exc).split()))


class ExportRows:
    """The rows of an export, in the selection's order: the selection streamed in batches with
    the excluded ids dropped in Arrow.

    This gives exactly the rows of the SQL as run (``plan.sql``), but keeps the selection's
    row order: DuckDB's parallel hash join behind ``NOT IN`` does not keep it. The excluded ids
    of the selection are found first by one query over the selection's ids (it also gives the
    counts per reason), then each batch drops them with a sorted-array lookup.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, plan: ExportPlan) -> None:
        import duckdb
        import numpy as np

        self.con = con
        self.plan = plan
        self.selected = 0
        try:
            relation = con.sql(plan.selection)
            names, types = relation.columns, [str(t) for t in relation.types]
        except duckdb.Error as exc:
            raise _query_error(exc) from None
        if "id" not in names:
            raise InputError(
                f"an export needs an id column; the selection gives {', '.join(names) or 'none'}"
            )
        id_type = types[names.index("id")]
        if id_type not in _INTEGER_TYPES:
            raise InputError(f"an export's id column must be an integer, not {id_type}")
        self.exclusions = [dict(e) for e in plan.exclusions]
        self.drop = np.zeros(0, dtype=np.int64)
        self.expected_dropped = self.dropped = 0
        present = [e for e in self.exclusions if e["present"]]
        for entry in self.exclusions:
            entry["excluded"] = 0
        if present:
            self._find_excluded(present)

    def _find_excluded(self, present: list[dict[str, Any]]) -> None:
        import duckdb
        import numpy as np

        flags = ", ".join(f"id IN (SELECT id FROM {e['view']}) AS {e['reason']}" for e in present)
        anywhere = " OR ".join(f"id IN (SELECT id FROM {e['view']})" for e in present)
        query = (
            f"WITH selection AS (\n{self.plan.selection}\n)\n"
            f"SELECT id, {flags}\nFROM selection\nWHERE {anywhere}"
        )
        try:
            flagged = self.con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            raise _query_error(exc) from None
        ids = flagged["id"].to_numpy()
        dropped = np.zeros(len(ids), dtype=bool)
        for entry in present:
            hit = flagged[entry["reason"]].to_numpy(zero_copy_only=False).astype(bool)
            if entry["applied"]:
                entry["excluded"] = int(hit.sum())
                dropped |= hit
            else:
                entry["kept"] = int(hit.sum())
        self.drop = np.unique(ids[dropped])
        self.expected_dropped = int(dropped.sum())
        duplicates = next((e for e in present if e["reason"] == "duplicates"), None)
        if duplicates is not None:
            methods = self.con.sql(
                "SELECT method, count(*) FILTER (WHERE NOT keeper) AS non_keepers "
                "FROM dup_groups GROUP BY method ORDER BY method"
            ).fetchall()
            duplicates["methods"] = {m: int(n) for m, n in methods}

    def stream(self, batch_rows: int = BATCH_ROWS) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema and the batches of the export's rows (the selection runs once)."""
        import duckdb

        try:
            reader = self.con.sql(self.plan.selection).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise _query_error(exc) from None
        return reader.schema, self._filtered(reader)

    def _filtered(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        import duckdb
        import numpy as np

        try:
            for batch in reader:
                self.selected += batch.num_rows
                if batch.column("id").null_count:
                    raise InputError("the selection gives rows with a NULL id; filter them out")
                if len(self.drop):
                    ids = batch.column("id").to_numpy(zero_copy_only=False)
                    at = np.searchsorted(self.drop, ids).clip(max=len(self.drop) - 1)
                    keep = self.drop[at] != ids
                    if not keep.all():
                        self.dropped += int(len(keep) - keep.sum())
                        batch = batch.filter(pa.array(keep))
                yield batch
        except duckdb.Error as exc:
            raise _query_error(exc) from None
        if self.dropped != self.expected_dropped:
            raise InputError(
                "the selection gave other rows on its second run (random(), or LIMIT without "
                "ORDER BY?); an export needs a deterministic selection, e.g. ORDER BY hash(id)"
            )


@dataclass
class _Written:
    files: list[WrittenFile]
    ids: IdTally
    query_ids: IdTally
    extra: dict[str, Any] = field(default_factory=dict)


def _write_table(
    rows: ExportRows, fmt: str, folder: Path, shard_rows: int, progress: Progress
) -> _Written:
    from coyo_db.export import writers

    tally = IdTally()
    schema, stream = rows.stream()

    def batches() -> Iterator[pa.RecordBatch]:
        progress.start(f"export {fmt}")
        for batch in stream:
            tally.update(batch.column("id"))
            progress.advance(batch.num_rows)
            yield batch
        progress.finish()

    if fmt == "parquet":
        files = writers.write_parquet(batches(), schema, folder, shard_rows)
    else:
        files = writers.write_lance(batches(), schema, folder)
    return _Written(files, tally, tally)


# Where each exported id's image is: one `images` row per id (the first by shard, member).
_LOCATIONS_SQL = """
SELECT e.id, i.shard, i.member, i.format, i.caption
FROM export_ids AS e
LEFT JOIN (
    SELECT id, shard, member, format, caption
    FROM images
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY shard, member) = 1
) AS i ON e.id = i.id
ORDER BY e.position
"""


def _write_webdataset(
    con: duckdb.DuckDBPyConnection,
    plan: ExportPlan,
    rows: ExportRows,
    folder: Path,
    samples_per_shard: int,
    progress: Progress,
) -> _Written:
    import numpy as np

    from coyo_db.export.writers import write_webdataset

    if "images" not in plan.versions:
        raise InputError(
            "a webdataset export writes the images themselves; the catalog has no images "
            "table (run coyo-db ingest images first)"
        )
    schema, stream = rows.stream()
    table = pa.Table.from_batches(list(stream), schema=schema)
    query_ids = IdTally()
    query_ids.update(table["id"])
    ids = pa.table({"id": table["id"], "position": pa.array(np.arange(len(table), dtype=np.int64))})
    con.register("export_ids", ids)
    locations = con.sql(_LOCATIONS_SQL).to_arrow_table()
    con.unregister("export_ids")
    tally = IdTally()
    stats = write_webdataset(table, locations, folder, samples_per_shard, tally, progress)
    extra = {"missing_image_reasons": stats.missing_reasons}
    return _Written(stats.files, tally, query_ids, extra)
