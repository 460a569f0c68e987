"""The audit's HTML report: static files that open from the file system, no server, no script.

``<dir>/index.html`` summarises the hits per reference set and method (and the candidates the
audit looked at), then links the pages; ``<dir>/page-0001.html``... show :data:`PER_PAGE` hits
each, the dataset image and the reference side by side with the evidence (method, score,
Hamming distance, cosine, inliers, coverage, flip). Thumbnails are small JPEGs in
``<dir>/thumbs/``, read back from the shards the images came from.
"""

from __future__ import annotations

import html
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.errors import CatalogError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

PER_PAGE = 50
THUMB_SIDE = 192

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pair { display: flex; gap: 8px; }
.pair figure { margin: 0; text-align: center; font-size: 0.8em; }
.pair img { max-width: 192px; max-height: 192px; border: 1px solid #999; background: #ddd; }
.missing { width: 192px; height: 120px; display: flex; align-items: center;
           justify-content: center; background: #eee; color: #777; border: 1px dashed #999; }
nav { margin: 1em 0; } nav a { margin-right: 0.8em; }
.method { font-weight: 600; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _table(table: pa.Table) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in table.column_names)
    rows = []
    for row in table.to_pylist():
        cells = []
        for value in row.values():
            if isinstance(value, float):
                cells.append(f'<td class="num">{value:.3f}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="num">{value:,}</td>')
            else:
                cells.append(f"<td>{html.escape('' if value is None else str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _thumbnail(data: bytes | None, target: Path) -> bool:
    from PIL import Image, ImageOps

    if not data:
        return False
    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        img.save(target, "JPEG", quality=80)
        return True
    except Exception as exc:  # an unreadable image gets a placeholder, the report goes on
        log.warning("thumbnail %s: %s", target.name, exc)
        return False


def _write_thumbnails(locations: list[tuple[str, str]], names: list[str], folder: Path) -> set[str]:
    from coyo_db.ingest.image_fetch import fetch_images

    done = set()
    todo = {}
    for location, name in zip(locations, names, strict=True):
        if name not in todo and not (folder / name).exists():
            todo[name] = location
        elif (folder / name).exists():
            done.add(name)
    order = list(todo)
    for fetched in fetch_images([todo[name] for name in order]):
        name = order[fetched.index]
        if _thumbnail(fetched.data, folder / name):
            done.add(name)
    return done


def _figure(name: str, available: set[str], caption: str) -> str:
    if name in available:
        image = f'<img src="thumbs/{html.escape(name)}" alt="{html.escape(caption)}">'
    else:
        image = '<div class="missing">image unavailable</div>'
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _fmt(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def write_report(
    catalog: Catalog,
    out: str | Path,
    *,
    refsets: Sequence[str] | None = None,
    per_page: int = PER_PAGE,
) -> Path:
    """Write the report into folder `out`; returns the path of its index.html."""
    from coyo_db.catalog import tables

    CANDIDATES, CONTAMINATION = tables.CONTAMINATION_CANDIDATES.name, tables.CONTAMINATION.name
    REFSET_IMAGES = tables.REFSET_IMAGES.name

    if not catalog.has_table(CONTAMINATION):
        raise CatalogError("no contamination table yet; run `coyo-db audit --refset NAME` first")
    out = Path(out).expanduser()
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    hits = catalog.dataset(CONTAMINATION).to_table()
    if refsets:
        hits = hits.filter(pc.is_in(hits["refset"], pa.array(list(refsets), pa.string())))
    hits = hits.sort_by([("refset", "ascending"), ("score", "descending"), ("id", "ascending")])
    refs = catalog.dataset(REFSET_IMAGES).to_table(columns=["refset", "ref_id", "shard", "member"])
    ref_where = {
        (r, i): (s, m)
        for r, i, s, m in zip(
            refs["refset"].to_pylist(),
            refs["ref_id"].to_pylist(),
            refs["shard"].to_pylist(),
            refs["member"].to_pylist(),
            strict=True,
        )
    }

    summary_rows: dict[tuple[str, str], list[int]] = {}
    for refset, method, image_id in zip(
        hits["refset"].to_pylist(), hits["method"].to_pylist(), hits["id"].to_pylist(), strict=True
    ):
        entry = summary_rows.setdefault((refset, method), [0, set()])  # type: ignore[list-item]
        entry[0] += 1
        entry[1].add(image_id)  # type: ignore[union-attr]
    summary = pa.table(
        {
            "refset": [k[0] for k in summary_rows],
            "method": [k[1] for k in summary_rows],
            "hits": [v[0] for v in summary_rows.values()],
            "images": [len(v[1]) for v in summary_rows.values()],  # type: ignore[arg-type]
        }
    )
    candidates_line = ""
    if catalog.has_table(CANDIDATES):
        cands = catalog.dataset(CANDIDATES).to_table(columns=["refset", "id", "hit"])
        if refsets:
            cands = cands.filter(pc.is_in(cands["refset"], pa.array(list(refsets), pa.string())))
        candidates_line = (
            f"<p>{len(cands):,} candidate pairs were verified; {len(hits):,} are hits at the "
            f"default operating point, on {len(pc.unique(hits['id'])):,} dataset images.</p>"
        )

    rows = hits.to_pylist()
    pages = max(1, math.ceil(len(rows) / per_page))
    names = [f"page-{n + 1:04d}.html" for n in range(pages)]
    nav = (
        "<nav>"
        + '<a href="index.html">summary</a>'
        + "".join(f'<a href="{name}">{n + 1}</a>' for n, name in enumerate(names))
        + "</nav>"
    )
    body = (
        "<h1>Contamination audit</h1>"
        + candidates_line
        + "<h2>Hits per reference set and method</h2>"
        + (_table(summary) if len(summary) else "<p>No hits.</p>")
        + "<h2>Pages</h2>"
        + nav
    )
    index = out / "index.html"
    index.write_text(_page("Contamination audit", body), encoding="utf-8")

    for n, name in enumerate(names):
        chunk = rows[n * per_page : (n + 1) * per_page]
        data_names = [f"d-{row['id']}.jpg" for row in chunk]
        ref_names = [f"r-{_safe(row['refset'])}-{row['ref_id']}.jpg" for row in chunk]
        available = _write_thumbnails(
            [(row["shard"], row["member"]) for row in chunk], data_names, thumbs
        )
        available |= _write_thumbnails(
            [ref_where.get((row["refset"], row["ref_id"]), ("", "")) for row in chunk],
            ref_names,
            thumbs,
        )
        items = []
        for row, data_name, ref_name in zip(chunk, data_names, ref_names, strict=True):
            pair = (
                '<div class="pair">'
                + _figure(data_name, available, f"dataset id {row['id']}")
                + _figure(ref_name, available, f"{row['refset']}: {row['ref_path']}")
                + "</div>"
            )
            evidence = (
                f'<span class="method">{html.escape(row["method"])}</span><br>'
                f"score {_fmt(row['score'], '.3f')}<br>Hamming {_fmt(row['hamming'], 'd')}<br>"
                f"cosine {_fmt(row['cosine'], '.3f')}<br>inliers {_fmt(row['inliers'], 'd')}<br>"
                f"coverage {_fmt(row['coverage'], '.2f')}<br>"
                f"flipped {'yes' if row['flipped'] else 'no'}"
            )
            items.append(
                f"<tr><td>{pair}</td><td>{evidence}</td>"
                f"<td>id {row['id']}<br>{html.escape(str(row['refset']))}<br>"
                f"{html.escape(str(row['ref_path']))}</td></tr>"
            )
        prev_link = f'<a href="{names[n - 1]}">previous</a>' if n > 0 else ""
        next_link = f'<a href="{names[n + 1]}">next</a>' if n + 1 < pages else ""
        page_body = (
            f"<h1>Contamination hits, page {n + 1} of {pages}</h1>{nav}"
            f"<nav>{prev_link}{next_link}</nav>"
            "<table><thead><tr><th>dataset image / reference</th><th>evidence</th>"
            f"<th>ids</th></tr></thead><tbody>{''.join(items)}</tbody></table>"
            f"<nav>{prev_link}{next_link}</nav>"
        )
        if not chunk:
            page_body += "<p>No hits.</p>"
        (out / name).write_text(_page(f"Hits {n + 1}/{pages}", page_body), encoding="utf-8")
    log.info("report: %d hits on %d pages in %s", len(rows), pages, out)
    return index


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
