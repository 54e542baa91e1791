"""What the course changes in the pages the theme writes: lighter pages, code that fits, print that keeps it.

- Stylesheet `static/course.css`: code cells show 110 characters (the notebooks' line limit, checked by
  `tests/test_notebook_format.py`) at 1366 px without scrolling and without the copy button covering them;
  long lines wrap in print; on a phone inline code breaks, and wide tables and equations scroll in their box.
- Weight: pydata-sphinx-theme loads Font Awesome twice, as a 1.5 MB script that swaps every icon for an SVG
  and as a stylesheet with web fonts; the stylesheet alone draws the same icons, so the script is taken out of
  every page, and its stylesheet and fonts are cut down to the icons the site uses (about 20 of 2,000; the
  fonts as WOFF, subset with fontTools, a matplotlib dependency).
  MathJax is loaded only on pages that have math, and as its core plus the TeX input and HTML
  output components instead of the combined `tex-chtml.js`; rarer TeX packages load on first use.
  sphinx-design's stylesheet and tab script (55 KB) are left out of pages that use none of its components.
- Numbering: Sphinx numbers exercises and figures across the whole book (chapter 10 had exercises 35-38). Here
  they restart in every chapter and carry its number: Exercise 10.3, Figure 10.2. References by label
  ({numref}`ex-...`) show the same number, so prose and exercise cannot drift apart.
- Figures stay legible on a phone: each SVG image gets, as `--course-min-width`, the width at which its
  smallest text (matplotlib writes `font-size: 10px` in the SVG's own units) renders at 8 CSS px;
  `static/course.css` keeps the image at least that wide on screen and lets it scroll sideways in its own box,
  so tick labels are never shrunk to 4-6 px while the page itself never scrolls sideways. Print is left alone.
- Plain-markdown wrappers: the notebooks hide exercise and solution directives from plain Jupyter markdown
  (Colab, GitHub) in `<div hidden>` and fold solutions in `<details>` (tools/notebook_tags.py). The book has
  its own exercise boxes and folded solutions, so those HTML tags are taken out of its pages.
"""

import math
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

STATIC = Path(__file__).parent / "static"
FONTAWESOME_SCRIPT = re.compile(r'\s*<script src="[^"]*/fontawesome/[^"]*/js/all\.min\.js[^"]*"></script>')
# The theme preloads all three icon fonts; without the preload a browser fetches a font when an icon needs it
# (the brand icons, for instance, sit in a closed menu).
FONT_PRELOAD = re.compile(
    r'\s*<link rel="preload" as="font" type="font/woff2" crossorigin href="[^"]*/fontawesome/[^"]*" />'
)
# MathJax components that every page with math needs; `autoload` fetches other TeX packages on first use.
MATHJAX_LOAD = ["input/tex-base", "[tex]/ams", "[tex]/newcommand", "[tex]/noerrors", "[tex]/noundefined",
                "[tex]/configmacros", "[tex]/require", "[tex]/autoload", "output/chtml"]
MATHJAX_PACKAGES = ["base", "ams", "newcommand", "noerrors", "noundefined", "configmacros", "require",
                    "autoload"]


def _configure(app: Sphinx) -> None:
    app.config.html_static_path = [*app.config.html_static_path, str(STATIC)]
    if app.builder.name == "singlehtml":  # one page holds every chapter's math: load MathJax there
        app.set_html_assets_policy("always")
    if app.config.mathjax_path.endswith("tex-chtml.js"):  # the offline copy of sphinx-mathjax-offline
        app.config.mathjax_path = app.config.mathjax_path.replace("tex-chtml.js", "startup.js")
        config = dict(app.config.mathjax3_config or {})
        config["loader"] = {**config.get("loader", {}), "load": MATHJAX_LOAD}
        config["tex"] = {**config.get("tex", {}), "packages": MATHJAX_PACKAGES}
        app.config.mathjax3_config = config


CHAPTER = re.compile(r"^notebooks/(\d+)_")


