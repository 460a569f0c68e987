"""The audit's HTML report: summary counts, score histograms, paged hits, near misses and one
page per reference hit, all with thumbnails that load from file:// in headless Chromium
(Debian's `chromium` package; the tests fail, not skip, without it), every value escaped."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coyo_db.catalog import Catalog
from tests import audit_helpers

audited = audit_helpers.audited  # the setup shared with the other audit tests, once a session

NEAR = 10  # near misses listed in the test report (the setup has 14 that are not blank)
EVIL_PATH = '<script>alert("ref")</script>&.jpg'
EVIL_CAPTION = "<img src=x onerror=alert(1)> a caption"


@pytest.fixture(scope="module")
def report(audited, tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Path]:
    from coyo_db.audit.report import write_report

    catalog, _ = audited
    out = tmp_path_factory.mktemp("report")
    index = write_report(catalog, out, refsets=["mini"], per_page=2, near_misses=NEAR)
    return catalog, index


@pytest.fixture(scope="module")
def edited(audited, tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Path]:
    """A copy of the audited catalog where astronaut.jpg's path holds markup, its copy has a
    caption with markup, and chelsea.jpg and coffee.jpg form one group; and its report."""
    from coyo_db.audit.report import write_report

    catalog, _ = audited
    home = tmp_path_factory.mktemp("edited") / "home"
    shutil.copytree(catalog.home, home)
    copy = Catalog(home)
    astronaut = copy.sql("SELECT ref_id FROM refset_images WHERE ref_path = 'astronaut.jpg'")
    astronaut = astronaut["ref_id"][0].as_py()
    evil = "'" + EVIL_PATH.replace("'", "''") + "'"
    for table in ("contamination", "contamination_candidates", "refset_images"):
        copy.dataset(table).update({"ref_path": evil}, where=f"ref_id = {astronaut}")
        copy.dataset(table).update({"ref_group": "2"}, where="ref_id IN (2, 3)")
    hit = copy.sql(f"SELECT id FROM contamination WHERE ref_id = {astronaut}")["id"][0].as_py()
    copy.dataset("images").update({"caption": repr(EVIL_CAPTION)}, where=f"id = {hit}")
    index = write_report(copy, tmp_path_factory.mktemp("edited-report"), near_misses=NEAR)
    return copy, index


class _Page(HTMLParser):
    """What the tests read from one page: tables by id (body rows as cell texts), the attributes
    of every <tr>, <img> and <a>, the <svg> charts and the text of <section id="group">."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.trs: list[tuple[str | None, dict[str, str]]] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.svgs: list[dict[str, str]] = []
        self.bars: list[list[int]] = []
        self.group_text = ""
        self._tables: list[str | None] = []
        self._cell: list[str] | None = None
        self._in_head = False
        self._section: list[str | None] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._tables.append(a.get("id"))
            if a.get("id"):
                self.tables.setdefault(a["id"], [])
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr":
            table = self._tables[-1] if self._tables else None
            self.trs.append((table, a))
            if table and not self._in_head:
                self.tables[table].append([])
        elif tag == "td":
            self._cell = []
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "svg":
            self.svgs.append(a)
            self.bars.append([])
        elif tag == "rect":
            self.bars[-1].append(int(a["data-n"]))
        elif tag == "section":
            self._section.append(a.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._tables:
            self._tables.pop()
        elif tag == "td" and self._cell is not None:
            table = self._tables[-1] if self._tables else None
            if table and not self._in_head:
                self.tables[table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "section" and self._section:
            self._section.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if "group" in self._section:
            self.group_text += data


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _pages(index: Path) -> list[Path]:
    return sorted(index.parent.rglob("*.html"))


def _ref_ids(catalog: Catalog, where: str = "refset = 'mini'") -> dict[int, list[int]]:
    rows = catalog.sql(f"SELECT ref_id, id FROM contamination WHERE {where}").to_pylist()
    out: dict[int, list[int]] = {}
    for row in rows:
        out.setdefault(row["ref_id"], []).append(row["id"])
    return out


def test_report_pages_and_thumbnails(report) -> None:
    catalog, index = report
    hits = catalog.sql("SELECT count(*) AS n FROM contamination WHERE refset = 'mini'")
    assert hits["n"][0].as_py() == 3
    text = index.read_text()
    assert "Hits per reference set and method" in text and "<td>mini</td>" in text
    pages = sorted(index.parent.glob("page-*.html"))
    assert [p.name for p in pages] == ["page-0001.html", "page-0002.html"]  # 3 hits, 2 a page
    first = pages[0].read_text()
    assert 'href="page-0002.html">next' in first
    images = re.findall(r'<img src="([^"]+)"', first)
    assert len(images) == 4  # two hits, each with the dataset image and the reference
    assert "inliers" in first and "cosine" in first and "Hamming" in first
    names = {p.relative_to(index.parent).as_posix() for p in _pages(index)}
    assert names == {
        "index.html",
        "near-misses.html",
        "page-0001.html",
        "page-0002.html",
        *(f"refs/mini-{ref_id}.html" for ref_id in _ref_ids(catalog)),
    }
    for page in _pages(index):  # nothing that needs a server or the network
        assert not re.search(r"(src|href)=\"(https?:|//|/)", page.read_text())
        assert "<script" not in page.read_text()


def test_every_image_and_link_resolves(report) -> None:
    _, index = report
    count = 0
    for page in _pages(index):
        parsed = _Page(page)
        for src in parsed.imgs:
            path = (page.parent / src).resolve()
            assert path.is_relative_to(index.parent.resolve() / "thumbs"), (page, src)
            with Image.open(path) as img:
                img.load()
                assert min(img.size) > 0 and max(img.size) <= 192
            count += 1
        for href in parsed.links:
            target, _, anchor = href.partition("#")
            assert (page.parent / target).is_file(), (page.name, href)
            if anchor:
                assert anchor in _Page(page.parent / target).ids, (page.name, href)
    assert count >= 3 * 2 + NEAR * 2


def test_index_counts_match_the_summary_view(report) -> None:
    catalog, index = report
    page = _Page(index)
    summary = catalog.sql(
        "SELECT refset, method, hits, images, references_hit, groups_hit "
        "FROM contamination_summary WHERE refset = 'mini'"
    ).to_pylist()
    shown = {(r[0], r[1]): tuple(_number(v) for v in r[2:6]) for r in page.tables["by-method"]}
    assert len(shown) == len(page.tables["by-method"]) == len(summary) == 2
    for row in summary:
        expected = (row["hits"], row["images"], row["references_hit"], row["groups_hit"])
        assert shown[row["refset"], row["method"]] == expected

    totals = catalog.sql(
        "SELECT count(*) AS hits, count(DISTINCT id) AS images, count(DISTINCT ref_id) AS refs,"
        " count(DISTINCT coalesce(ref_group, ref_id)) AS groups"
        " FROM contamination WHERE refset = 'mini'"
    ).to_pylist()[0]
    cands = catalog.sql(
        "SELECT count(*) AS n FROM contamination_candidates WHERE refset = 'mini'"
    ).to_pylist()[0]["n"]
    refs = catalog.sql("SELECT count(*) AS n FROM refset_images WHERE refset = 'mini'")
    [row] = page.tables["by-refset"]
    assert row[0] == "mini"
    assert [_number(v) for v in row[1:]] == [
        refs["n"][0].as_py(),
        refs["n"][0].as_py(),  # no group of more than one reference in this setup
        cands,
        totals["hits"],
        totals["images"],
        totals["refs"],
        totals["groups"],
    ]

    groups = page.tables["by-group"]
    assert len(groups) == totals["groups"]
    assert sum(_number(r[4]) for r in groups) == totals["hits"]

    hit_chart, miss_chart = page.svgs
    hit_bars, miss_bars = page.bars
    assert int(hit_chart["data-total"]) == sum(hit_bars) == totals["hits"]
    misses = catalog.sql(
        "SELECT count(*) AS n FROM contamination_candidates c JOIN refset_images r "
        "USING (refset, ref_id) WHERE c.refset = 'mini' AND NOT c.hit "
        "AND r.low_info_reason IS DISTINCT FROM 'blank'"
    )["n"][0].as_py()
    assert int(miss_chart["data-total"]) == sum(miss_bars) == misses == 14


def test_near_misses_are_the_best_candidates_that_are_no_hits(report) -> None:
    catalog, index = report
    page = _Page(index.parent / "near-misses.html")
    rows = [a for table, a in page.trs if table == "near-misses" and "data-score" in a]
    scores = [float(a["data-score"]) for a in rows]
    assert len(rows) == NEAR
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    expected = catalog.sql(
        "SELECT c.id, c.ref_id, c.score FROM contamination_candidates c JOIN refset_images r "
        "USING (refset, ref_id) WHERE c.refset = 'mini' AND NOT c.hit "
        "AND r.low_info_reason IS DISTINCT FROM 'blank' "
        f"ORDER BY c.score DESC, c.id, c.ref_id LIMIT {NEAR}"
    ).to_pylist()
    assert [(int(a["data-id"]), int(a["data-ref"])) for a in rows] == [
        (r["id"], r["ref_id"]) for r in expected
    ]
    assert scores == pytest.approx([r["score"] for r in expected], abs=1e-5)
    blank = catalog.sql("SELECT ref_id FROM refset_images WHERE ref_path = 'blank.png'")
    assert blank["ref_id"][0].as_py() not in {int(a["data-ref"]) for a in rows}
    text = (index.parent / "near-misses.html").read_text()
    assert f"at most {NEAR} are listed" in text and "blank (empty-frame)" in text
    for cells in page.tables["near-misses"]:  # both images, the closest rule, the evidence
        assert re.search(r"\d+% of its threshold", cells[1])
        for word in ("cosine", "Hamming", "inliers", "coverage", "layout"):
            assert word in cells[2]


def test_each_reference_page_lists_exactly_its_hits(report) -> None:
    catalog, index = report
    by_ref = _ref_ids(catalog)
    index_links = set(_Page(index).links)
    hit_pages = [_Page(p) for p in sorted(index.parent.glob("page-*.html"))]
    for ref_id, ids in by_ref.items():
        name = f"refs/mini-{ref_id}.html"
        assert name in index_links
        page = _Page(index.parent / name)
        rows = [a for table, a in page.trs if table == "hits" and "data-id" in a]
        assert sorted(int(a["data-id"]) for a in rows) == sorted(ids)
        assert {int(a["data-ref"]) for a in rows} == {ref_id}
        assert len(page.imgs) == 1 + len(ids)  # the reference and each hit's dataset image
    for page in hit_pages:  # every hit row links to its reference's page
        for table, a in page.trs:
            if table == "hits" and "data-id" in a:
                assert f"refs/mini-{a['data-ref']}.html" in page.links


def test_values_are_escaped_and_groups_listed(edited) -> None:
    catalog, index = edited
    texts = {p.relative_to(index.parent).as_posix(): p.read_text() for p in _pages(index)}
    for name, text in texts.items():
        assert "<script" not in text and "<img src=x" not in text, name
    escaped = "&lt;script&gt;alert(&quot;ref&quot;)&lt;/script&gt;&amp;.jpg"
    assert escaped in texts["index.html"] and escaped in texts["near-misses.html"]
    ref_pages = [n for n, t in texts.items() if n.startswith("refs/") and escaped in t]
    assert len(ref_pages) == 1 and ref_pages[0] in _Page(index).links
    caption = "&lt;img src=x onerror=alert(1)&gt; a caption"
    assert any(escaped in t and caption in t for n, t in texts.items() if n.startswith("page-"))
    assert caption in texts[ref_pages[0]]

    index_page = _Page(index)
    groups = {row[1]: row for row in index_page.tables["by-group"]}
    assert sorted(groups) == ["0", "2"]
    assert EVIL_PATH in groups["0"][3]  # the parser unescapes it again
    pair = groups["2"]
    assert (_number(pair[2]), _number(pair[4]), _number(pair[6])) == (2, 2, 2)
    assert set(pair[3].split(", ")) == {"chelsea.jpg", "coffee.jpg"}
    [by_refset] = index_page.tables["by-refset"]
    assert (_number(by_refset[2]), _number(by_refset[7])) == (4, 2)  # groups, groups hit
    summary = catalog.sql("SELECT method, groups_hit FROM contamination_summary").to_pylist()
    shown = {row[1]: _number(row[5]) for row in index_page.tables["by-method"]}
    assert (
        shown
        == {r["method"]: r["groups_hit"] for r in summary}
        == {
            "descriptor": 1,
            "phash_exact": 1,
        }
    )

    by_ref = _ref_ids(catalog)
    for ref_id, other in ((2, 3), (3, 2)):
        page = _Page(index.parent / f"refs/mini-{ref_id}.html")
        rows = {
            t: [int(a["data-id"]) for u, a in page.trs if u == t and "data-id" in a]
            for t in ("hits", f"hits-{other}")
        }
        assert rows == {"hits": by_ref[ref_id], f"hits-{other}": by_ref[other]}
        assert f"../refs/mini-{other}.html" in page.links
        assert ("coffee.jpg" if other == 3 else "chelsea.jpg") in page.group_text


# ---- headless Chromium --------------------------------------------------------------------------

_CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const out = document.createElement('pre');
  out.id = 'audit-check';
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    text: document.body.innerText.length,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is needed to check the audit report: apt-get install -y chromium",
        pytrace=False,
    )


def _run_chromium(
    chromium: str, work: Path, url: str, *action: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--allow-file-access-from-files",
            f"--user-data-dir={work / 'profile'}",
            "--window-size=1200,1400",
            "--virtual-time-budget=3000",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _render(chromium: str, page: Path, work: Path) -> tuple[dict, np.ndarray]:
    """The page's check in Chromium (its images, broken ones, text length) and a screenshot."""
    work.mkdir(parents=True)
    # a copy with the check's script, whose relative links still resolve to the report
    harness = work / "check.html"
    base = f'<head><base href="{page.parent.resolve().as_uri()}/">'
    harness.write_text(
        page.read_text().replace("<head>", base, 1).replace("</body>", _CHECK + "</body>", 1)
    )
    dumped = _run_chromium(chromium, work, harness.as_uri(), "--dump-dom")
    found = re.search(r'<pre id="audit-check">(.*?)</pre>', dumped.stdout)
    assert found, (page.name, dumped.stderr[-2000:])
    shot = work / "shot.png"
    result = _run_chromium(chromium, work, page.resolve().as_uri(), f"--screenshot={shot}")
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads(html.unescape(found.group(1))), _png_pixels(data)


def test_every_page_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    _, index = report
    chromium = _chromium()
    pages = _pages(index)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda i: _render(chromium, pages[i], tmp_path / str(i)), range(len(pages)))
        )
    for page, (check, pixels) in zip(pages, results, strict=True):
        name = page.relative_to(index.parent).as_posix()
        assert check["images"] == len(_Page(page).imgs), name
        assert check["broken"] == [], name
        # not mostly blank: a page with only its heading, links and an empty table has about
        # 120 characters and 0.5% of its pixels off the background
        assert check["text"] > 200, name
        assert pixels.shape[:2] == (1400, 1200)
        ink = (np.abs(pixels.astype(int) - 250).max(axis=2) > 40).mean()
        assert ink > 0.02, (name, ink)
        if name == "page-0001.html":  # photo-like colour variety, not placeholders
            assert len(np.unique(pixels.reshape(-1, 3) // 16, axis=0)) > 200
        if name == "index.html":  # the histograms' bars are drawn in the methods' colours
            from coyo_db.audit.report_html import COLOURS

            for method in ("descriptor", "phash_exact", "near misses"):
                colour = np.array([int(COLOURS[method][i : i + 2], 16) for i in (1, 3, 5)])
                assert (np.abs(pixels.astype(int) - colour).max(axis=2) < 8).sum() > 50, method
