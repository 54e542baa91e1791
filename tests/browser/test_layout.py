"""The book on a phone (390 px) and a laptop (1366 px): drawers open, the sidebar collapses, nothing is cut
off, a chapter page stays light, and print keeps every character."""

import pytest
from conftest import SCREENSHOTS
from test_site import CHAPTER_1, PAGES, open_page, wait_for_math

CHAPTERS = [p for p in PAGES if p.startswith("notebooks/")]
# Bytes one chapter page may load in all (HTML, its figures, styles, scripts, fonts, math).
PAGE_BUDGET = 2_000_000

ON_SCREEN = """(selector) => {
  const element = document.querySelector(selector);
  if (!element) return false;
  const box = element.getBoundingClientRect();
  const style = getComputedStyle(element);
  return style.visibility === "visible" && style.display !== "none" && box.width > 50
    && box.left >= -1 && box.right <= innerWidth + 1;
}"""


def on_screen(page, selector: str) -> bool:
    return page.evaluate(ON_SCREEN, selector)


def visible_button(page, selector: str):
    """The one button matching selector that a reader can see (themes keep hidden copies around)."""
    buttons = page.locator(selector)
    shown = [buttons.nth(i) for i in range(buttons.count()) if buttons.nth(i).is_visible()]
    assert len(shown) == 1, f"{len(shown)} visible buttons match {selector!r}, expected one"
    return shown[0]


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.mark.parametrize(
    "toggle, drawer",
    [("button.primary-toggle", ".bd-sidebar-primary"), ("button.secondary-toggle", ".bd-sidebar-secondary")],
    ids=["menu", "page-contents"],
)
def test_phone_buttons_open_their_drawers(phone, site_url, toggle, drawer):
    page, log = phone
    open_page(page, site_url, f"{CHAPTER_1}.html")
    assert not on_screen(page, drawer), f"{drawer} is open before its button is pressed"
    visible_button(page, toggle).click()
    page.wait_for_function(ON_SCREEN, arg=drawer, timeout=5_000)
    screenshot(page, f"phone-{drawer.strip('.')}")
    assert not log.problems(), "\n".join(log.problems())


def test_desktop_sidebar_collapses_and_comes_back(desktop, site_url):
    page, log = desktop
    open_page(page, site_url, f"{CHAPTER_1}.html")
    sidebar = ".bd-sidebar-primary"
    assert on_screen(page, sidebar), "the table of contents should show on a 1366 px screen"
    article = page.locator(".bd-article-container")
    width_open = article.bounding_box()["width"]
    visible_button(page, "button.primary-toggle").click()
    page.wait_for_function(f"() => !({ON_SCREEN})('{sidebar}')", timeout=5_000)
    page.wait_for_timeout(400)  # the theme animates the width
    assert article.bounding_box()["width"] > width_open + 150, "the text did not take the sidebar's room"
    screenshot(page, "desktop-sidebar-collapsed")
    visible_button(page, "button.primary-toggle").click()
    page.wait_for_function(ON_SCREEN, arg=sidebar, timeout=5_000)
    assert not log.problems(), "\n".join(log.problems())


def test_desktop_header_has_no_empty_bar_and_one_search_box(desktop, site_url):
    page, log = desktop
    open_page(page, site_url, f"{CHAPTER_1}.html")
    header = page.locator(".bd-header")
    height = header.bounding_box()["height"] if header.count() and header.is_visible() else 0
    assert height < 1, f"an empty header bar {height:.0f} px high is drawn above the page"
    boxes = page.locator(".search-button-field")
    shown = sum(boxes.nth(i).is_visible() for i in range(boxes.count()))
    assert shown == 1, f"{shown} search boxes are visible"
    screenshot(page, "desktop-chapter-1")
    assert not log.problems(), "\n".join(log.problems())