def _number_per_chapter(app: Sphinx, env) -> list[str]:
    """Renumber exercises, figures and tables of each chapter from 1, prefixed by the chapter number."""
    changed = []
    for docname, types in env.toc_fignumbers.items():
        match = CHAPTER.match(docname)
        prefix = (int(match.group(1)),) if match else ()
        for figtype, numbers in types.items():
            renumbered = {key: (*prefix, index) for index, key in enumerate(numbers, start=1)}
            if renumbered != numbers:
                types[figtype] = renumbered
                changed.append(docname)
    return sorted(set(changed))


def _drop_mathjax_without_math(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Remove MathJax from a page whose body has no formula."""
    body = context.get("body", "")
    if 'class="math' in body or "\\(" in body or "\\[" in body:
        return
    mathjax = app.config.mathjax_path

    def is_mathjax(js) -> bool:
        filename = str(getattr(js, "filename", js) or "").split("?")[0]
        body = getattr(js, "attributes", {}).get("body", "") or ""
        return filename == mathjax or filename.endswith("/" + mathjax) or body.startswith("window.MathJax")

    context["script_files"] = [js for js in context.get("script_files", []) if not is_mathjax(js)]


def _drop_sphinx_design_where_unused(app: Sphinx, pagename: str, templatename: str, context: dict,
                                     doctree) -> None:
    """Remove sphinx-design's stylesheet and script from a page that uses none of its `sd-` components."""
    if 'class="sd-' in context.get("body", "") or ' sd-' in context.get("body", ""):
        return

    def is_design(asset) -> bool:
        name = str(getattr(asset, "filename", asset) or "").split("?")[0]
        return name.endswith(("sphinx-design.min.css", "design-tabs.js"))

    context["css_files"] = [css for css in context.get("css_files", []) if not is_design(css)]
    context["script_files"] = [js for js in context.get("script_files", []) if not is_design(js)]


ICON_NAME = re.compile(r"\bfa-[a-z0-9-]+")
ICON_RULE = re.compile(r"^([^{}@]+)\{content:\\?\"\\([0-9a-f]+)\"\}$")
FONT_FILES = {  # family and weight in Font Awesome's stylesheet -> its TrueType file
    ("Font Awesome 6 Free", "900"): "fa-solid-900.ttf",
    ("Font Awesome 6 Free", "400"): "fa-regular-400.ttf",
    ("Font Awesome 6 Brands", "400"): "fa-brands-400.ttf",
}


def _top_level_rules(css: str) -> list[str]:
    """A stylesheet cut into its top-level rules, each with its braces (at-rules keep their nested blocks)."""
    rules, depth, start = [], 0, 0
    for index, char in enumerate(css):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                rules.append(css[start:index + 1].strip())
                start = index + 1
    return rules


def _trim_fontawesome(outdir: Path) -> None:
    """Keep only the icons the site uses in Font Awesome's stylesheet and fonts (written as WOFF subsets)."""
    styles = next(outdir.glob("_static/vendor/fontawesome/*/css/all.min.css"), None)
    if styles is None:
        return
    try:
        from fontTools import subset
    except ImportError:
        return
    used = set()
    for path in [*outdir.rglob("*.html"), *outdir.glob("_static/**/*.js")]:
        used.update(ICON_NAME.findall(path.read_text(encoding="utf-8", errors="ignore")))
    kept, codepoints = [], set()
    for rule in _top_level_rules(styles.read_text(encoding="utf-8")):
        if rule.startswith("@font-face"):
            continue
        match = ICON_RULE.match(rule)
        if match is None:  # comments, base classes, sizes, animations (@keyframes, @media): keep
            kept.append(rule)
            continue
        selectors = [s for s in match.group(1).split(",") if s.split(":")[0].strip().lstrip(".") in used]
        if selectors:
            kept.append(",".join(selectors) + rule[len(match.group(1)):])
            codepoints.add(int(match.group(2), 16))
    fonts = styles.parent.parent / "webfonts"
    faces = []
    for (family, weight), name in FONT_FILES.items():
        source = fonts / name
        if not source.exists():
            continue
        options = subset.Options()
        options.flavor = "woff"
        font = subset.load_font(str(source), options)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=codepoints)
        subsetter.subset(font)
        target = source.with_name(source.stem + "-course.woff")
        subset.save_font(font, str(target), options)
        faces.append(f'@font-face{{font-display:block;font-family:"{family}";font-style:normal;'
                     f'font-weight:{weight};src:url(../webfonts/{target.name}) format("woff")}}')
    styles.write_text("".join(faces + kept), encoding="utf-8")


