"""Export manifests: what an export ran, on which table versions, and what it wrote.

Every export folder holds ``_manifest.json`` (the leading underscore keeps Arrow's and
Lance's dataset discovery from taking it for data)::

    manifest_version   1
    tool, tool_version coyo-db and coyo_db.__version__
    created_at         UTC time the export began (ISO 8601)
    catalog            the catalog's home
    format             parquet | webdataset | lance
    selection          the selection SQL (from --where or --sql-file), plus how it was given
    sql                the SQL as run, exclusions included
    table_versions     the Lance version of every catalog table, all read at these versions
    exclusions         per reason (duplicates, contaminated): table, version, applied, counts
    reviews            the version of `reviews` whose decisions the exclusions honoured (null:
                       nobody reviewed)
    counts             selected, excluded, exported (+ missing_images for webdataset)
    files              every output file with its rows and bytes
    ids                count, set_hash (order-free) and sha256 (in order) of the ids written
    query_ids          the same for the rows the SQL gave (differs from ids only when a
                       webdataset export found no image for some rows)

:func:`coyo_db.export.replay.replay_export` runs the recorded SQL again with every table pinned
to its recorded version (Lance time travel) and compares the ids: with a target it writes the
export again, without one it only checks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.export.plan import ExportPlan
    from coyo_db.export.writers import IdTally, WrittenFile

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
_REQUIRED = ("manifest_version", "format", "sql", "table_versions", "query_ids", "ids")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_manifest(
    *,
    catalog: Catalog,
    fmt: str,
    origin: dict[str, Any],
    plan: ExportPlan,
    exclusions: list[dict[str, Any]],
    counts: dict[str, Any],
    files: list[WrittenFile],
    ids: IdTally,
    query_ids: IdTally,
    options: dict[str, Any],
    created_at: str,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one export, as a JSON-ready dict."""
    from coyo_db.version import __version__

    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "tool": "coyo-db",
        "tool_version": __version__,
        "created_at": created_at,
        "seconds": round(seconds, 3),
        "catalog": str(getattr(catalog, "location", catalog.home)),
        "format": fmt,
        "selection": {**origin, "sql": plan.selection},
        "sql": plan.sql,
        "table_versions": dict(sorted(plan.versions.items())),
        "exclusions": exclusions,
        "reviews": {"table_version": plan.versions.get("reviews")},  # honoured: sql/reviews*.sql
        "counts": counts,
        "options": options,
        "files": [f.as_dict() for f in files],
        "ids": ids.as_dict(),
        "query_ids": query_ids.as_dict(),
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def manifest_path(path: str | Path) -> Path:
    """`path` itself, or the manifest inside it when it is an export folder."""
    path = Path(path).expanduser()
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest at `path` (a manifest file or an export folder), checked for its keys."""
    file = manifest_path(path)
    if not file.is_file():
        raise InputError(f"{file}: no such manifest")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: not a JSON manifest ({exc})") from None
    missing = [key for key in _REQUIRED if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise InputError(f"{file}: not an export manifest (lacks {', '.join(missing)})")
    if manifest["manifest_version"] > MANIFEST_VERSION:
        raise InputError(
            f"{file}: manifest version {manifest['manifest_version']} is newer than this "
            f"coyo-db reads ({MANIFEST_VERSION}); upgrade coyo-db"
        )
    return manifest
