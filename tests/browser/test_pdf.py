"""The whole book as one PDF (`make pdf`): linked from the book, every page printed, nothing cut off."""

import functools
import http.server
import re
import threading

from conftest import SITE, _QuietHandler

PDF = SITE / "course.pdf"
# tools/book_pdf.py copies the single page (written at book/intro.html) to the top of the build: course.html
SINGLE = SITE.parent / "singlehtml"


def test_the_book_links_its_pdf_and_the_pdf_exists():
    setup = (SITE / "book" / "setup.html").read_text(encoding="utf-8")
    assert 'href="../course.pdf"' in setup, "the setup page does not link the PDF"
    assert PDF.exists(), f"{PDF} is missing: run `make pdf`"
    data = PDF.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages > 100, f"the PDF has {pages} pages; the book needs far more"


def test_nothing_is_cut_off_in_print(browser):
    handler = functools.partial(_QuietHandler, directory=str(SINGLE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context(viewport={"width": 703, "height": 1000})  # A4 less the margins, at 96 dpi
    page = context.new_page()
    page.emulate_media(media="print")
    page.goto(f"http://127.0.0.1:{server.server_address[1]}/course.html", wait_until="networkidle")
    assert page.locator("link[href*='course.css']").count() == 1 and page.locator(".cell").count() > 100
    page.wait_for_function("() => window.MathJax?.startup?.promise", timeout=60_000)
    page.evaluate("() => MathJax.startup.promise")  # typeset first: half-typeset math has other widths
    cut = page.evaluate(
        """() => [...document.querySelectorAll('pre, table, img, div.math, mjx-container, .cell_output')]
             .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0
                          && (e.getBoundingClientRect().right > innerWidth + 1
                              || (e.tagName === 'PRE' && e.scrollWidth > e.clientWidth + 1)))
             .slice(0, 5).map(e => e.tagName + ' ' + (e.textContent || e.src || '').slice(0, 60))"""
    )
    wide = page.evaluate("() => document.documentElement.scrollWidth")
    context.close()
    server.shutdown()
    assert not cut, f"in print, these are cut off at the page edge: {cut}"
    assert wide <= 704, f"the printed page is {wide} px wide on a 703 px sheet"