# The smallest text a figure may show on screen, in CSS px.
MIN_TEXT_PX = 8
SVG_IMAGE = re.compile(r'<img (?![^>]*--course-min-width)[^>]*src="(?P<src>[^"]*_images/[^"]+\.svg)"[^>]*>')
SVG_FONT_SIZE = re.compile(r'font-size(?::\s*|=")(\d+(?:\.\d+)?)|font:\s*(?:[a-z-]+\s+)*(\d+(?:\.\d+)?)px')
SVG_VIEWBOX = re.compile(r'<svg[^>]*\sviewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)')
SVG_WIDTH = re.compile(r'<svg[^>]*\swidth="([\d.]+)')


def svg_text_scale(svg: str) -> tuple[float, float] | None:
    """(smallest font size, width) of an SVG, both in its own user units; None if it has no text or width."""
    sizes = [float(a or b) for a, b in SVG_FONT_SIZE.findall(svg)]
    width = SVG_VIEWBOX.search(svg) or SVG_WIDTH.search(svg)
    if not sizes or width is None or min(sizes) <= 0:
        return None
    return min(sizes), float(width.group(1))


def _legible_figures(page: Path, text: str) -> str:
    """Give each SVG figure of a page the width at which its text stays readable (module docstring)."""

    def widen(match: re.Match) -> str:
        source = (page.parent / match.group("src")).resolve()
        try:
            scale = svg_text_scale(source.read_text(encoding="utf-8", errors="ignore"))
        except OSError:
            return match.group(0)
        if scale is None:
            return match.group(0)
        smallest, width = scale
        min_width = math.ceil(width * MIN_TEXT_PX / smallest)
        tag, style = match.group(0), f"--course-min-width: {min_width}px"
        if ' style="' in tag:
            tag = tag.replace(' style="', f' style="{style}; ', 1)
        else:
            tag = tag[:4] + f' style="{style}"' + tag[4:]
        return f'<span class="course-figure-scroll">{tag}</span>'

    return SVG_IMAGE.sub(widen, text)


def _lighten_pages(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        lighter = _legible_figures(page, FONT_PRELOAD.sub("", FONTAWESOME_SCRIPT.sub("", text)))
        if lighter != text:
            page.write_text(lighter, encoding="utf-8")
    _trim_fontawesome(Path(app.outdir))


def _register_singlehtml_visitors(app: Sphinx) -> None:
    """myst-nb draws folded cells (tag hide-input) for html only; the PDF's single page needs them too."""
    try:
        from myst_nb.sphinx_ import HideCodeCellNode, depart_HideCellInput, visit_HideCellInput
    except ImportError:  # another myst-nb version: nothing to register
        return
    visitors = (visit_HideCellInput, depart_HideCellInput)
    app.add_node(HideCodeCellNode, override=True, html=visitors, singlehtml=visitors)


# The HTML tags that tools/notebook_tags.py writes around exercises and solutions, each a raw node of its own.
PLAIN_MARKDOWN_TAG = re.compile(
    r"^\s*(?:<div hidden>|</div>|<details><summary>[^<]*</summary>|</details>)\s*$"
)


def _drop_plain_markdown_wrappers(app: Sphinx, doctree: nodes.document) -> None:
    """Remove the `<div hidden>` and `<details>` tags that only plain-markdown renderers need."""
    for node in list(doctree.findall(nodes.raw)):
        if "html" in node.get("format", "").split() and PLAIN_MARKDOWN_TAG.match(node.astext()):
            node.parent.remove(node)


def setup(app: Sphinx) -> dict[str, Any]:
    _register_singlehtml_visitors(app)
    app.connect("builder-inited", _configure, priority=900)
    app.connect("env-get-updated", _number_per_chapter, priority=900)
    app.connect("doctree-read", _drop_plain_markdown_wrappers)
    app.connect("html-page-context", _drop_mathjax_without_math, priority=900)
    app.connect("html-page-context", _drop_sphinx_design_where_unused, priority=900)
    app.connect("build-finished", _lighten_pages)
    app.add_css_file("course.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
