"""The chapters read well where markdown is rendered plainly, without MyST (Colab, GitHub, nbconvert).

Each chapter is converted with nbconvert's HTML exporter (mistune, no MyST), as Colab and GitHub's viewer
render notebook markdown. On that page no directive syntax may show as text, every exercise must be readable
with its title (prose and math, not a monospace code block), and the text of every solution must sit inside a
folded `<details>` element.
"""

import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

nbconvert = pytest.importorskip("nbconvert")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RAW_SYNTAX = ["{exercise}", "{solution-start}", "{solution-end}", "{solution}", ":label:", ":class: dropdown"]
# An exercise's title: the directive's argument, or the bold first line of its body (tools/notebook_tags.py).
EXERCISE_TITLE = re.compile(r"^(?:`{3,}|:{3,})\{exercise\}[ \t]*(\S.*)$|^</div>\n\n\*\*(.+)\*\*$", re.M)


class _Page(HTMLParser):
    """The visible text of an HTML page, and the text inside closed `<details>` (minus its summary)."""

    HIDDEN = {"script", "style", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []
        self.visible: list[str] = []
        self.folded: list[str] = []
        self.code: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in {"br", "img", "meta", "link", "input", "hr"}:
            return
        self.stack.append((tag, "hidden" in dict(attrs)))

    def handle_endtag(self, tag):
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data):
        tags = [tag for tag, _ in self.stack]
        if any(tag in self.HIDDEN for tag in tags) or any(hidden for _, hidden in self.stack):
            return
        if "details" in tags and tags[-1] != "summary" and "summary" not in tags[tags.index("details"):]:
            self.folded.append(data)
            return
        if "pre" in tags or "code" in tags:
            self.code.append(data)
        self.visible.append(data)


def _render(path: Path) -> _Page:
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_filename(str(path))
    page = _Page()
    page.feed(html)
    return page


def _markdown(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]


def _words(text: str) -> str:
    return " ".join(unescape(text).split())


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.stem)
def chapter(request) -> tuple[Path, _Page]:
    return request.param, _render(request.param)


def test_no_directive_syntax_shows_as_text(chapter):
    path, page = chapter
    text = "".join(page.visible)
    shown = [syntax for syntax in RAW_SYNTAX if syntax in text]
    assert not shown, f"{path.name} shows MyST directive syntax as text in plain markdown: {shown}"


def test_exercises_are_readable_with_their_title(chapter):
    path, page = chapter
    titles = [(directive or bold).strip() for source in _markdown(path) if "{exercise}" in source
              for directive, bold in EXERCISE_TITLE.findall(source)]
    assert titles, f"{path.name} has no exercise"
    visible = _words("".join(page.visible))
    code = _words(" ".join(page.code))
    for title in titles:
        assert _words(title) in visible, f"{path.name}: the exercise {title!r} has no visible title"
        assert _words(title) not in code, f"{path.name}: the exercise {title!r} shows as a code block"


def test_solution_text_is_folded(chapter):
    path, page = chapter
    folded = _words("".join(page.folded))
    sources = _markdown(path)
    solution_prose = []
    inside = False
    for source in sources:
        if "{solution-start}" in source:
            inside = True
        if inside:
            # The prose of the solution: its text lines, without directive or HTML lines.
            lines = [line for line in source.splitlines()
                     if line.strip() and not line.lstrip().startswith(("```", ":::", ":", "<", "$$"))]
            solution_prose += [line for line in lines if len(line.split()) >= 4]
        if "{solution-end}" in source:
            inside = False
    def normal(text: str) -> str:
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
        text = re.sub(r"^\s*(?:[-*]|\d+\.)\s+", "", text)  # a list item's marker
        return " ".join(re.sub(r"[`*$\\{}]", "", text).split())

    for line in solution_prose:
        words = " ".join(normal(line).split()[:4])
        assert words in normal(folded), f"{path.name}: solution text {line[:60]!r} is not folded in <details>"
