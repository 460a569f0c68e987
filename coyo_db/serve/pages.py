"""What the web app's pages show, as plain data: a page of a query, an image's facts, the
duplicate groups, the audit's hits and near misses.

Every query a page runs is either the user's own SQL (run read-only on a restricted connection,
as `coyo-db query` runs it), a view of `sql/*.sql`, one of the audit report's queries
(:mod:`coyo_db.audit.report_queries`) or a short parameterised statement here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coyo_db.audit.low_info import BLANK_REASON
from coyo_db.audit.report_queries import HITS, NEAR_MISSES_SQL, run_query
from coyo_db.catalog import tables
from coyo_db.errors import CoyoDbError, InputError

if TYPE_CHECKING:
    import duckdb

    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_CELL = 300  # characters of a value shown in a table cell

_PAIR = "SELECT * FROM pairs WHERE id = $id LIMIT 1"
_IMAGE = "SELECT * EXCLUDE (phash) FROM images WHERE id = $id LIMIT 1"
_SCORES = "SELECT * EXCLUDE (id) FROM image_scores WHERE id = $id LIMIT 1"
_LABELS = """
SELECT model, taxonomy, rank, label, name, round(prob, 4) AS prob FROM labels_long
WHERE id = $id AND rank < 10 ORDER BY model, taxonomy, rank
"""
_GROUPS_OF = """
SELECT g.method, g.group_id, g.id, g.keeper, g.distance, g.group_size
FROM {groups} AS g
JOIN (SELECT method, group_id FROM {groups} WHERE id = $id) USING (method, group_id)
ORDER BY g.method, g.keeper DESC, g.id LIMIT 200
"""
_CANDIDATES_OF = """
SELECT refset, ref_id, ref_path, hit, method, score, hamming, cosine, inliers, coverage, layout,
       flipped, found_by
FROM contamination_candidates WHERE id = $id ORDER BY hit DESC, score DESC LIMIT 50
"""
_METHODS = "SELECT DISTINCT method FROM dup_groups ORDER BY method"
_GROUPS = """
WITH top AS (
    SELECT group_id, max(group_size) AS size FROM {groups} WHERE method = $method
    GROUP BY group_id ORDER BY size DESC, group_id LIMIT $limit OFFSET $offset
)
SELECT g.group_id, g.id, g.keeper, g.distance, t.size
FROM {groups} AS g JOIN top AS t USING (group_id)
WHERE g.method = $method
ORDER BY t.size DESC, g.group_id, g.keeper DESC, g.id
"""
_CAPTIONS = """
SELECT id, {text} AS text FROM {table} WHERE list_contains($ids::BIGINT[], id)
"""
_LATEST = "SELECT * FROM reviews_latest WHERE list_contains($ids::BIGINT[], id)"
_REFSETS = "SELECT refset FROM refsets ORDER BY refset"


@dataclass
class QueryPage:
    """One page of a query's result, or the error that stopped it."""

    sql: str
    page: int = 0
    size: int = PAGE_SIZE
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    has_more: bool = False
    error: str | None = None

    @property
    def ids(self) -> list[int]:
        if "id" not in self.columns:
            return []
        return [int(r["id"]) for r in self.rows if isinstance(r.get("id"), int)]


def default_sql(catalog: Catalog) -> str:
    """What `/` shows: a sample of `images`, or of `pairs` when there are no images."""
    names = set(catalog.table_names())
    table = tables.IMAGES.name if tables.IMAGES.name in names else tables.PAIRS.name
    if table not in names:
        return "SELECT * FROM runs ORDER BY started_at DESC"
    # a pseudo-random sample that stays the same from page to page
    return f"SELECT * FROM {table} ORDER BY hash(id) LIMIT 1000"


def query_page(catalog: Catalog, sql: str, *, page: int = 0, size: int = PAGE_SIZE) -> QueryPage:
    """Page `page` (rows ``page*size`` on) of `sql`, run read-only; a user error is kept in
    `error` rather than raised, for the page to show."""
    from coyo_db.catalog.readonly import one_select, split_statements, statement_kind

    out = QueryPage(sql=sql, page=max(0, page), size=size)
    try:
        statements = split_statements(sql)
        if len(statements) == 1 and statement_kind(statements[0]) == "SELECT":
            select = one_select(sql, "the query")
            paged = f"SELECT * FROM (\n{select}\n) AS q LIMIT {size + 1} OFFSET {out.page * size}"
            table = catalog.sql(paged)
        else:  # PRAGMA, EXPLAIN, several statements: the read-only guard decides
            table = catalog.sql(sql).slice(out.page * size, size + 1)
    except CoyoDbError as exc:
        out.error = str(exc)
        return out
    out.columns = table.column_names
    out.has_more = table.num_rows > size
    out.rows = table.slice(0, size).to_pylist()
    return out


def default_columns(page: QueryPage, count: int = 4) -> list[str]:
    """The columns shown under thumbnails unless the user names some: the caption or text
    first, then the next columns after the id."""
    first = [c for c in ("caption", "text") if c in page.columns][:1]
    rest = [c for c in page.columns if c not in ("id", *first)]
    return (first + rest)[:count]


