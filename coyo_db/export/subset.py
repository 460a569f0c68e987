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
the ids in a manifest (:mod:`coyo_db.export.manifest`) inside the export folder; re-running the
SQL at those versions gives the same ids. Output goes to a temporary folder beside the target and
is renamed into place at the end, so a target is never left half-written. Every export that
writes is logged in `runs` (command ``export``).

The selection and exclusions are planned in :mod:`coyo_db.export.plan`, the rows streamed by
:mod:`coyo_db.export.rows`, and written by :mod:`coyo_db.export.writers`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db import faults
from coyo_db.catalog import tables
from coyo_db.errors import InputError
from coyo_db.export.plan import DEFAULT_TABLE, ExportPlan, plan_export, selection_sql
from coyo_db.export.rows import ExportRows
from coyo_db.export.writers import IdTally, WrittenFile
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    import duckdb

    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)


class EmptyExportError(InputError):
    """An export selected no rows and was not allowed to be empty; nothing was written."""


FORMATS: tuple[str, ...] = ("parquet", "webdataset", "lance")
DEFAULT_ROWS_PER_FILE = 1_000_000
DEFAULT_SAMPLES_PER_FILE = 10_000
_STAGING_PID = ".writer-pid"  # in a staging folder while its export runs


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

    def open_hint(self) -> str | None:
        """How to open a Lance export with LanceDB (None for the other formats)."""
        if self.format != "lance":
            return None
        return (
            f"lancedb.connect({str(self.path.parent)!r}).open_table({self.path.stem!r}), "
            f"or lance.dataset({str(self.path)!r})"
        )

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
    table: str | None = None,
    keep_duplicates: bool = False,
    keep_contaminated: bool = False,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    samples_per_file: int = DEFAULT_SAMPLES_PER_FILE,
    overwrite: bool = False,
    allow_empty: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export the rows of `where` (over `table`) or of `sql` to folder `to` as `fmt`, without
    duplicates and contaminated ids unless kept; a manifest goes inside the folder.

    `table` defaults to `pairs`, or `images` in a catalog without pairs; a source without a
    ``text`` column gives its ``caption`` as the text (see :mod:`coyo_db.export.source`).
    An export of no rows raises :class:`EmptyExportError` and writes nothing, unless
    `allow_empty`."""
    text_from = "text"
    if where is not None:
        from coyo_db.export.source import export_source

        source = export_source(catalog, table)
        table, text_from = source.table, source.text_column or "text"
    table = table or DEFAULT_TABLE
    selection = selection_sql(
        where=where, sql=sql, columns=columns, table=table, text_from=text_from
    )
    plan = plan_export(
        catalog, selection, keep_duplicates=keep_duplicates, keep_contaminated=keep_contaminated
    )
    origin = {"where": where, "table": table if where is not None else None}
    origin["columns"] = list(columns)
    return run_export(
        catalog,
        plan,
        to,
        fmt,
        origin=origin,
        rows_per_file=rows_per_file,
        samples_per_file=samples_per_file,
        overwrite=overwrite,
        allow_empty=allow_empty,
        progress=progress,
    )


def run_export(
    catalog: Catalog,
    plan: ExportPlan,
    to: str | Path,
    fmt: str,
    *,
    origin: dict[str, Any] | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    samples_per_file: int = DEFAULT_SAMPLES_PER_FILE,
    overwrite: bool = False,
    allow_empty: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Run `plan` at its table versions and write the result to `to` (atomically); logged in
    `runs` as ``export``. No rows: :class:`EmptyExportError`, nothing written, unless
    `allow_empty`."""
    from coyo_db.catalog.runs import recorded_run

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if rows_per_file < 1 or samples_per_file < 1:
        raise InputError("--rows-per-file and --samples-per-file must be at least 1")
    target = Path(to).expanduser().resolve()
    if fmt == "lance" and target.suffix != ".lance":
        raise InputError(
            f"a Lance export goes to a folder named NAME.lance, which LanceDB opens as table "
            f"NAME of the folder above it: --to {target.with_name(target.name + '.lance')}"
        )
    options = {"rows_per_file": rows_per_file, "samples_per_file": samples_per_file}
    checks = {"allow_empty": allow_empty}
    arguments = {
        "to": str(target),
        "format": fmt,
        **(origin or {}),
        "sql": plan.sql,
        "table_versions": plan.versions,
        **options,
        "overwrite": overwrite,
    }
    check_target(target, overwrite=overwrite, home=catalog.home)
    with recorded_run(catalog, "export", arguments, exclusive=False) as run:
        result = _write_export(
            catalog, plan, target, fmt, origin or {}, options, checks, progress or NullProgress()
        )
        run.counts(rows_read=result.counts["selected"], rows_written=result.rows)
    return result


