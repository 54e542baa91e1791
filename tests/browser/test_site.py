"""A real browser reads the built book: pages load cleanly, math is typeset, navigation and search work."""

import re

import pytest
import yaml
from conftest import ROOT, SCREENSHOTS, SITE

TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
PAGES = [TOC["root"]] + [entry["file"] for part in TOC["parts"] for entry in part["chapters"]]
CHAPTER_1 = next(p for p in PAGES if p.startswith("notebooks/01_"))
# A word that the prose of chapter 1 uses and no other page of the book does.
CHAPTER_1_WORD = "hedgehog"


def open_page(page, site_url, path):
    response = page.goto(f"{site_url}/{path}", wait_until="networkidle")
    assert response is not None and response.ok, f"{path} did not load"
    page.wait_for_load_state("networkidle")


def wait_for_math(page):
    """Wait until MathJax has typeset the page, if the page has math."""
    if page.locator(".math").count() == 0:
        return 0
    page.wait_for_function("() => window.MathJax?.startup?.promise", timeout=20_000)
    page.evaluate("() => MathJax.startup.promise")
    return page.locator(".math").count()


def test_toc_lists_only_pages_that_exist():
    missing = [p for p in PAGES if not (SITE / f"{p}.html").exists()]
    assert not missing, f"pages in _toc.yml with no built page: {missing}"


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_cleanly(page, site_url, path):
    page, log = page
    open_page(page, site_url, f"{path}.html")
    math_count = wait_for_math(page)
    untypeset = page.evaluate(
        "() => [...document.querySelectorAll('.math')]"
        ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60))"
    )
    assert not untypeset, f"{path}: {len(untypeset)} of {math_count} formulas untypeset: {untypeset[:3]}"
    broken_images = page.evaluate(
        "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert not broken_images, f"{path}: images that did not load: {broken_images}"
    assert not log.problems(), f"{path}:\n" + "\n".join(log.problems())


def test_math_is_typeset_offline(page, site_url):
    page, log = page
    open_page(page, site_url, "book/notation.html")
    assert wait_for_math(page) > 0, "the notation page should have formulas"
    assert page.locator("mjx-container").count() > 0
    assert not log.outside_requests


def test_next_and_previous_links_walk_the_whole_book(page, site_url):
    page, log = page
    open_page(page, site_url, "index.html")
    forward = [page.url]
    while page.locator("a.right-next").count():
        with page.expect_navigation(wait_until="load"):
            page.locator("a.right-next").first.click()
        forward.append(page.url)
        assert len(forward) <= len(PAGES) + 1, "the next links go round in a circle"
    visited = [re.sub(r"^.*?127\.0\.0\.1:\d+/", "", u).removesuffix(".html") for u in forward]
    assert visited[1:] == PAGES[1:], f"next links visit {visited}, the table of contents says {PAGES}"
    backward = [page.url]
    while page.locator("a.left-prev").count():
        with page.expect_navigation(wait_until="load"):
            page.locator("a.left-prev").first.click()
        backward.append(page.url)
        assert len(backward) <= len(PAGES) + 1, "the previous links go round in a circle"
    assert backward[::-1][1:] == forward[1:]
    assert not log.problems(), "\n".join(log.problems())


def test_search_finds_a_word_of_chapter_1(page, site_url):
    page, log = page
    open_page(page, site_url, f"search.html?q={CHAPTER_1_WORD}")
    results = page.locator("#search-results ul.search li a")
    results.first.wait_for(timeout=20_000)
    hrefs = [results.nth(i).get_attribute("href") for i in range(results.count())]
    assert any(CHAPTER_1 in h for h in hrefs), f"search for {CHAPTER_1_WORD!r} found {hrefs}"
    assert all(CHAPTER_1 in h for h in hrefs), f"{CHAPTER_1_WORD!r} should appear in chapter 1 only: {hrefs}"
    assert not log.problems(), "\n".join(log.problems())


def test_exercise_solution_is_hidden_until_clicked(page, site_url):
    page, log = page
    open_page(page, site_url, f"{CHAPTER_1}.html")
    solution = page.locator("div.solution.dropdown").first
    solution.wait_for(state="attached")
    body = solution.locator("section, div.section, .cell").first
    assert not body.is_visible(), "a solution is visible before it is clicked"
    solution.locator("button.toggle-button").first.click()
    body.wait_for(state="visible", timeout=5_000)
    assert not log.problems(), "\n".join(log.problems())


@pytest.mark.parametrize("path, name", [("index.html", "intro"), (f"{CHAPTER_1}.html", "chapter-1")])
def test_screenshots_for_a_person_to_look_at(page, site_url, path, name):
    page, _ = page
    open_page(page, site_url, path)
    wait_for_math(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 10_000, f"{target} looks empty"
