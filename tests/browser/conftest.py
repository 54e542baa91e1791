"""Serve the built book on 127.0.0.1 and open it in Debian's Chromium, driven by Playwright.

The browser may reach only the local server: every other request is aborted and recorded, so a page that needs
the internet (a CDN script, a web font) fails its test.
"""

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the name is the base class's)
        pass


@pytest.fixture(scope="session")
def site_url() -> Iterator[str]:
    """Base URL of the built book, served from a background thread."""
    if not (SITE / "index.html").exists():
        pytest.fail("The book is not built: run `make book` first (`make test` does it for you).")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; the tests never download a browser."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail("Chromium is missing: install it with `sudo apt-get install -y chromium` (Debian).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageLog:
    """What went wrong on a page: console errors, uncaught exceptions, failed or outside requests."""

    def __init__(self) -> None:
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.outside_requests: list[str] = []

    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"uncaught exception: {m}" for m in self.page_errors]
            + [f"request failed: {m}" for m in self.failed_requests]
            + [f"request outside the site: {m}" for m in self.outside_requests]
        )


@pytest.fixture
def page(browser: Browser, site_url: str) -> Iterator[tuple[Page, PageLog]]:
    """A fresh page that may load only from the local site, with a log of everything that went wrong."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log = PageLog()

    def route(route):
        if route.request.url.startswith(site_url):
            route.continue_()
        else:
            log.outside_requests.append(route.request.url)
            route.abort()

    def console(message):
        if message.type == "error":
            log.console_errors.append(message.text)

    def request_failed(request):
        if request.url not in log.outside_requests:
            log.failed_requests.append(f"{request.url} ({request.failure})")

    def response(response):
        if response.status >= 400:
            log.failed_requests.append(f"{response.url} (HTTP {response.status})")

    page.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    page.on("requestfailed", request_failed)
    page.on("response", response)
    yield page, log
    context.close()
