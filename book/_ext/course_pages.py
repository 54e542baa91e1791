"""What the course changes in the pages the theme writes: lighter pages, code that fits, print that keeps it.

- Stylesheet `static/course.css`: code cells show 110 characters (the notebooks' line limit, checked by
  `tests/test_notebook_format.py`) at 1366 px without scrolling and without the copy button covering them;
  long lines wrap in print; on a phone inline code breaks, and wide tables and equations scroll in their box.
- Weight: pydata-sphinx-theme loads Font Awesome twice, as a 1.5 MB script that swaps every icon for an SVG
  and as a stylesheet with web fonts; the stylesheet alone draws the same icons, so the script is taken out of
  every page. MathJax is loaded only on pages that have math, and as its core plus the TeX input and HTML
  output components instead of the combined `tex-chtml.js`; rarer TeX packages load on first use.
- Numbering: Sphinx numbers exercises and figures across the whole book (chapter 10 had exercises 35-38). Here
  they restart in every chapter and carry its number: Exercise 10.3, Fig. 10.2. References by label
  ({numref}`ex-...`) show the same number, so prose and exercise cannot drift apart.
"""

import re
from pathlib import Path
from typing import Any

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


def _drop_fontawesome_script(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        lighter = FONT_PRELOAD.sub("", FONTAWESOME_SCRIPT.sub("", text))
        if lighter != text:
            page.write_text(lighter, encoding="utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _configure, priority=900)
    app.connect("env-get-updated", _number_per_chapter, priority=900)
    app.connect("html-page-context", _drop_mathjax_without_math, priority=900)
    app.connect("build-finished", _drop_fontawesome_script)
    app.add_css_file("course.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
