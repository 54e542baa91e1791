"""Every notebook is in the form the tools and the book expect: markers in tags and metadata, lines that fit.

`tools/notebook_tags.py` puts a notebook in that form; these tests fail when a notebook (a new chapter
included) still carries `#| export`, `#| default_exp` or `# NBVAL_...` in its code, or has a code line longer
than the book shows without scrolling.
"""

import json
import sys
from pathlib import Path

import pytest
from nbval.plugin import find_comment_markers, find_metadata_tags

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import export  # noqa: E402  (tools/ is not a package)
import notebook_tags  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The longest code line a chapter may have: ruff's limit for the library (pyproject.toml), and what the book
# shows at 1366 px without sideways scrolling (book/_ext/static/course.css; tests/browser/test_layout.py).
LINE_LIMIT = notebook_tags.LINE_LIMIT


def _code(source: str, **metadata) -> dict:
    return {"cell_type": "code", "id": "x", "metadata": metadata, "execution_count": None, "outputs": [],
            "source": source.splitlines(keepends=True)}


def _markdown(source: str) -> dict:
    return {"cell_type": "markdown", "id": "m", "metadata": {}, "source": source.splitlines(keepends=True)}


# A chapter as the course wrote them before this script: the markers in the code.
OLD_STYLE = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "cells": [
        _markdown("# 11. Data"),
        _code(
            "#| default_exp demo\n"
            "# On Colab, or wherever it is missing, install the course library from its repository.\n"
            "try:\n    import transformer_lib\nexcept ImportError:\n"
            "    %pip install --quiet git+https://github.com/transformer-networks/course"
        ),
        _code("import torch\n\ntorch.manual_seed(0)"),
        _code("#| export\nimport math\n\n\ndef area(r: float) -> float:\n    return math.pi * r**2"),
        _code("# NBVAL_IGNORE_OUTPUT\nprint(area(1.0))"),
        _code("def _check(f):\n    assert f(1.0) == area(1.0)", tags=["hide-input"]),
        _markdown(
            "As chapter 2 showed, and chapters 2 and 3 use (see `chapter 2` and $chapter 2$), exercise 2\n"
            "needs [chapter 3](03_x.ipynb); chapter 12 does not exist yet; exercise 7 neither."
        ),
        _markdown("```{exercise} First\n:label: ex-demo-first\n\nAs in chapter 3.\n```"),
        _markdown("```{exercise} Second\n:label: ex-demo-second\n\nText.\n```"),
        _markdown("```python\n# chapter 2 in code is left alone\n```\n## Chapter 2 in a heading too"),
    ],
}
FILES = {2: "02_attention.ipynb", 3: "03_x.ipynb", 11: "11_demo.ipynb"}


def test_transform_moves_every_marker_out_of_the_code():
    new = notebook_tags.transform(OLD_STYLE, FILES, 11)
    sources = ["".join(c["source"]) for c in new["cells"] if c["cell_type"] == "code"]
    assert not any("#|" in s or "NBVAL" in s for s in sources), sources
    assert new["metadata"]["transformer_lib"] == {"module": "demo"}
    install, setup, exported, noisy, checker = new["cells"][1:6]
    assert install["metadata"]["tags"] == ["remove-cell"]
    assert "".join(install["source"]).startswith("# On Colab")
    assert "tags" not in setup["metadata"]
    assert exported["metadata"]["tags"] == ["export"]
    assert "".join(exported["source"]).startswith("import math")
    assert noisy["metadata"]["tags"] == ["nbval-ignore-output"]
    assert checker["metadata"]["jupyter"] == {"source_hidden": True}
    assert OLD_STYLE["cells"][3]["source"][0] == "#| export\n", "transform must not change its argument"


def test_transform_links_chapters_and_refers_to_exercises_by_label():
    cells = notebook_tags.transform(OLD_STYLE, FILES, 11)["cells"][6:]
    prose, first, _, code = ["".join(c["source"]) for c in cells]
    assert prose == (
        "As [chapter 2](02_attention.ipynb) showed, and chapters [2](02_attention.ipynb) and [3](03_x.ipynb) "
        "use "
        "(see `chapter 2` and $chapter 2$), {numref}`ex-demo-second`\n"
        "needs [chapter 3](03_x.ipynb); chapter 12 does not exist yet; exercise 7 neither."
    )
    assert "As in [chapter 3](03_x.ipynb)." in first
    assert code == "```python\n# chapter 2 in code is left alone\n```\n## Chapter 2 in a heading too"


