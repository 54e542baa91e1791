"""Figures in the built chapters: each plot has alt text in words and a numbered caption, is sharp on a
high-resolution screen (a vector image, or a raster with at least two pixels per CSS pixel), and its smallest
text stays readable on a phone (at least 8 CSS px at 390 px wide)."""

import re
from urllib.parse import unquote, urlparse

import pytest
from conftest import SITE
from test_site import PAGES, open_page

CHAPTERS = [p for p in PAGES if p.startswith("notebooks/")]
MIN_TEXT_PX = 8
IMAGE_FILE = re.compile(r"\.(svg|png|jpe?g|gif|webp)$", re.IGNORECASE)
# What a page's alt text is when nobody wrote one: the file name, or the format.
PLACEHOLDER_ALT = {"png", "svg", "image", "figure", "plot", "output"}

# Every image in the article (the launch buttons' logos sit outside it), with what a reader meets around it.
ARTICLE_IMAGES = """() => [...document.querySelectorAll('.bd-article img')].map(img => {
  const figure = img.closest('figure');
  const number = figure?.querySelector('figcaption .caption-number');
  const text = figure?.querySelector('figcaption .caption-text');
  const box = img.getBoundingClientRect();
  return {
    src: img.getAttribute('src'), url: img.currentSrc || img.src, alt: img.getAttribute('alt'),
    output: !!img.closest('.cell_output'), number: number ? number.textContent.trim() : null,
    caption: text ? text.textContent.trim() : '', width: box.width, height: box.height,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
  };
})"""


def chapter_number(path: str) -> int:
    return int(re.match(r"notebooks/(\d+)_", path).group(1))


def alt_problem(alt: str | None) -> str | None:
    """Why an alt text does not describe its image in words, or None if it does."""
    if alt is None or not alt.strip():
        return "no alt text"
    text = alt.strip()
    name = text.rsplit("/", 1)[-1]
    if IMAGE_FILE.search(name) or text.lower() in PLACEHOLDER_ALT:
        return f"alt text is a file name or format: {text[:60]!r}"
    if len(text.split()) < 5:
        return f"alt text too short to describe a figure: {text!r}"
    return None


def svg_smallest_text(svg: str) -> tuple[float, float] | None:
    """(smallest font size, width of the drawing), both in the SVG's own units; None without text."""
    sizes = [float(a or b) for a, b in re.findall(
        r'font-size(?::\s*|=")(\d+(?:\.\d+)?)|font:\s*(?:[a-z-]+\s+)*(\d+(?:\.\d+)?)px', svg)]
    box = re.search(r'<svg[^>]*\sviewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)', svg) or re.search(
        r'<svg[^>]*\swidth="([\d.]+)', svg)
    if not sizes or box is None:
        return None
    return min(sizes), float(box.group(1))


def site_file(url: str):
    return SITE / unquote(urlparse(url).path).lstrip("/")


def short(src: str) -> str:
    return src.rsplit("/", 1)[-1][:20]


@pytest.mark.parametrize("path", CHAPTERS)
def test_plots_have_alt_text_and_a_numbered_caption(page, site_url, path):
    page, log = page
    open_page(page, site_url, f"{path}.html")
    images = page.evaluate(ARTICLE_IMAGES)
    chapter = chapter_number(path)
    problems = []
    for image in images:
        if (why := alt_problem(image["alt"])) is not None:
            problems.append(f"{short(image['src'])}: {why}")
        if not image["output"]:
            continue  # a figure drawn for the course, in the prose: alt text is enough
        if image["number"] is None or not re.fullmatch(rf"Figure {chapter}\.\d+", image["number"]):
            problems.append(f"{short(image['src'])}: not in a figure numbered 'Figure {chapter}.N' "
                            f"(found {image['number']!r})")
        elif len(image["caption"].split()) < 5:
            problems.append(f"{image['number']}: caption too short: {image['caption']!r}")
    assert any(image["output"] for image in images), f"{path} has no plot"
    assert not problems, f"{path}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", CHAPTERS)
def test_plot_text_is_readable_on_a_phone(phone, site_url, path):
    page, log = phone
    open_page(page, site_url, f"{path}.html")
    problems = []
    for image in page.evaluate(ARTICLE_IMAGES):
        name = image["number"] or short(image["src"])
        if not image["src"].lower().endswith(".svg"):
            if image["output"]:
                problems.append(f"{name}: a raster image: its text size cannot be checked (use SVG)")
            continue
        measured = svg_smallest_text(site_file(image["url"]).read_text(encoding="utf-8"))
        if measured is None:
            continue  # no text in the drawing
        smallest, drawing_width = measured
        rendered = smallest * image["width"] / drawing_width
        if rendered < MIN_TEXT_PX - 0.05:
            problems.append(f"{name}: smallest text {rendered:.1f} px ({smallest:g} units, drawn "
                            f"{image['width']:.0f} px wide of {drawing_width:.0f})")
    widths = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1], f"{path} scrolls sideways: {widths[0]} px on a {widths[1]} px screen"
    assert not problems, f"{path} at 390 px:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", CHAPTERS)
def test_plots_are_sharp_on_high_resolution_screens(desktop, site_url, path):
    page, log = desktop
    open_page(page, site_url, f"{path}.html")
    blurry = []
    for image in page.evaluate(ARTICLE_IMAGES):
        if not image["output"] or image["src"].lower().endswith(".svg"):
            continue
        if image["naturalWidth"] < 2 * image["width"] - 1:
            blurry.append(f"{image['number'] or short(image['src'])}: {image['naturalWidth']} pixels wide, "
                          f"shown {image['width']:.0f} CSS px wide (needs twice as many, or SVG)")
    assert not blurry, f"{path}:\n" + "\n".join(blurry)