def cell(value: Any) -> str:
    """A value as table-cell text, cut to :data:`MAX_CELL` characters."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def rows(con: duckdb.DuckDBPyConnection, sql: str, **params: object) -> list[dict[str, Any]]:
    """`sql`'s rows, or none when a table or view it reads is not in this catalog."""
    import duckdb

    try:
        return run_query(con, sql, **params)
    except duckdb.CatalogException:
        return []


def _groups_view(con: duckdb.DuckDBPyConnection) -> str:
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    return "dup_groups_reviewed" if "dup_groups_reviewed" in views else "dup_groups"


def captions(con: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, str]:
    """A text per id: the pair's text, else the image's caption."""
    found: dict[int, str] = {}
    for table, text in (("images", "caption"), ("pairs", "text")):
        sql = _CAPTIONS.format(table=table, text=text)
        for row in rows(con, sql, ids=ids):
            if row["text"]:
                found[row["id"]] = row["text"]
    return found


def latest_reviews(con: duckdb.DuckDBPyConnection, ids: list[int]) -> list[dict[str, Any]]:
    return rows(con, _LATEST, ids=ids)


def detail(catalog: Catalog, id_: int, *, neighbours: int = 12) -> dict[str, Any]:
    """Everything the catalog knows of image `id_`, and its nearest neighbours."""
    with catalog.connection() as con:
        groups = _groups_view(con)
        out: dict[str, Any] = {
            "id": id_,
            "pair": next(iter(rows(con, _PAIR, id=id_)), None),
            "image": next(iter(rows(con, _IMAGE, id=id_)), None),
            "scores": next(iter(rows(con, _SCORES, id=id_)), None),
            "labels": rows(con, _LABELS, id=id_),
            "groups": rows(con, _GROUPS_OF.format(groups=groups), id=id_),
            "candidates": rows(con, _CANDIDATES_OF, id=id_),
            "reviews": latest_reviews(con, [id_]),
        }
    if not any(out[k] for k in ("pair", "image", "groups", "candidates", "reviews")):
        raise InputError(f"no image or pair with id {id_} in the catalog")
    out["neighbours"], out["neighbours_error"] = nearest(catalog, id=id_, k=neighbours)
    return out


def nearest(catalog: Catalog, **query: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Nearest neighbours (:func:`coyo_db.search.nearest.search`), or why there are none."""
    from coyo_db.search.nearest import search

    try:
        return search(catalog, **query).table.to_pylist(), None
    except (CoyoDbError, ImportError) as exc:
        return [], str(exc)


def duplicates(
    catalog: Catalog, method: str | None = None, *, page: int = 0, groups: int = 12
) -> dict[str, Any]:
    """The largest duplicate groups of each dedup method (or of `method` only, paged)."""
    out: dict[str, Any] = {"methods": [], "page": page, "method": method}
    if not catalog.has_table(tables.DUP_GROUPS.name):
        return out
    with catalog.connection() as con:
        view = _groups_view(con)
        methods = [r["method"] for r in rows(con, _METHODS)]
        if method is not None and method not in methods:
            raise InputError(f"no dedup method {method!r} in dup_groups")
        shown = [method] if method else methods
        seen: set[int] = set()
        for name in shown:
            members = rows(
                con,
                _GROUPS.format(groups=view),
                method=name,
                limit=groups,
                offset=page * groups if method else 0,
            )
            seen.update(m["id"] for m in members)
            texts = captions(con, sorted({m["id"] for m in members}))
            by_group: dict[int, dict[str, Any]] = {}
            for m in members:
                group = by_group.setdefault(
                    m["group_id"], {"group_id": m["group_id"], "size": m["size"], "members": []}
                )
                group["members"].append({**m, "text": texts.get(m["id"], "")})
            out["methods"].append({"method": name, "groups": list(by_group.values())})
        out["all_methods"] = methods
        out["reviews"] = {
            (r["method"], r["id"]): r
            for r in latest_reviews(con, sorted(seen))
            if r["kind"] == "duplicate"
        }
    return out


def audit(catalog: Catalog, refset: str | None = None, *, near_misses: int = 50) -> dict[str, Any]:
    """The audit's hits and its closest near misses, per refset, with the latest reviews."""
    out: dict[str, Any] = {"refset": refset, "refsets": [], "hits": [], "misses": []}
    if not catalog.has_table(tables.CONTAMINATION.name):
        return out
    params = {"all": refset is None, "refsets": [refset] if refset else [], "limit": near_misses}
    with catalog.connection() as con:
        out["refsets"] = [r["refset"] for r in rows(con, _REFSETS)]
        out["hits"] = rows(con, HITS, **params)
        out["misses"] = rows(con, NEAR_MISSES_SQL, **params, blank=BLANK_REASON)
        ids = sorted({r["id"] for r in out["hits"] + out["misses"]})
        texts = captions(con, ids)
        decided = {
            (r["id"], r["refset"], r["ref_id"]): r
            for r in latest_reviews(con, ids)
            if r["kind"] == "contamination"
        }
    for row in out["hits"] + out["misses"]:
        row["text"] = texts.get(row["id"], "")
        row["review"] = decided.get((row["id"], row["refset"], row["ref_id"]))
    return out
