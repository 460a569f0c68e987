"""`coyo-db serve` in a real browser: a server started on a free port over the demo's catalog,
driven by headless Chromium. Every page loads with its thumbnails, a query runs, a search finds
the planted near-copy's original first, a review decision changes the next export; requests
without the token, with paths instead of ids, or with SQL that writes are refused."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import serve_helpers
from tests.serve_helpers import catalog_of, click_and_load, get, page_check

demo = serve_helpers.demo
server = serve_helpers.server
browser = serve_helpers.browser


def _open(driver, server, path: str):  # type: ignore[no-untyped-def]
    driver.get(server.base + path)
    return page_check(driver)


def _image_ids(catalog, n: int = 3) -> list[int]:
    return catalog.sql(f"SELECT id FROM images ORDER BY id LIMIT {n}")["id"].to_pylist()


def test_every_page_loads_with_its_thumbnails_and_is_not_blank(server, browser, tmp_path):
    catalog = catalog_of(server)
    first = _image_ids(catalog, 1)[0]
    hit = catalog.sql("SELECT id FROM contamination ORDER BY id LIMIT 1")["id"][0].as_py()
    pages = {
        "/": 24,  # the sample of `images`: at least the demo's 24 thumbnails
        "/query?view=table&sql=" + urllib.parse.quote("SELECT * FROM pairs LIMIT 20"): 0,
        f"/image/{first}": 2,  # the image and its neighbours
        f"/image/{hit}": 2,  # with the reference it copies
        f"/search?id={first}": 5,
        "/duplicates": 0,  # the demo's groups are of pairs rows, mostly without images
        "/audit": 10,  # hits and near misses: both thumbnails each
    }
    for path, least in pages.items():
        check = _open(browser, server, path)
        assert check["broken"] == [], path
        assert check["images"] >= least, (path, check)
        assert check["text"] > 200, (path, check)
        assert check["ink"] > 0.02, (path, check)  # a screenshot that is not blank
        if least >= 10:  # photo-like thumbnails, not placeholders
            assert check["colours"] > 200, (path, check)
        browser.save_screenshot(str(tmp_path / f"{len(path)}.png"))


def test_a_query_runs_from_the_page_and_pages(server, browser):
    from selenium.webdriver.common.by import By

    catalog = catalog_of(server)
    browser.get(server.base + "/query")
    box = browser.find_element(By.NAME, "sql")
    box.clear()
    box.send_keys("SELECT id, text FROM pairs WHERE id % 7 = 0 ORDER BY id")
    browser.find_element(By.CSS_SELECTOR, "select[name=view] option[value=table]").click()
    click_and_load(browser, browser.find_element(By.ID, "run"))
    cells = browser.find_elements(By.CSS_SELECTOR, "tbody tr td:first-child")
    want = catalog.sql("SELECT id FROM pairs WHERE id % 7 = 0 ORDER BY id")["id"].to_pylist()
    assert [int(c.text) for c in cells] == want[:100]
    click_and_load(browser, browser.find_element(By.ID, "next-page"))
    cells = browser.find_elements(By.CSS_SELECTOR, "tbody tr td:first-child")
    assert [int(c.text) for c in cells] == want[100:200]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM pairs",
        "COPY pairs TO '{out}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT 1; DROP TABLE pairs",
        "ATTACH '{out}' AS x",
        "SELEKT broken",
    ],
)
def test_sql_that_writes_or_fails_shows_its_error_in_the_page(server, browser, tmp_path, sql):
    from selenium.webdriver.common.by import By

    out = tmp_path / "leak.csv"
    sql = sql.format(out=out)
    before = catalog_of(server).versions()
    browser.get(server.base + "/query?sql=" + urllib.parse.quote(sql))
    error = browser.find_element(By.ID, "query-error").text
    assert error, sql
    assert not out.exists()
    assert catalog_of(server).versions() == before


def test_a_search_by_uploaded_image_finds_the_planted_near_copys_original_first(
    demo, server, browser
):
    from selenium.webdriver.common.by import By

    query: Path = demo.export.search_query
    original = demo.export.search_original_id
    assert query is not None and query.exists() and original is not None
    browser.get(server.base + "/search")
    browser.find_element(By.ID, "search-image").send_keys(str(query))
    check = click_and_load(browser, browser.find_element(By.ID, "search-run"))
    assert check["broken"] == [] and check["images"] >= 3
    first = browser.find_element(By.CSS_SELECTOR, "#search-hits figure figcaption a")
    assert int(first.text) == original


def _export_ids(catalog, folder: Path) -> tuple[set[int], dict]:
    from coyo_db.export.subset import export

    result = export(catalog, folder, where="true", overwrite=True)
    ids = set(pq.read_table(folder)["id"].to_pylist())
    return ids, json.loads(result.manifest_path.read_text())


def _click(browser, decision: str, id_: int) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    button = browser.find_element(
        By.CSS_SELECTOR, f'button[data-decision="{decision}"][data-id="{id_}"]'
    )
    button.find_element(By.XPATH, "..").find_element(By.NAME, "note").send_keys("checked by eye")
    browser.execute_script("arguments[0].scrollIntoView()", button)
    button.click()
    page_check(browser)


def test_review_decisions_in_the_browser_change_the_next_export(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    catalog = catalog_of(server)
    before, manifest = _export_ids(catalog, tmp_path / "before")
    assert manifest["reviews"]["table_version"] is None

    # a hit whose image copies only that reference: "not a copy" brings it back
    hit = catalog.sql(
        "SELECT id, any_value(refset) AS refset, any_value(ref_id) AS ref_id FROM contamination "
        "WHERE id NOT IN (SELECT id FROM export_duplicate_ids) AND id IN (SELECT id FROM pairs) "
        "GROUP BY id HAVING count(DISTINCT ref_id) = 1 ORDER BY id LIMIT 1"
    ).to_pylist()[0]
    assert hit["id"] not in before
    browser.get(server.base + "/audit")
    who = browser.find_element(By.ID, "reviewer")
    who.clear()
    who.send_keys("ana\t")  # remembered in the browser for the next pages
    _click(browser, "not_copy", hit["id"])

    # a non-keeper on the duplicates page: "keep this one" makes it its group's keeper
    browser.get(server.base + "/duplicates")
    buttons = browser.find_elements(By.CSS_SELECTOR, 'button[data-decision="keeper"]')
    shown = [int(b.get_attribute("data-id")) for b in buttons]
    pair = catalog.sql(
        "SELECT g.id, k.id AS keeper FROM dup_groups g JOIN dup_groups k "
        "ON k.method = g.method AND k.group_id = g.group_id AND k.keeper "
        "WHERE NOT g.keeper AND list_contains($ids, g.id) "
        "AND g.id NOT IN (SELECT id FROM contamination) "
        "AND k.id NOT IN (SELECT id FROM contamination) ORDER BY g.id LIMIT 1".replace(
            "$ids", "[" + ",".join(map(str, shown)) + "]::BIGINT[]"
        )
    ).to_pylist()[0]
    assert pair["id"] not in before and pair["keeper"] in before
    _click(browser, "keeper", pair["id"])
    assert "reviewed: keeper" in browser.find_element(By.TAG_NAME, "body").text

    after, manifest = _export_ids(catalog, tmp_path / "after")
    assert after - before == {hit["id"], pair["id"]}
    assert before - after == {pair["keeper"]}
    assert manifest["reviews"]["table_version"] == catalog.dataset("reviews").version
    assert manifest["table_versions"]["reviews"] == manifest["reviews"]["table_version"]
    reviews = catalog.sql("SELECT * FROM reviews ORDER BY reviewed_at").to_pylist()
    assert [r["decision"] for r in reviews] == ["not_copy", "keeper"]
    assert all(r["note"] == "checked by eye" and r["reviewer"] == "ana" for r in reviews)


# ---- attacks --------------------------------------------------------------------------------


def test_requests_without_the_token_are_refused(server):
    first = _image_ids(catalog_of(server), 1)[0]
    for path in ("/", "/query", f"/img/{first}", f"/thumb/{first}", "/audit", "/search"):
        assert get(server.base + path)[0] == 403, path
        assert get(server.base + path, token="not-" + server.token)[0] == 403, path
        assert get(server.base + path + "?token=wrong")[0] == 403, path
        assert get(server.base + path, token=server.token)[0] == 200, path
    # a form posted with the cookie or header but without the token in it (another site's)
    form = urllib.parse.urlencode({"decision": "keeper", "id": first, "method": "x"}).encode()
    status, _ = get(server.base + "/review", token=server.token, data=form)
    assert status == 403


def test_images_are_served_by_id_only_never_by_path(server):
    first = _image_ids(catalog_of(server), 1)[0]
    status, body = get(f"{server.base}/img/{first}", token=server.token)
    assert status == 200 and body[:3] == b"\xff\xd8\xff"
    shard = catalog_of(server).sql(f"SELECT shard FROM images WHERE id = {first}")["shard"][0]
    for path in (
        "/img/../../../../etc/passwd",
        "/img/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/img/" + urllib.parse.quote(str(shard), safe=""),
        "/thumb/..%2F..%2Fetc%2Fpasswd",
        "/ref/..%2F..%2Fetc/1",
        "/ref/demo-eval/..%2F1",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/img/1e3",
        "/img/99999999999",
    ):
        status, body = get(server.base + path, token=server.token)
        assert status == 404, path
        assert b"root:" not in body and b"\xff\xd8" not in body[:2], path


def test_the_server_binds_to_loopback_and_prints_a_fresh_token(demo):
    first = serve_helpers.start_server(demo.home)
    second = serve_helpers.start_server(demo.home)
    try:
        assert first.base.startswith("http://127.0.0.1:")
        assert first.token != second.token and len(first.token) >= 32
        assert get(first.base + "/", token=second.token)[0] == 403
    finally:
        for s in (first, second):
            s.process.terminate()
            s.process.wait(timeout=20)


def test_the_demo_prints_how_to_open_the_app(demo):
    assert demo.lines[-1].strip() == f"coyo-db serve --home {demo.home}"
