"""Shared by the web app's tests: the demo's catalog, a `coyo-db serve` process over it, a
headless Chromium driven through Selenium (Debian's `chromium` and `chromium-driver`; the tests
fail, not skip, without them), and HTTP requests with or without the token."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coyo_db.catalog import Catalog


@dataclass
class Server:
    url: str  # with the token, as printed
    base: str
    token: str
    process: subprocess.Popen[str]
    home: Path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from coyo_db.synth.demo import run_demo

    home = tmp_path_factory.mktemp("serve") / "home"
    lines: list[str] = []
    result = run_demo(home, rows=3_000, images=24, seed=7, emit=lines.append)
    result.lines = lines
    return result


def start_server(home: Path, *extra: str) -> Server:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coyo_db.cli.entry",
            "serve",
            "--home",
            str(home),
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        found = re.search(r"open (http://\S+)", line)
        if found:
            url = found.group(1)
            base, token = url.split("/?token=")
            return Server(url, base, token, process, home)
    process.kill()
    raise AssertionError("coyo-db serve printed no URL:\n" + "".join(seen))


@pytest.fixture(scope="session")
def server(demo) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    running = start_server(demo.home)
    yield running
    running.process.terminate()
    running.process.wait(timeout=20)


def get(url: str, *, token: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of a request, with the token as a header when given."""
    request = urllib.request.Request(url, data=data)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def chromium_paths() -> tuple[str, str]:
    browser = next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "headless Chromium and its driver are needed to test the web app: "
            "apt-get install -y chromium chromium-driver",
            pytrace=False,
        )
    return browser, driver


@pytest.fixture(scope="session")
def browser(server: Server):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1400",
    ):
        options.add_argument(argument)
    options.binary_location = binary
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(120)
    driver.get(server.url)  # the token once: it becomes a cookie
    yield driver
    driver.quit()


IMAGES_CHECK = """
return [...document.images].map(i => ({src: i.src, done: i.complete, width: i.naturalWidth}));
"""


def page_check(driver) -> dict:  # type: ignore[no-untyped-def]
    """The page's images (broken ones listed), text length and a screenshot's ink share."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "[...document.images].every(i => i.complete)"
        )
    )
    images = driver.execute_script(IMAGES_CHECK)
    pixels = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    ink = float((np.abs(pixels.astype(int) - 250).max(axis=2) > 40).mean())
    return {
        "images": len(images),
        "broken": [i["src"] for i in images if not i["done"] or i["width"] == 0],
        "text": len(driver.find_element("tag name", "body").text),
        "ink": ink,
        "colours": len(np.unique(pixels.reshape(-1, 3) // 16, axis=0)),
    }


def click_and_load(driver, element) -> dict:  # type: ignore[no-untyped-def]
    """Click `element`, which submits a form or follows a link, and check the page that
    replaces this one (waiting for this one to go: a loaded machine may still show it)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    element.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(old))
    return page_check(driver)


def catalog_of(server: Server) -> Catalog:
    return Catalog(server.home)
