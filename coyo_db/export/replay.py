"""Replaying an export from its manifest: the recorded SQL run again with every table pinned to
its recorded version (Lance time travel), the ids compared; with a target, the export is
written again.

A manifest is a file anyone may have edited: its SQL must be exactly one SELECT, its
exclusions the known ones, and it runs on a restricted connection like any user's SQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.catalog.readonly import one_select
from coyo_db.errors import InputError
from coyo_db.export.manifest import manifest_path, read_manifest
from coyo_db.export.plan import EXCLUSIONS, ExportPlan
from coyo_db.export.rows import ExportRows
from coyo_db.export.subset import (
    DEFAULT_ROWS_PER_FILE,
    DEFAULT_SAMPLES_PER_FILE,
    ExportResult,
    run_export,
)
from coyo_db.export.writers import IdTally
from coyo_db.progress import Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog


@dataclass
class ReplayResult:
    """A manifest run again: the ids it recorded and the ids the same SQL gives now."""

    manifest_path: Path
    expected: dict[str, Any]
    actual: dict[str, Any]
    export: ExportResult | None = None

    @property
    def same_ids(self) -> bool:
        keys = ("count", "set_hash")
        return all(self.expected[k] == self.actual[k] for k in keys)

    @property
    def same_order(self) -> bool:
        return self.same_ids and self.expected["sha256"] == self.actual["sha256"]

    def line(self) -> str:
        where = f" -> {self.export.path}" if self.export is not None else ""
        if self.same_ids:
            order = "same order" if self.same_order else "another order"
            return (
                f"replayed {self.manifest_path}{where}: the same {self.actual['count']:,} ids "
                f"({order})"
            )
        return (
            f"replayed {self.manifest_path}{where}: DIFFERENT ids: {self.actual['count']:,} "
            f"now, {self.expected['count']:,} recorded"
        )


def replay_export(
    catalog: Catalog,
    manifest: str | Path,
    to: str | Path | None = None,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ReplayResult:
    """Run the export of `manifest` again at its table versions; write it to `to` when given
    (as `fmt`, default the recorded format), and compare the ids with the recorded ones."""
    file = manifest_path(manifest)
    recorded = read_manifest(file)
    plan = recorded_plan(file, recorded)
    versions = plan.versions
    if to is None:
        tally = IdTally()
        with catalog.connection(versions=versions, restricted=True) as con:
            _, batches = ExportRows(con, plan).stream()
            for batch in batches:
                tally.update(batch.column("id"))
        return ReplayResult(file, recorded["query_ids"], tally.as_dict())
    options = recorded.get("options", {})
    selection = dict(recorded.get("selection", {}))
    if "source" in selection:  # manifests written before the selection said `table`
        selection["table"] = selection.pop("source")
    result = run_export(
        catalog,
        plan,
        to,
        fmt or recorded["format"],
        origin={**selection, "replay_of": str(file.resolve())},
        rows_per_file=_option(options, "rows_per_file", "shard_rows", DEFAULT_ROWS_PER_FILE),
        samples_per_file=_option(
            options, "samples_per_file", "samples_per_shard", DEFAULT_SAMPLES_PER_FILE
        ),
        overwrite=overwrite,
        allow_empty=True,  # a replay reproduces what was recorded, an empty export too
        progress=progress,
    )
    result_manifest = result.manifest
    return ReplayResult(file, recorded["query_ids"], result_manifest["query_ids"], result)


def recorded_plan(file: Path, recorded: dict[str, Any]) -> ExportPlan:
    """The plan a manifest records, checked: one SELECT each for the selection and the SQL as
    run, table versions as integers, exclusions among the known ones."""
    selection = recorded.get("selection", {})
    if not isinstance(selection, dict):
        raise InputError(f"{file}: the manifest's selection is not an object")
    sql = recorded["sql"]
    selection_sql = selection.get("sql", sql)
    if not isinstance(sql, str) or not isinstance(selection_sql, str):
        raise InputError(f"{file}: the manifest's SQL is not text")
    one_select(selection_sql, f"{file}: the recorded selection")
    one_select(sql, f"{file}: the recorded SQL")
    try:
        versions = {str(k): int(v) for k, v in dict(recorded["table_versions"]).items()}
    except (TypeError, ValueError):
        raise InputError(f"{file}: the manifest's table_versions are not table: number") from None
    known = {(e.reason, e.view) for e in EXCLUSIONS}
    exclusions = recorded.get("exclusions", [])
    if not isinstance(exclusions, list) or not all(isinstance(e, dict) for e in exclusions):
        raise InputError(f"{file}: the manifest's exclusions are not a list of objects")
    for entry in exclusions:
        if (entry.get("reason"), entry.get("view")) not in known:
            raise InputError(
                f"{file}: unknown exclusion {entry.get('reason')!r} ({entry.get('view')!r}); "
                f"known: {', '.join(reason for reason, _ in sorted(known))}"
            )
    return ExportPlan(selection_sql, sql, versions, exclusions)


def _option(options: dict[str, Any], key: str, old_key: str, default: int) -> int:
    """A recorded option; manifests written before output files were called files name it
    `old_key` (``shard_rows``, ``samples_per_shard``)."""
    return int(options.get(key, options.get(old_key, default)))
