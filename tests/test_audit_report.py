"""The audit's HTML report: summary, paged hits with both thumbnails, works from file:// in
headless Chromium (Debian's `chromium` package; the test fails, not skips, without it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from coyo_db.catalog import Catalog
from tests import audit_helpers

audited = audit_helpers.audited  # the setup shared with the other audit tests, once a session


@pytest.fixture(scope="module")
def report(audited, tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Path]:
    from coyo_db.audit.report import write_report

    catalog, _ = audited
    index = write_report(catalog, tmp_path_factory.mktemp("report"), refsets=["mini"], per_page=2)
    return catalog, index


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is needed to check the audit report: apt-get install -y chromium",
        pytrace=False,
    )


def test_report_pages_and_thumbnails(report) -> None:
    catalog, index = report
    hits = catalog.sql("SELECT count(*) AS n FROM contamination WHERE refset = 'mini'")
    hits = hits["n"][0].as_py()
    assert hits == 3
    text = index.read_text()
    assert "Hits per reference set and method" in text and "<td>mini</td>" in text
    pages = sorted(index.parent.glob("page-*.html"))
    assert [p.name for p in pages] == ["page-0001.html", "page-0002.html"]  # 3 hits, 2 a page
    first = pages[0].read_text()
    assert 'href="page-0002.html">next' in first
    images = re.findall(r'<img src="([^"]+)"', first)
    assert len(images) == 4  # two hits, each with the dataset image and the reference
    for src in images:
        assert src.startswith("thumbs/") and (index.parent / src).stat().st_size > 0
    assert "inliers" in first and "cosine" in first and "Hamming" in first
    for page in [index, *pages]:  # nothing that needs a server or the network
        assert not re.search(r"(src|href)=\"(https?:|//|/)", page.read_text())
        assert "<script" not in page.read_text()


def _png_pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_report_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    _, index = report
    chromium = _chromium()
    page = index.parent / "page-0001.html"
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--allow-file-access-from-files",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1000,800",
            "--virtual-time-budget=3000",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = _png_pixels(data)
    assert pixels.shape[:2] == (800, 1000)
    assert pixels.std() > 10  # not a blank page
    # the thumbnails were loaded from file://: photo-like colour variety, not placeholders
    assert len(np.unique(pixels.reshape(-1, 3) // 16, axis=0)) > 200
    shutil.copy(shot, index.parent / "screenshot.png")
