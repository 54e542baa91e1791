"""Serve the built book on 127.0.0.1 and open it in Debian's Chromium, driven by Playwright.

The browser may reach only the local server: every other request is aborted and recorded, so a page that needs
the internet (a CDN script, a web font) fails its test.
"""

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
# BOOK_HTML points the tests at another build (to show that a test fails on an older one).
SITE = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html")).resolve()
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


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}


class PageLog:
    """What went wrong on a page: console errors, uncaught exceptions, failed or outside requests.

    A request that the page's next navigation cancels (the browser reports `net::ERR_ABORTED`, typically the
    favicon or a late image when a test clicks a link) is not a fault of the site: it goes to
    `cancelled_requests`, not to the problems. A request that fails while no later navigation has started
    is broken, whatever its error.
    """

    def __init__(self) -> None:
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.cancelled_requests: list[str] = []
        self.outside_requests: list[str] = []
        self.navigations = 0  # main-frame navigations started so far
        self._started_at: dict[int, int] = {}  # id(request) -> navigations when it started

    def request_started(self, request, main_frame) -> None:
        if request.is_navigation_request() and request.frame == main_frame:
            self.navigations += 1
        self._started_at[id(request)] = self.navigations

    def request_failed(self, request) -> None:
        if request.url in self.outside_requests:
            return
        failure = request.failure or ""
        started = self._started_at.get(id(request), self.navigations)
        if "ERR_ABORTED" in failure and self.navigations > started:
            self.cancelled_requests.append(f"{request.url} ({failure})")
        else:
            self.failed_requests.append(f"{request.url} ({failure})")

    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"uncaught exception: {m}" for m in self.page_errors]
            + [f"request failed: {m}" for m in self.failed_requests]
            + [f"request outside the site: {m}" for m in self.outside_requests]
        )


def open_context(browser: Browser, site_url: str, viewport: dict) -> tuple:
    """A fresh context and page that may load only from the local site, and a log of what went wrong."""
    context = browser.new_context(viewport=viewport)
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

    def response(response):
        if response.status >= 400:
            log.failed_requests.append(f"{response.url} (HTTP {response.status})")

    page.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    page.on("request", lambda request: log.request_started(request, page.main_frame))
    page.on("requestfailed", log.request_failed)
    page.on("response", response)
    return context, page, log


@pytest.fixture
def page(browser: Browser, site_url: str) -> Iterator[tuple[Page, PageLog]]:
    """A fresh page at a laptop's size, loading only from the local site, with its log."""
    context, page, log = open_context(browser, site_url, {"width": 1280, "height": 900})
    yield page, log
    context.close()


@pytest.fixture
def phone(browser: Browser, site_url: str) -> Iterator[tuple[Page, PageLog]]:
    """A fresh page 390 px wide (a phone held upright), with its log."""
    context, page, log = open_context(browser, site_url, PHONE)
    yield page, log
    context.close()


@pytest.fixture
def desktop(browser: Browser, site_url: str) -> Iterator[tuple[Page, PageLog]]:
    """A fresh page 1366 px wide (a common laptop screen), with its log."""
    context, page, log = open_context(browser, site_url, DESKTOP)
    yield page, log
    context.close()