def test_pages_link_chapters_to_the_notebooks_folder():
    text = "Chapter 3 builds on chapter 2.\n"
    assert notebook_tags.link_chapters(text, FILES, folder="../notebooks/") == (
        "[Chapter 3](../notebooks/03_x.ipynb) builds on [chapter 2](../notebooks/02_attention.ipynb).\n"
    )


def test_transform_is_idempotent():
    once = notebook_tags.transform(OLD_STYLE, FILES, 11)
    assert notebook_tags.transform(once, FILES, 11) == once


def test_nbval_reads_the_tags_as_it_read_the_comments():
    old = OLD_STYLE["cells"][4]
    new = notebook_tags.transform(OLD_STYLE, FILES, 11)["cells"][4]
    assert list(find_metadata_tags(new["metadata"])) == list(find_comment_markers("".join(old["source"])))
    assert list(find_metadata_tags(new["metadata"])) == [("check", False)]


@pytest.mark.parametrize("form", ["old", "new"])
def test_exporter_writes_the_same_module_from_either_form(tmp_path, form):
    notebook = OLD_STYLE if form == "old" else notebook_tags.transform(OLD_STYLE, FILES, 11)
    path = tmp_path / "11_demo.ipynb"
    path.write_text(json.dumps(notebook))
    module, source = export.render(path)
    assert module == "demo"
    assert "def area(r: float) -> float:" in source and "#|" not in source
    assert '__all__ = ["area"]' in source


def test_reflow_splits_long_strings_and_code_and_keeps_the_meaning():
    message = "a negative length has no meaning here, so pass its absolute value or count from the other end"
    source = (
        "def check(x):\n"
        "    if x < 0:\n"
        f"        raise ValueError(f\"x must be >= 0, got {{x}}; {message}\")\n"
        "    return some_function_with_a_long_name(x, another_argument=x + 1, yet_another=x * 2, "
        "last_one=x - 3)\n"
        "\n\n"
        "def some_function_with_a_long_name(*args, **kwargs):\n"
        "    return args, sorted(kwargs)\n"
    )
    assert max(map(len, source.splitlines())) > 100
    reflowed = notebook_tags.reflow(source, limit=100)
    assert max(map(len, reflowed.splitlines())) <= 100, reflowed
    scope_old, scope_new = {}, {}
    exec(source, scope_old)  # noqa: S102 (the test's own code)
    exec(reflowed, scope_new)  # noqa: S102
    assert scope_old["check"](5) == scope_new["check"](5)
    for scope in (scope_old, scope_new):
        with pytest.raises(ValueError) as error:
            scope["check"](-1)
        scope["message"] = str(error.value)
    assert scope_old["message"] == scope_new["message"]
    assert notebook_tags.reflow(reflowed, limit=100) == reflowed


