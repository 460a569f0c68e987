"""The audit report's HTML pieces: escaping, tables, thumbnails, the evidence of a pair, the
rule a missed pair came closest to, and the score histogram as inline SVG."""

from __future__ import annotations

import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coyo_db.audit.decision import DEFAULT_POINT, METHODS, OperatingPoint

log = logging.getLogger(__name__)

THUMB_SIDE = 192
BINS = 40  # histogram bins over scores 0..1
CAPTION_CHARS = 160

COLOURS = {
    "local": "#1b9e77",
    "phash_exact": "#d95f02",
    "layout": "#7570b3",
    "descriptor": "#e7298a",
    "phash_radius": "#66a61e",
    "near misses": "#8c8c8c",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; } h3 { font-size: 1em; }
table { border-collapse: collapse; background: #fff; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pair { display: flex; gap: 8px; }
figure { margin: 0; text-align: center; font-size: 0.8em; max-width: 196px; }
figure img { max-width: 192px; max-height: 192px; border: 1px solid #999; background: #ddd; }
.caption { color: #555; font-style: italic; overflow-wrap: anywhere; }
.missing { width: 192px; height: 120px; display: flex; align-items: center;
           justify-content: center; background: #eee; color: #777; border: 1px dashed #999; }
nav { margin: 1em 0; } nav a { margin-right: 0.8em; }
.method { font-weight: 600; }
.note { color: #555; max-width: 60em; }
.head { display: flex; gap: 1.5em; align-items: flex-start; }
.members { display: flex; flex-wrap: wrap; gap: 8px; }
.legend span { margin-right: 1em; } .legend i { display: inline-block; width: 0.8em;
  height: 0.8em; margin-right: 0.3em; vertical-align: baseline; }
svg.hist { background: #fff; border: 1px solid #ccc; }
svg.hist text { font-size: 10px; fill: #444; }
"""


class Markup(str):
    """Text that is already HTML (built here from escaped values), put in a cell as it is."""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def html_cell(value: object) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if isinstance(value, bool) or value is None:
        return f"<td>{esc(value)}</td>"
    if isinstance(value, float):
        return f'<td class="num">{fmt_value(value, ".3f")}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{esc(value)}</td>"


def html_table(columns: Sequence[str], rows: Sequence[Sequence[object]], table_id: str) -> str:
    head = "".join(f"<th>{esc(n)}</th>" for n in columns)
    body = "".join("<tr>" + "".join(html_cell(v) for v in row) + "</tr>" for row in rows)
    return (
        f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def fmt_value(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def count_text(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def ref_page_name(refset: str, ref_id: int) -> str:
    """The path of a reference's page, relative to the report folder."""
    return f"refs/{safe_name(refset)}-{int(ref_id)}.html"


def hit_anchor(row: Mapping[str, Any]) -> str:
    return f"hit-{safe_name(row['refset'])}-{row['ref_id']}-{row['id']}"


# ---- thumbnails -------------------------------------------------------------------------------


def write_thumbnail(data: bytes | None, target: Path) -> bool:
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


def write_thumbnails(locations: list[tuple[str, str]], names: list[str], folder: Path) -> set[str]:
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
        if write_thumbnail(fetched.data, folder / name):
            done.add(name)
    return done


class Thumbs:
    """The thumbnails the pages show: named while the pages are planned, then written in one
    pass over the shards, before any page is rendered."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.wanted: dict[str, tuple[str, str]] = {}
        self.available: set[str] = set()

    def data(self, row: Mapping[str, Any]) -> str:
        name = f"d-{row['id']}.jpg"
        self.wanted.setdefault(name, (row.get("shard") or "", row.get("member") or ""))
        return name

    def ref(self, ref: Mapping[str, Any]) -> str:
        name = f"r-{safe_name(ref['refset'])}-{ref['ref_id']}.jpg"
        self.wanted.setdefault(name, (ref.get("shard") or "", ref.get("member") or ""))
        return name

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        names = list(self.wanted)
        self.available = write_thumbnails([self.wanted[n] for n in names], names, self.folder)

    def figure(self, name: str, caption: str, up: str = "", extra: str = "") -> str:
        if name in self.available:
            image = f'<img src="{up}thumbs/{esc(name)}" alt="{esc(caption)}">'
        else:
            image = '<div class="missing">image unavailable</div>'
        return f"<figure>{image}<figcaption>{esc(caption)}{extra}</figcaption></figure>"


# ---- evidence ---------------------------------------------------------------------------------


def is_known(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def closest_rule(
    row: Mapping[str, Any], point: OperatingPoint = DEFAULT_POINT
) -> tuple[str | None, float, str]:
    """The decision rule a candidate that is no hit came closest to: (method, the share of its
    threshold reached, 0..1, what it had against what the rule needs).

    `row` holds the candidate's ``hamming``, ``cosine``, ``inliers``, ``coverage``, ``layout``
    and ``low_info``. Hamming distances count from 32, the distance of unrelated images. Rules
    that cannot fire for the pair (the loose ones for low-information pairs, rules whose
    evidence was not computed) are not considered; (None, 0.0, ...) when none is left.
    """
    hamming, cosine = row.get("hamming"), row.get("cosine")
    inliers, coverage, layout = row.get("inliers"), row.get("coverage"), row.get("layout")
    loose = not row.get("low_info")
    options: list[tuple[str, float, str]] = []
    if is_known(inliers) and is_known(coverage):
        share = min(inliers / point.min_inliers, coverage / point.min_coverage)
        text = (
            f"inliers {inliers} of {point.min_inliers}, "
            f"coverage {coverage:.3f} of {point.min_coverage:g}"
        )
        options.append(("local", share, text))
    if is_known(hamming):
        options.append(("phash_exact", (32 - hamming) / 32, f"Hamming {hamming}, needs 0"))
    if is_known(layout):
        options.append(
            ("layout", layout / point.min_layout, f"layout {layout:.3f} of {point.min_layout:g}")
        )
    if loose and is_known(cosine):
        share = cosine / point.descriptor_cosine
        options.append(("descriptor", share, f"cosine {cosine:.3f} of {point.descriptor_cosine:g}"))
    if loose and is_known(hamming):
        share = (32 - hamming) / (32 - point.phash_radius)
        options.append(("phash_radius", share, f"Hamming {hamming}, needs <= {point.phash_radius}"))
    if not options:
        return None, 0.0, "no rule applies"
    method, share, text = max(options, key=lambda o: o[1])  # the first of equals: rule order
    return method, max(0.0, min(1.0, share)), text


def evidence_html(row: Mapping[str, Any], *, method: bool = True) -> str:
    parts = [f'<span class="method">{esc(row["method"])}</span>'] if method else []
    parts += [
        f"score {fmt_value(row['score'], '.3f')}",
        f"Hamming {fmt_value(row['hamming'], 'd')}",
        f"cosine {fmt_value(row['cosine'], '.3f')}",
        f"inliers {fmt_value(row['inliers'], 'd')}",
        f"coverage {fmt_value(row['coverage'], '.2f')}",
    ]
    if "layout" in row:
        parts.append(f"layout {fmt_value(row['layout'], '.3f')}")
    flipped = row["flipped"]
    parts.append(f"flipped {'-' if flipped is None else 'yes' if flipped else 'no'}")
    return "<br>".join(parts)


# ---- histogram --------------------------------------------------------------------------------


def score_bin(score: float, bins: int = BINS) -> int:
    return min(bins - 1, max(0, math.floor(score * bins)))


def score_histogram_svg(
    counts: Mapping[str, Sequence[int]], title: str, *, width: int = 560, height: int = 170
) -> str:
    """An inline SVG histogram of scores in 0..1: one bar per bin, stacked by series (in the
    order of `counts`), coloured by :data:`COLOURS`, each part titled with its count."""
    left, right, top, bottom = 44, 10, 18, 24
    bins = max((len(v) for v in counts.values()), default=BINS) or BINS
    totals = [sum(series[i] for series in counts.values()) for i in range(bins)]
    peak = max(totals, default=0)
    plot_w, plot_h = width - left - right, height - top - bottom
    bar_w = plot_w / bins
    parts = [
        f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}"'
        f' data-total="{sum(totals)}">',
        f'<text x="{left}" y="12">{esc(title)}</text>',
    ]
    for i in range(bins):
        y = top + plot_h
        for name, series in counts.items():
            n = series[i]
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            lo, hi = i / bins, (i + 1) / bins
            parts.append(
                f'<rect x="{left + i * bar_w + 0.5:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}"'
                f' height="{h:.1f}" fill="{COLOURS.get(name, "#555")}" data-n="{n}">'
                f"<title>{esc(name)}: {n:,} with score {lo:.3f}-{hi:.3f}</title></rect>"
            )
    axis_y = top + plot_h
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#444"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="#444"/>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:,}</text>'
        f'<text x="{left - 4}" y="{axis_y}" text-anchor="end">0</text>'
    )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#444"/>'
            f'<text x="{x:.1f}" y="{axis_y + 15}" text-anchor="middle">{tick:g}</text>'
        )
    if not peak:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
            "no scores</text>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{COLOURS.get(name, "#555")}"></i>{esc(name)} '
        f"({sum(series):,})</span>"
        for name, series in counts.items()
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


# ---- queries ----------------------------------------------------------------------------------


def method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def caption_html(captions: Mapping[int, str], image_id: int) -> str:
    text = captions.get(image_id)
    if not text:
        return ""
    if len(text) > CAPTION_CHARS:
        text = text[: CAPTION_CHARS - 1] + "…"
    return f'<div class="caption">{esc(text)}</div>'


# ---- the report -------------------------------------------------------------------------------
