"""Print the whole book to one PDF with Chromium, from Jupyter Book's single-page HTML build.

    python tools/book_pdf.py   # after `jupyter-book build . --builder singlehtml` (`make pdf` does both)

Writes `_build/html/course.pdf`, which the book's setup page links. No LaTeX is needed: the Chromium that runs
the browser tests prints the page, with the book's print stylesheet (code and outputs wrap, nothing is cut off
at the page edge) and the equations typeset by MathJax.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

import yaml
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SINGLE = ROOT / "_build" / "singlehtml"
TARGET = ROOT / "_build" / "html" / "course.pdf"
# The single page is written at the root document's path (book/intro.html) but links its styles, scripts and
# images as if it sat at the top of the build: a copy there loads them all.
PAGE = SINGLE / "course.html"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


def main() -> int:
    root_doc = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    built = SINGLE / f"{root_doc}.html"
    if not built.exists():
        print("No single-page build: run `jupyter-book build . --builder singlehtml` (or `make pdf`).")
        return 1
    shutil.copy(built, PAGE)
    handler = functools.partial(_Quiet, directory=str(SINGLE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{PAGE.name}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 1200})
        site = url.rsplit("/", 1)[0]
        # The book needs no internet: every outside request is refused.
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(site) else r.abort())
        page.goto(url, wait_until="networkidle")
        if page.locator(".math").count():
            page.wait_for_function("() => window.MathJax?.startup?.promise", timeout=60_000)
            page.evaluate("() => MathJax.startup.promise")
        page.emulate_media(media="print")
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        page.pdf(path=str(TARGET), format="A4", print_background=True,
                 margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"})
        browser.close()
    server.shutdown()
    print(f"wrote {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