def _write_export(
    catalog: Catalog,
    plan: ExportPlan,
    target: Path,
    fmt: str,
    origin: dict[str, Any],
    options: dict[str, int],
    checks: dict[str, bool],
    progress: Progress,
) -> ExportResult:
    from coyo_db.export import manifest as manifests

    rows_per_file, samples_per_file = options["rows_per_file"], options["samples_per_file"]
    started = time.perf_counter()
    created_at = manifests.utc_now()
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_interrupted(target)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    (staging / _STAGING_PID).write_text(str(os.getpid()))
    try:
        with catalog.connection(versions=plan.versions) as con:
            rows = ExportRows(con, plan)
            if fmt == "webdataset":
                written = _write_webdataset(con, plan, rows, staging, samples_per_file, progress)
            else:
                written = _write_table(rows, fmt, staging, rows_per_file, progress)
        ids, query_ids = written.ids, written.query_ids
        counts: dict[str, Any] = {
            "selected": rows.selected,
            "excluded": rows.selected - query_ids.count,
            "exported": ids.count,
        }
        if fmt == "webdataset":
            counts["missing_images"] = query_ids.count - ids.count
        if ids.count == 0 and not checks["allow_empty"]:
            raise EmptyExportError(_empty_line(counts, rows.exclusions, target))
        seconds = time.perf_counter() - started
        manifest = manifests.build_manifest(
            catalog=catalog,
            fmt=fmt,
            origin=origin,
            plan=plan,
            exclusions=rows.exclusions,
            counts=counts,
            files=written.files,
            ids=ids,
            query_ids=query_ids,
            options=options,
            created_at=created_at,
            seconds=seconds,
            extra=written.extra,
        )
        faults.point("export.mid_write")
        (staging / _STAGING_PID).unlink()
        manifests.write_manifest(staging, manifest)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %d rows to %s in %.1f s", ids.count, target, seconds)
    path = target / manifests.MANIFEST_NAME
    return ExportResult(target, fmt, manifest, path, seconds, written.files)


def _empty_line(counts: dict[str, Any], exclusions: list[dict[str, Any]], target: Path) -> str:
    """Why an export has no rows, and that nothing was written."""
    why = [f"{counts['selected']:,} selected"]
    why += [f"{e['excluded']:,} excluded as {e['reason']}" for e in exclusions if e["applied"]]
    if counts.get("missing_images"):
        why.append(f"{counts['missing_images']:,} without a readable image")
    return (
        f"the export has 0 rows ({'; '.join(why)}); nothing written to {target} "
        "(--allow-empty writes an empty export)"
    )


def check_target(target: Path, *, overwrite: bool, home: Path | None = None) -> None:
    """Refuse a target that is the catalog `home`, inside it or above it (or inside any other
    catalog), and one that holds something; `overwrite` replaces only a previous export: a
    folder holding an export manifest."""
    from coyo_db.catalog.catalog import catalog_above
    from coyo_db.export.manifest import MANIFEST_NAME

    target = Path(target).expanduser().resolve()
    if home is not None:
        home = Path(home).resolve()
        if target == home:
            raise InputError(f"{target} is the catalog's home; choose another --to")
        if target in home.parents:
            raise InputError(f"{target} holds the catalog at {home}; choose another --to")
    inside = catalog_above(target)
    if inside is not None:
        raise InputError(f"{target} is inside the catalog at {inside}; choose another --to")
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not target.is_dir():
        raise InputError(f"{target} is a file; choose another --to")
    if not overwrite:
        raise InputError(
            f"{target} is a non-empty folder; choose another --to, or pass --overwrite to "
            "replace a previous export"
        )
    if not (target / MANIFEST_NAME).is_file():
        raise InputError(
            f"{target} holds no export ({MANIFEST_NAME} is missing); --overwrite only replaces "
            "a previous export"
        )


def _move_into_place(staging: Path, target: Path) -> None:
    """Put the finished export at `target`: an atomic swap with a previous export where the
    system offers one (Linux), else two renames, undone by :func:`restore_interrupted`."""
    if not target.exists():
        staging.rename(target)
        return
    if not _exchange(staging, target):
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
        faults.point("export.between_renames")
        staging.rename(target)
        staging = old
    if staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False where not supported."""
    if sys.platform != "linux":
        return False
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0


def restore_interrupted(target: Path) -> None:
    """Put back a previous export that an interrupted replacement left aside (two renames,
    killed between them), and remove the staging folders of killed exports of `target`."""
    parent = target.parent
    if not parent.is_dir():
        return
    if not target.exists():
        for old in sorted(parent.glob(f".{target.name}.old-*")):
            old.rename(target)
            log.warning("%s: restored the previous export an interrupted one had moved", target)
            break
    for stale in parent.glob(f".{target.name}.tmp-*"):
        if not _in_use(stale):
            shutil.rmtree(stale, ignore_errors=True)


def _in_use(staging: Path) -> bool:
    """Whether a live process still writes into the staging folder (its pid file says who)."""
    try:
        pid = int((staging / _STAGING_PID).read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Written:
    files: list[WrittenFile]
    ids: IdTally
    query_ids: IdTally
    extra: dict[str, Any] = field(default_factory=dict)


def _write_table(
    rows: ExportRows, fmt: str, folder: Path, rows_per_file: int, progress: Progress
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
        files = writers.write_parquet(batches(), schema, folder, rows_per_file)
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
    samples_per_file: int,
    progress: Progress,
) -> _Written:
    import numpy as np

    from coyo_db.export.writers import write_webdataset

    if tables.IMAGES.name not in plan.versions:
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
    stats = write_webdataset(table, locations, folder, samples_per_file, tally, progress)
    extra = {"missing_image_reasons": stats.missing_reasons}
    return _Written(stats.files, tally, query_ids, extra)