def test_reflow_leaves_magics_and_short_cells_alone():
    cell = "%pip install --quiet " + "x" * 120
    assert notebook_tags.reflow(cell, limit=100) == cell
    assert notebook_tags.reflow("a = 1\n", limit=100) == "a = 1\n"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_tagged_form(notebook):
    content = json.loads(notebook.read_text(encoding="utf-8"))
    number = int(notebook.name.split("_")[0]) if notebook.name[0].isdigit() else None
    assert notebook_tags.transform(content, this=number) == content, (
        f"{notebook.name} has tooling markers in its code or lines to reflow: "
        "run `python tools/notebook_tags.py`"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_lines_fit_the_page(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    long_lines = [
        f"cell {index}: {len(line)} characters: {line.strip()[:60]}..."
        for index, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if len(line) > LINE_LIMIT
    ]
    assert not long_lines, f"{notebook.name}: lines over {LINE_LIMIT} characters:\n" + "\n".join(long_lines)


@pytest.mark.parametrize("page", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_book_pages_link_their_chapters(page):
    text = page.read_text(encoding="utf-8")
    assert notebook_tags.link_chapters(text, notebook_tags.chapter_files(), folder="../notebooks/") == text, (
        f"{page.name} names a chapter without linking it: run `python tools/notebook_tags.py`"
    )


def test_solution_keeps_its_hands_off_the_learners_attempt():
    notebook = {
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [
            _markdown("```{exercise} Double\n:label: ex-demo-double\n\nWrite `my_double`.\n```"),
            _code("def my_double(x):\n    raise NotImplementedError"),
            _code("def check_double(f):\n    return f(2) == 4", tags=["hide-input"]),
            _markdown("```{solution-start} ex-demo-double\n:class: dropdown\n```"),
            _code("def my_double(x):\n    return 2 * x  # my_double stays in comments\n\n\n"
                  "check_double(my_double)"),
            _markdown("```{solution-end}\n```"),
        ],
    }
    solution = "".join(notebook_tags.transform(notebook, FILES, 11)["cells"][4]["source"])
    assert solution == (
        "def solution_double(x):\n    return 2 * x  # my_double stays in comments\n\n\n"
        "check_double(solution_double)"
    )
    scope = {}
    for cell in notebook["cells"][1:3]:
        exec("".join(cell["source"]), scope)  # noqa: S102
    exec(solution, scope)  # noqa: S102  (what "Run All" does)
    with pytest.raises(NotImplementedError):
        scope["my_double"](1)  # the learner's attempt is still the one in the kernel


def test_alt_text_keeps_its_words_apart():
    text = "![The encoder: a feed-forward\nnetwork per layer](figure.svg)\n\nNext\nparagraph."
    assert notebook_tags.one_line_alt_text(text) == (
        "![The encoder: a feed-forward network per layer](figure.svg)\n\nNext\nparagraph."
    )


def test_display_equations_get_labels_once():
    text = (
        "Score\n\n$$\ne = q k\n$$\n\nand\n\n$$\na = 1\n$$ (eq-demo-1)\n\ninline $$x$$ stays."
        "\n\n```python\n$$\n```"
    )
    labelled = notebook_tags.label_equations(text, "eq-demo", {"eq-demo-1"})
    assert labelled == (
        "Score\n\n$$\ne = q k\n$$ (eq-demo-2)\n\nand\n\n$$\na = 1\n$$ (eq-demo-1)\n\ninline $$x$$ stays."
        "\n\n```python\n$$\n```"
    )
    assert notebook_tags.label_equations(labelled, "eq-demo", {"eq-demo-1", "eq-demo-2"}) == labelled


def test_exercises_and_solutions_are_written_for_plain_markdown_too():
    notebook = {
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [
            _markdown("Intro.\n\n```{exercise} Double $x$\n:label: ex-demo-double\n\nWrite `my_double`."
                      "\n```\n\n```{solution-start} ex-demo-double\n:class: dropdown\n```\n\nMultiply by 2."),
            _code("def solution_double(x):\n    return 2 * x"),
            _markdown("Then check it."),
            _markdown("```{solution-end}\n```\n\nAfter the solution."),
            _markdown("````{solution} ex-demo-double\n:class: dropdown\n\nIn one cell.\n\n```python\nx\n```"
                      "\n````"),
        ],
    }
    cells = notebook_tags.transform(notebook, FILES, 11)["cells"]
    texts = ["".join(cell["source"]) for cell in cells]
    hidden = "<div hidden>\n\n{}\n\n</div>"
    assert texts == [
        "Intro.",
        hidden.format(":::{exercise}\n:label: ex-demo-double") + "\n\n**Double $x$**\n\nWrite `my_double`.",
        "<details><summary>Solution</summary>\n\n"
        + hidden.format(":::{solution-start} ex-demo-double\n:class: dropdown\n:::")
        + "\n\nMultiply by 2.\n\n</details>",
        "def solution_double(x):\n    return 2 * x",
        "<details><summary>Solution (continued)</summary>\n\nThen check it.\n\n</details>",
        hidden.format(":::{solution-end}\n:::"),
        "After the solution.",
        "<details><summary>Solution</summary>\n\n"
        + hidden.format(":::{solution-start} ex-demo-double\n:class: dropdown\n:::")
        + "\n\nIn one cell.\n\n```python\nx\n```\n\n</details>",
        hidden.format(":::{solution-end}\n:::"),
    ]
    assert cells[3]["metadata"]["cellView"] == "form"  # Colab folds the solution's code
    new_ids = [cell["id"] for cell in cells if cell["id"] not in ("m", "x")]  # the split cells' own ids
    assert len(set(new_ids)) == len(new_ids) == 4
    assert notebook_tags.transform({**notebook, "cells": cells}, FILES, 11)["cells"] == cells


def test_a_cell_that_defines_a_checker_is_folded_and_exported():
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                "cells": [_code("def check_double(f):\n    return f(2) == 4\n\n\ncheck_double(my_double)")]}
    cell = notebook_tags.transform(notebook, FILES, 11)["cells"][0]
    assert {"hide-input", "exercise-checker"} <= set(cell["metadata"]["tags"])
    assert cell["metadata"]["jupyter"]["source_hidden"] is True


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_solution_code_is_collapsed_in_jupyterlab_and_colab(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    forms = [c for c in cells if c["metadata"].get("cellView") == "form"]
    open_ones = [c["id"] for c in forms if not c["metadata"].get("jupyter", {}).get("source_hidden")]
    assert not open_ones, f"{notebook.name}: solution code cells shown open in JupyterLab: {open_ones}"