@pytest.mark.parametrize("path", PAGES)
def test_phone_page_does_not_scroll_sideways(phone, site_url, path):
    page, log = phone
    open_page(page, site_url, f"{path}.html")
    wait_for_math(page)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    culprits = page.evaluate(
        """() => [...document.querySelectorAll('.bd-article *')].filter(e => {
             const box = e.getBoundingClientRect();
             if (box.right <= innerWidth + 1 || box.width === 0) return false;
             for (let p = e.parentElement; p; p = p.parentElement) {
               const style = getComputedStyle(p);
               if (['auto', 'scroll', 'hidden'].includes(style.overflowX)
                   && p.getBoundingClientRect().right <= innerWidth + 1) return false;
             }
             return true;
           }).slice(0, 5).map(e => e.tagName + ' ' + (e.textContent || '').trim().slice(0, 50))"""
    )
    assert widths[0] <= widths[1], f"{path} is {widths[0]} px wide on a {widths[1]} px screen: {culprits}"
    assert not culprits, f"{path}: elements run past the screen edge: {culprits}"


@pytest.mark.parametrize("path", CHAPTERS)
def test_code_cells_fit_at_1366_px_and_the_copy_button_covers_nothing(desktop, site_url, path):
    page, log = desktop
    open_page(page, site_url, f"{path}.html")
    report = page.evaluate(
        """() => {
          const scrolling = [], covered = [];
          for (const pre of document.querySelectorAll('div.cell_input div.highlight pre')) {
            if (pre.scrollWidth > pre.clientWidth + 1) {
              scrolling.push(pre.textContent.split('\\n')[0].slice(0, 50));
            }
            const button = pre.parentElement.querySelector('button.copybtn');
            if (!button) continue;
            const first = pre.textContent.split('\\n')[0];
            const range = document.createRange();
            const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
            let node, last = null, seen = 0;
            while ((node = walker.nextNode())) {
              const cut = node.textContent.indexOf('\\n');
              if (cut >= 0) { if (cut > 0 || !last) last = [node, cut]; break; }
              last = [node, node.textContent.length]; seen += node.textContent.length;
            }
            if (!last || !first.trim()) continue;
            range.setStart(pre, 0); range.setEnd(last[0], last[1]);
            const lineRight = Math.max(...[...range.getClientRects()].map(r => r.right));
            if (lineRight > button.getBoundingClientRect().left + 1) covered.push(first.slice(0, 50));
          }
          return {scrolling, covered, cells: document.querySelectorAll('div.cell_input pre').length};
        }"""
    )
    assert report["cells"] > 0
    assert not report["scrolling"], f"{path}: code cells scroll sideways at 1366 px: {report['scrolling']}"
    assert not report["covered"], f"{path}: the copy button covers the end of: {report['covered']}"


def test_print_wraps_long_lines(browser, site_url):
    context = browser.new_context(viewport={"width": 700, "height": 1000})
    page = context.new_page()
    page.emulate_media(media="print")
    page.goto(f"{site_url}/{CHAPTERS[-1]}.html", wait_until="networkidle")
    cut = page.evaluate(
        """() => [...document.querySelectorAll('pre')].filter(p => p.offsetParent !== null
             && p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.slice(0, 50))"""
    )
    context.close()
    assert not cut, f"in print, {len(cut)} code blocks lose the end of their lines: {cut[:3]}"


@pytest.mark.parametrize("path", CHAPTERS)
def test_chapter_page_weight(browser, site_url, path):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    loaded: dict[str, int] = {}

    def response(response):
        try:
            loaded[response.url] = len(response.body())
        except Exception:  # a redirect or a cancelled body has no size to count
            loaded.setdefault(response.url, 0)

    page.on("response", response)
    page.goto(f"{site_url}/{path}.html", wait_until="networkidle")
    wait_for_math(page)
    page.wait_for_load_state("networkidle")
    context.close()
    total = sum(loaded.values())
    biggest = sorted(loaded.items(), key=lambda item: -item[1])[:5]
    listing = "\n".join(f"{size:>10,} {url.split('/', 3)[-1]}" for url, size in biggest)
    print(f"{path}: {total:,} bytes in {len(loaded)} requests")
    assert total < PAGE_BUDGET, f"{path} loads {total:,} bytes (budget {PAGE_BUDGET:,}); largest:\n{listing}"


def test_math_is_not_loaded_on_pages_without_math(page, site_url):
    page, log = page
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, site_url, "book/setup.html")
    assert page.locator(".math").count() == 0, "the setup page was expected to have no formula"
    assert not [u for u in requested if "/mathjax/" in u], "MathJax is loaded on a page without math"
    assert not log.problems(), "\n".join(log.problems())
