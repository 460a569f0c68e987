"""The audit's HTML report: static files that open from the file system, no server, no script.

The pages of ``<dir>``:

- ``index.html``: the counts per reference set, per reference set and method (the view
  ``contamination_summary``) and per group of near-identical references (hits, images,
  references hit, groups hit), and two inline SVG histograms on one score axis: the hits'
  scores, stacked by method, and those of the candidates that are no hits;
- ``page-0001.html``...: :data:`PER_PAGE` hits each (per set, highest score first), the
  dataset image and the reference side by side with the evidence (method, score, Hamming
  distance, cosine, inliers, coverage, flip), each linked to its reference's page;
- ``near-misses.html``: the :data:`NEAR_MISSES` best-scored candidates that are no hits, with
  both images, their evidence and the rule each came closest to (:func:`closest_rule`): where
  to look for what the audit missed (blank references' candidates left out: never hits);
- ``refs/<refset>-<ref_id>.html``: one page per reference with hits: all its hits, then the
  other members of its group of near-identical references with theirs.

Thumbnails are small JPEGs in ``<dir>/thumbs/``, read back from the shards once for all the
pages; an image that cannot be read gets a placeholder. Every value from the data (paths,
captions) is HTML-escaped (:mod:`.report_html`; the queries: :mod:`.report_queries`).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.audit.decision import METHODS
from coyo_db.audit.low_info import BLANK_REASON
from coyo_db.audit.report_html import (
    BINS,
    Markup,
    Thumbs,
    caption_html,
    closest_rule,
    count_text,
    esc,
    evidence_html,
    hit_anchor,
    html_page,
    html_table,
    is_known,
    method_order,
    ref_page_name,
    safe_name,
    score_bin,
    score_histogram_svg,
)
from coyo_db.audit.report_queries import (
    BY_METHOD,
    CANDIDATE_COUNTS,
    HITS,
    MISS_BINS,
    NEAR_MISSES_SQL,
    REFS,
    captions_of,
    run_query,
)
from coyo_db.errors import CatalogError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

PER_PAGE = 50
NEAR_MISSES = 200
MAX_MEMBERS = 24  # group members without hits shown on a reference page
NEAR_MISSES_PAGE = "near-misses.html"


def write_report(
    catalog: Catalog,
    out: str | Path,
    *,
    refsets: Sequence[str] | None = None,
    per_page: int = PER_PAGE,
    near_misses: int = NEAR_MISSES,
) -> Path:
    """Write the report into folder `out` (see the module docstring); returns the path of its
    index.html. `refsets` limits it to those reference sets; `near_misses` is how many
    candidates that are no hits the near-misses page lists."""
    from coyo_db.catalog import tables

    if not catalog.has_table(tables.CONTAMINATION.name):
        raise CatalogError("no contamination table yet; run `coyo-db audit --refset NAME` first")
    out = Path(out).expanduser()
    (out / "refs").mkdir(parents=True, exist_ok=True)
    params = {
        "all": refsets is None,
        "refsets": list(refsets or []),
        "blank": BLANK_REASON,
        "limit": max(0, int(near_misses)),
        "bins": BINS,
    }
    has_candidates = catalog.has_table(tables.CONTAMINATION_CANDIDATES.name)
    with catalog.connection() as con:
        hits = run_query(con, HITS, **params)
        ref_rows = run_query(con, REFS, **params)
        by_method = run_query(con, BY_METHOD, **params)
        if has_candidates:
            candidate_counts = run_query(con, CANDIDATE_COUNTS, **params)
            misses = run_query(con, NEAR_MISSES_SQL, **params)
            miss_bins = run_query(con, MISS_BINS, **params)
        else:
            candidate_counts, misses, miss_bins = [], [], []

    refs = {(r["refset"], r["ref_id"]): r for r in ref_rows}
    members: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for ref in sorted(ref_rows, key=lambda r: (r["refset"], r["ref_id"])):
        members[ref["refset"], ref["ref_group"]].append(ref)
    hits_of: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    hits_of_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    pages = max(1, math.ceil(len(hits) / per_page))
    page_names = [f"page-{n + 1:04d}.html" for n in range(pages)]
    for n, row in enumerate(hits):
        row["page"] = page_names[n // per_page]
        hits_of[row["refset"], row["ref_id"]].append(row)
        hits_of_image[row["id"]].append(row)
    captions = captions_of(catalog, {r["id"] for r in hits} | {r["id"] for r in misses})

    thumbs = Thumbs(out / "thumbs")
    for row in [*hits, *misses]:
        thumbs.data(row)
        thumbs.ref(refs.get((row["refset"], row["ref_id"]), row))
    for refset, ref_id in hits_of:
        group = members.get((refset, refs.get((refset, ref_id), {}).get("ref_group", ref_id)), [])
        for member in [m for m in group if (m["refset"], m["ref_id"]) not in hits_of][:MAX_MEMBERS]:
            thumbs.ref(member)
    thumbs.write()

    context = _Context(thumbs, refs, members, hits_of, hits_of_image, captions, page_names)
    index = out / "index.html"
    index.write_text(
        _index_page(context, hits, by_method, candidate_counts, misses, miss_bins, refsets),
        encoding="utf-8",
    )
    for n, name in enumerate(page_names):
        chunk = hits[n * per_page : (n + 1) * per_page]
        (out / name).write_text(_hits_page(context, chunk, n), encoding="utf-8")
    (out / NEAR_MISSES_PAGE).write_text(
        _near_misses_page(context, misses, candidate_counts, near_misses), encoding="utf-8"
    )
    for key in hits_of:
        (out / ref_page_name(*key)).write_text(_ref_page(context, key), encoding="utf-8")
    log.info(
        "report: %d hits on %d pages, %d references, %d near misses in %s",
        len(hits),
        pages,
        len(hits_of),
        len(misses),
        out,
    )
    return index


class _Context:
    """What every page renderer reads."""

    def __init__(
        self,
        thumbs: Thumbs,
        refs: dict[tuple[str, int], dict[str, Any]],
        members: dict[tuple[str, int], list[dict[str, Any]]],
        hits_of: dict[tuple[str, int], list[dict[str, Any]]],
        hits_of_image: dict[int, list[dict[str, Any]]],
        captions: dict[int, str],
        page_names: list[str],
    ) -> None:
        self.thumbs, self.refs, self.members = thumbs, refs, members
        self.hits_of, self.hits_of_image = hits_of, hits_of_image
        self.captions, self.page_names = captions, page_names

    def nav(self, up: str = "") -> str:
        links = [f'<a href="{up}index.html">summary</a>']
        links.append(f'<a href="{up}{NEAR_MISSES_PAGE}">near misses</a>')
        links += [f'<a href="{up}{name}">{n + 1}</a>' for n, name in enumerate(self.page_names)]
        return "<nav>" + "".join(links) + "</nav>"

    def ref_of(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.refs.get((row["refset"], row["ref_id"]), row)

    def ref_link(self, refset: str, ref_id: int, text: str, up: str = "") -> str:
        if (refset, ref_id) not in self.hits_of:
            return esc(text)
        return f'<a href="{up}{esc(ref_page_name(refset, ref_id))}">{esc(text)}</a>'

    def group_of(self, refset: str, ref_id: int) -> list[dict[str, Any]]:
        group = self.refs.get((refset, ref_id), {}).get("ref_group", ref_id)
        return self.members.get((refset, group), [])

    def data_figure(self, row: Mapping[str, Any], up: str = "") -> str:
        name = f"d-{row['id']}.jpg"
        extra = caption_html(self.captions, row["id"])
        return self.thumbs.figure(name, f"dataset id {row['id']}", up, extra)

    def ref_figure(self, ref: Mapping[str, Any], up: str = "") -> str:
        name = f"r-{safe_name(ref['refset'])}-{ref['ref_id']}.jpg"
        return self.thumbs.figure(name, f"{ref['refset']}: {ref['ref_path']}", up)


def _index_page(
    ctx: _Context,
    hits: list[dict[str, Any]],
    by_method: list[dict[str, Any]],
    candidate_counts: list[dict[str, Any]],
    misses: list[dict[str, Any]],
    miss_bins: list[dict[str, Any]],
    refsets: Sequence[str] | None,
) -> str:
    per_set: dict[str, dict[str, Any]] = {}
    names = list(refsets) if refsets is not None else []
    names += [r["refset"] for r in hits] + [r["refset"] for r in candidate_counts]
    for name in dict.fromkeys(names):
        per_set[name] = {"hits": 0, "images": set(), "refs": set(), "groups": set()}
    for row in hits:
        entry = per_set[row["refset"]]
        entry["hits"] += 1
        entry["images"].add(row["id"])
        entry["refs"].add(row["ref_id"])
        entry["groups"].add(row["ref_group"])
    counted = {r["refset"]: r for r in candidate_counts}
    set_rows = []
    for name, entry in per_set.items():
        in_set = [r for r in ctx.refs.values() if r["refset"] == name]
        cands = counted.get(name, {})
        set_rows.append(
            [
                name,
                len(in_set),
                len({r["ref_group"] for r in in_set}),
                cands.get("candidates", 0),
                entry["hits"],
                len(entry["images"]),
                len(entry["refs"]),
                len(entry["groups"]),
            ]
        )
    set_table = html_table(
        [
            "refset",
            "references",
            "groups",
            "candidates",
            "hits",
            "images",
            "references hit",
            "groups hit",
        ],
        set_rows,
        "by-refset",
    )
    method_table = html_table(
        ["refset", "method", "hits", "images", "references hit", "groups hit", "median score"],
        [
            [
                r["refset"],
                r["method"],
                r["hits"],
                r["images"],
                r["references_hit"],
                r["groups_hit"],
                r["median_score"],
            ]
            for r in by_method
        ],
        "by-method",
    )

    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in hits:
        groups[row["refset"], row["ref_group"]].append(row)
    group_rows = []
    for (refset, group), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        hit_refs = sorted({r["ref_id"] for r in rows})
        links = ", ".join(
            ctx.ref_link(refset, ref_id, str(ctx.refs.get((refset, ref_id), rows[0])["ref_path"]))
            if (refset, ref_id) in ctx.refs
            else ctx.ref_link(refset, ref_id, f"ref {ref_id}")
            for ref_id in hit_refs
        )
        group_rows.append(
            [
                refset,
                group,
                len(ctx.members.get((refset, group), [])) or 1,
                Markup(links),
                len(rows),
                len({r["id"] for r in rows}),
                len(hit_refs),
                ", ".join(sorted({r["method"] for r in rows}, key=method_order)),
            ]
        )
    group_table = html_table(
        ["refset", "group", "members", "references hit", "hits", "images", "refs hit", "methods"],
        group_rows,
        "by-group",
    )

    hit_counts = {m: [0] * BINS for m in METHODS}
    for row in hits:
        if is_known(row["score"]):
            hit_counts.setdefault(row["method"], [0] * BINS)[score_bin(row["score"])] += 1
    hit_counts = {m: c for m, c in hit_counts.items() if any(c)} or {"hits": [0] * BINS}
    miss_counts = [0] * BINS
    for row in miss_bins:
        miss_counts[row["bin"]] = row["n"]
    total_candidates = sum(r["candidates"] for r in candidate_counts)
    total_misses = sum(r["misses"] for r in candidate_counts)
    blank_misses = sum(r["blank_misses"] for r in candidate_counts)
    candidates_line = (
        f"<p>Candidate pairs verified: {total_candidates:,}. Hits at the default operating "
        f"point: {len(hits):,}, on {count_text(len(ctx.hits_of_image), 'dataset image')} and "
        f"{count_text(len(ctx.hits_of), 'reference')}. Candidates that are no hits: "
        f'{total_misses:,} (<a href="{NEAR_MISSES_PAGE}">near misses</a>, best first), '
        f"besides {count_text(blank_misses, 'candidate')} of blank references, left out.</p>"
    )
    body = (
        f"<h1>Contamination audit</h1>{ctx.nav()}{candidates_line}"
        "<h2>Per reference set</h2>"
        + set_table
        + "<h2>Hits per reference set and method</h2>"
        + (method_table if by_method else "<p>No hits.</p>")
        + "<h2>Scores</h2>"
        '<p class="note">A hit\'s score is that of the rule that made it (see docs/audit.md); a '
        "candidate that is no hit keeps its best evidence: max(cosine, inliers / 100, layout)."
        "</p>"
        + score_histogram_svg(hit_counts, "hits, by method")
        + score_histogram_svg({"near misses": miss_counts}, "candidates that are no hits")
        + "<h2>Hits per group of near-identical references</h2>"
        '<p class="note">A group is a reference and its near-identical copies in the same set; '
        "each reference hit links to its page.</p>"
        + (group_table if group_rows else "<p>No hits.</p>")
        + "<h2>Pages</h2>"
        + ctx.nav()
    )
    return html_page("Contamination audit", body)


def _hits_page(ctx: _Context, chunk: list[dict[str, Any]], n: int) -> str:
    pages = len(ctx.page_names)
    items = []
    for row in chunk:
        ref = ctx.ref_of(row)
        pair = f'<div class="pair">{ctx.data_figure(row)}{ctx.ref_figure(ref)}</div>'
        items.append(
            f'<tr id="{hit_anchor(row)}" class="hit" data-id="{row["id"]}"'
            f' data-refset="{esc(row["refset"])}" data-ref="{row["ref_id"]}">'
            f"<td>{pair}</td><td>{evidence_html(row)}</td>"
            f"<td>id {row['id']}<br>{esc(row['refset'])}<br>"
            f"{ctx.ref_link(row['refset'], row['ref_id'], str(row['ref_path']))}<br>"
            f"group {row['ref_group']}</td></tr>"
        )
    names = ctx.page_names
    prev_link = f'<a href="{names[n - 1]}">previous</a>' if n > 0 else ""
    next_link = f'<a href="{names[n + 1]}">next</a>' if n + 1 < pages else ""
    body = (
        f"<h1>Contamination hits, page {n + 1} of {pages}</h1>{ctx.nav()}"
        f"<nav>{prev_link}{next_link}</nav>"
        '<table id="hits"><thead><tr><th>dataset image / reference</th><th>evidence</th>'
        f"<th>ids</th></tr></thead><tbody>{''.join(items)}</tbody></table>"
        f"<nav>{prev_link}{next_link}</nav>"
    )
    if not chunk:
        body += "<p>No hits.</p>"
    return html_page(f"Hits {n + 1}/{pages}", body)


def _near_misses_page(
    ctx: _Context,
    misses: list[dict[str, Any]],
    candidate_counts: list[dict[str, Any]],
    limit: int,
) -> str:
    total = sum(r["misses"] for r in candidate_counts)
    blank = sum(r["blank_misses"] for r in candidate_counts)
    items = []
    for row in misses:
        method, share, text = closest_rule(row)
        also = ""
        if row["id"] in ctx.hits_of_image:
            links = ", ".join(
                ctx.ref_link(h["refset"], h["ref_id"], f"{h['refset']}: {h['ref_path']}")
                for h in ctx.hits_of_image[row["id"]]
            )
            also = f"<br><strong>this image is a hit</strong> of {links}"
        pair = f'<div class="pair">{ctx.data_figure(row)}{ctx.ref_figure(ctx.ref_of(row))}</div>'
        closest = (
            f'<span class="method">{esc(method or "none")}</span> '
            f"({share:.0%} of its threshold)<br>{esc(text)}"
        )
        items.append(
            f'<tr class="miss" data-id="{row["id"]}" data-refset="{esc(row["refset"])}"'
            f' data-ref="{row["ref_id"]}" data-score="{row["score"]:.6f}">'
            f"<td>{pair}</td><td>{closest}</td><td>{evidence_html(row, method=False)}</td>"
            f"<td>id {row['id']}<br>{esc(row['refset'])}<br>"
            f"{ctx.ref_link(row['refset'], row['ref_id'], str(row['ref_path']))}<br>"
            f"found by {esc(row['found_by'])}"
            f"{'<br>low-information' if row['low_info'] else ''}{also}</td></tr>"
        )
    note = (
        f'<p class="note">The {len(misses):,} best-scored of the {total:,} candidate pairs that '
        f"are no hits (at most {limit:,} are listed), highest score first: where to look for "
        "copies the audit missed. A candidate's score is its best evidence, max(cosine, "
        "inliers / 100, layout). <em>Closest rule</em> is the decision rule whose threshold the "
        "pair came nearest to, as the share of it reached (Hamming distances count from 32, "
        "that of unrelated images); the loose rules (descriptor, phash_radius) are off for "
        f"low-information pairs. Left out: {count_text(blank, 'candidate')} of blank "
        "(empty-frame) references, which are never hit.</p>"
    )
    table = (
        '<table id="near-misses"><thead><tr><th>dataset image / reference</th>'
        "<th>closest rule</th><th>evidence</th><th>ids</th></tr></thead>"
        f"<tbody>{''.join(items)}</tbody></table>"
    )
    body = f"<h1>Near misses</h1>{ctx.nav()}{note}" + (
        table if misses else "<p>No candidates that are not hits.</p>"
    )
    return html_page("Near misses", body)


def _ref_hits_table(
    ctx: _Context, rows: list[dict[str, Any]], table_id: str, ref_id: int, up: str
) -> str:
    items = []
    for row in rows:
        items.append(
            f'<tr class="hit" data-id="{row["id"]}" data-ref="{row["ref_id"]}">'
            f"<td>{ctx.data_figure(row, up)}</td><td>{evidence_html(row)}</td>"
            f"<td>id {row['id']}<br>{esc(row['shard'])}<br>{esc(row['member'])}<br>"
            f'<a href="{up}{row["page"]}#{hit_anchor(row)}">on {row["page"]}</a></td></tr>'
        )
    return (
        f'<table id="{esc(table_id)}" data-ref="{ref_id}"><thead><tr><th>dataset image</th>'
        f"<th>evidence</th><th>where</th></tr></thead><tbody>{''.join(items)}</tbody></table>"
    )


def _ref_page(ctx: _Context, key: tuple[str, int]) -> str:
    refset, ref_id = key
    up = "../"
    rows = ctx.hits_of[key]
    ref = ctx.refs.get(key) or {
        "refset": refset,
        "ref_id": ref_id,
        "ref_path": rows[0]["ref_path"],
        "ref_group": rows[0]["ref_group"],
        "low_info_reason": None,
    }
    group = ctx.group_of(refset, ref_id)
    others = [m for m in group if m["ref_id"] != ref_id]
    facts = html_table(
        ["refset", "ref_id", "path", "group", "group members", "low-information", "hits"],
        [
            [
                refset,
                ref_id,
                ref["ref_path"],
                ref["ref_group"],
                max(1, len(group)),
                ref.get("low_info_reason") or "no",
                len(rows),
            ]
        ],
        "reference",
    )
    hit_others = [m for m in others if (refset, m["ref_id"]) in ctx.hits_of]
    quiet = [m for m in others if (refset, m["ref_id"]) not in ctx.hits_of]
    parts = []
    for member in hit_others:
        member_hits = ctx.hits_of[refset, member["ref_id"]]
        link = ctx.ref_link(refset, member["ref_id"], str(member["ref_path"]), up)
        parts.append(
            f'<div class="head" data-member="{member["ref_id"]}">{ctx.ref_figure(member, up)}'
            f"<div><h3>{link}</h3><p>{count_text(len(member_hits), 'hit')}</p></div></div>"
            + _ref_hits_table(ctx, member_hits, f"hits-{member['ref_id']}", member["ref_id"], up)
        )
    if quiet:
        shown = quiet[:MAX_MEMBERS]
        more = len(quiet) - len(shown)
        parts.append(
            '<h3>Members without hits</h3><div class="members">'
            + "".join(ctx.ref_figure(m, up) for m in shown)
            + "</div>"
            + (f"<p>and {more:,} more.</p>" if more else "")
        )
    group_html = "".join(parts) if others else "<p>It is alone in its group.</p>"
    body = (
        f"<h1>Reference {esc(refset)}: {esc(ref['ref_path'])}</h1>{ctx.nav(up)}"
        f'<div class="head">{ctx.ref_figure(ref, up)}{facts}</div>'
        f"<h2>Its hits ({len(rows):,})</h2>"
        + _ref_hits_table(ctx, rows, "hits", ref_id, up)
        + f"<h2>The other members of its group ({len(others):,})</h2>"
        f'<section id="group">{group_html}</section>'
    )
    return html_page(f"Reference {refset}: {ref['ref_path']}", body)
