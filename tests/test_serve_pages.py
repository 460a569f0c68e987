"""The web app's routes without a browser (Flask's test client): values escaped, review forms
checked, redirects kept on the app, uploads bounded, the host check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from coyo_db.ingest.images import ingest_images
from coyo_db.serve.app import COOKIE, create_app
from coyo_db.serve.server import is_loopback
from tests.imagedata import jpeg_bytes, write_tar

EVIL = '<img src=x onerror=alert(1)> "caption"</textarea><script>alert(2)</script>'
TOKEN = "t0ken"


@pytest.fixture
def client(catalog, tmp_path):
    rng = np.random.default_rng(0)
    members = {}
    for i in range(3):
        image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        members[f"{i:04d}.jpg"] = jpeg_bytes(image)
        members[f"{i:04d}.json"] = json.dumps({"id": 10 + i, "caption": EVIL}).encode()
    ingest_images(catalog, [write_tar(tmp_path / "evil.tar", members)], workers=0)
    app = create_app(catalog, TOKEN)
    app.testing = True
    test_client = app.test_client()
    test_client.set_cookie(COOKIE, TOKEN)
    return test_client


@pytest.mark.parametrize("path", ["/query", "/query?view=table", "/image/10", "/search?id=10"])
def test_values_from_the_catalog_are_escaped(client, path):
    page = client.get(path).get_data(as_text=True)
    assert "<script>alert(2)" not in page and "<img src=x" not in page
    if path != "/search?id=10":  # no index in this catalog: the search page says so
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_token_in_the_url_becomes_a_cookie_and_leaves_the_address(catalog):
    app = create_app(catalog, TOKEN)
    fresh = app.test_client()
    answer = fresh.get(f"/query?view=table&token={TOKEN}")
    assert answer.status_code == 303 and answer.headers["Location"] == "/query?view=table"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert fresh.get("/query?view=table").status_code == 200
    assert app.test_client().get("/query").status_code == 403


def test_review_forms_need_the_token_and_stay_on_the_app(client, catalog):
    form = {"decision": "keeper", "id": "10", "method": "none", "next": "//evil.example/x"}
    assert client.post("/review", data=form).status_code == 403
    refused = client.post("/review", data={**form, "_token": TOKEN})
    assert refused.status_code == 400 and "no duplicate groups to review" in refused.text
    from coyo_db.catalog import tables
    from coyo_db.dedup.groups import write_groups

    group = [{"method": "manual", "group_id": 10, "id": i, "keeper": i == 10} for i in (10, 11)]
    write_groups(catalog, "manual", tables.DUP_GROUPS.from_pylist(group))
    done = client.post("/review", data={**form, "_token": TOKEN, "method": "manual"})
    assert done.status_code == 303 and done.headers["Location"] == "/"
    assert catalog.sql("SELECT decision FROM reviews").to_pylist() == [{"decision": "keeper"}]


def test_headers_forbid_framing_sniffing_and_foreign_scripts(client):
    answer = client.get("/query")
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    thumb = client.get("/thumb/10")
    assert thumb.status_code == 200 and thumb.content_type == "image/jpeg"
    assert "private" in thumb.headers["Cache-Control"]


def test_an_upload_too_large_is_refused(client):
    import io

    data = {"_token": TOKEN, "image": (io.BytesIO(b"\0" * (33 << 20)), "big.jpg")}
    assert client.post("/search", data=data).status_code == 413


def test_only_loopback_hosts_count_as_local():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("example.com")


def test_a_review_while_another_job_writes_says_the_catalog_is_busy(client, catalog, monkeypatch):
    import subprocess
    import sys

    from coyo_db.catalog import tables
    from coyo_db.dedup.groups import write_groups

    group = [{"method": "manual", "group_id": 10, "id": i, "keeper": i == 10} for i in (10, 11)]
    write_groups(catalog, "manual", tables.DUP_GROUPS.from_pylist(group))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, time; from coyo_db.catalog import writer_lock as w; "
            f"w.acquire(pathlib.Path({str(catalog.home)!r}), 'ingest images'); "
            "print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("coyo_db.serve.app.REVIEW_WAIT", 0.5)
        form = {"_token": TOKEN, "decision": "keeper", "id": "11", "method": "manual"}
        busy = client.post("/review", data=form)
        assert busy.status_code == 503 and "ingest images" in busy.text
    finally:
        holder.kill()
        holder.wait()
    assert client.post("/review", data=form).status_code == 303


def test_an_unknown_id_has_no_detail_page(client):
    assert client.get("/image/424242").status_code == 404


def test_the_detail_page_offers_the_decisions_on_its_groups(client, catalog):
    from coyo_db.catalog import tables
    from coyo_db.dedup.groups import write_groups

    group = [{"method": "manual", "group_id": 10, "id": i, "keeper": i == 10} for i in (10, 11)]
    write_groups(catalog, "manual", tables.DUP_GROUPS.from_pylist(group))
    page = client.get("/image/11").get_data(as_text=True)
    assert 'data-decision="keeper" data-id="11"' in page
    assert 'data-decision="not_duplicate" data-id="11"' in page
    assert 'data-decision="keeper" data-id="11"' not in client.get("/image/10").text
