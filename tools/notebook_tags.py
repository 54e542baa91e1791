"""Move the tooling markers of the course's notebooks out of the code and into cell tags and metadata.

Readers of the book and learners in JupyterLab should see code, not instructions to tools. This script
rewrites a notebook so that:

- `#| default_exp <module>` becomes the notebook metadata `{"transformer_lib": {"module": "<module>"}}`;
- a first line `#| export` becomes the cell tag `export` (`tools/export.py` reads both forms);
- a line `# NBVAL_IGNORE_OUTPUT` (or another nbval marker) becomes nbval's tag (`nbval-ignore-output`, ...);
- the Colab install cell (`%pip install` of the course library) gets the tag `remove-cell`, so the book leaves
  it out while Colab and JupyterLab still run it;
- a cell that defines an exercise's checker (`def check_...`, not exported to the chapter's module) gets the
  tags `hide-input` and `exercise-checker` (tools/export.py writes it to `transformer_lib/exercises/`);
- a checker cell (tag `hide-input`: it holds reference answers) is also collapsed in JupyterLab
  (`metadata.jupyter.source_hidden`), like the solution cells;
- in the prose, "chapter N" becomes a link to chapter N's notebook (and "chapters N and M" links each number),
  and "exercise N" becomes a reference by label to the chapter's N-th exercise ({numref}`ex-...`), which the
  book numbers per chapter (book/_ext/course_pages.py), so the number in the text cannot drift;
- every display equation (`$$` lines in their own paragraph) gets a label, `eq-<module>-<n>`, so the book
  numbers it and the text can refer to it ({eq}`eq-attention-1`);
- an image's alt text is kept on one line (MyST drops the line breaks inside `![...]`, gluing words together);
- a solution's code does not take the name of the learner's attempt: a name that both the exercise's code
  cells and the solution's define is renamed in the solution (`my_top_p` -> `solution_top_p`, other names
  get a `_solution` suffix), so "Run All" leaves the learner's function in place;
- a code cell with a line longer than `LINE_LIMIT` characters is reflowed: long string literals inside
  brackets are split into adjacent literals (Python joins them back, so the value is the same), and if a line
  is still too long the cell is formatted with `ruff format --line-length LINE_LIMIT`.

It changes nothing else (no re-execution: outputs are untouched) and is idempotent: a second run changes
nothing.
`tests/test_notebook_format.py` fails while a notebook is not in this form.

    python tools/notebook_tags.py                 # rewrite every notebook in notebooks/
    python tools/notebook_tags.py PATH ...        # rewrite the given notebooks
    python tools/notebook_tags.py --check [PATH]  # exit 1 and name each notebook the script would change

Without paths it also links "chapter N" in the book's own pages (book/*.md).
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PAGES = ROOT / "book"
METADATA_KEY = "transformer_lib"
EXPORT_TAG = "export"
INSTALL_TAG = "remove-cell"
CHECKER_TAG = "hide-input"
# A cell that defines an exercise's automatic checker (`def check_...`): tools/export.py writes it to
# transformer_lib/exercises/, and it is folded like every cell that holds reference answers.
EXERCISE_CHECKER_TAG = "exercise-checker"
DEFAULT_EXP = re.compile(r"^#\|\s*default_exp\s+(\S+)\s*$")
EXPORT = re.compile(r"^#\|\s*export\s*$")
# nbval's comment markers and the cell tags it reads for them (nbval/plugin.py: metadata_tags).
NBVAL_TAGS = {
    "NBVAL_IGNORE_OUTPUT": "nbval-ignore-output",
    "NBVAL_CHECK_OUTPUT": "nbval-check-output",
    "NBVAL_RAISES_EXCEPTION": "raises-exception",
    "NBVAL_SKIP": "nbval-skip",
}
# The longest code line: ruff's line-length for the library (pyproject.toml), what the book shows at 1366 px.
LINE_LIMIT = 110
NBVAL_MARKER = re.compile(r"^#\s*(" + "|".join(NBVAL_TAGS) + r")\s*$")


def cell_source(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def _set_source(cell: dict, text: str) -> None:
    """Store text the way nbformat writes it: a list of lines, each but the last ending in a newline."""
    lines = text.splitlines(keepends=True)
    cell["source"] = lines if isinstance(cell["source"], list) else text


def _add_tag(cell: dict, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def is_install_cell(source: str) -> bool:
    """The Colab install cell: it installs the course library with %pip when the import fails."""
    return "%pip install" in source and "transformer_lib" in source


CHAPTER_FILE = re.compile(r"^(\d+)_.*\.ipynb$")
CHAPTER_MENTION = re.compile(
    r"\b(?P<word>[Cc]hapters?)(?P<numbers>\s+\d+(?:(?:\s*,\s*|\s+and\s+|\s+to\s+|\s+or\s+)\d+)*)\b(?!\.\d)"
)
EXERCISE_MENTION = re.compile(r"\b[Ee]xercise\s+(\d+)\b(?!\.\d)")
EXERCISE_LABEL = re.compile(r"^(?:```+|:::+)\{exercise\}[^\n]*\n(?::[a-z-]+:[^\n]*\n)*?:label:\s*(\S+)", re.M)
# Inline pieces of prose never rewritten: code, math, links (and images), HTML tags, roles like {numref}`x`.
INLINE_PROTECTED = re.compile(
    r"\{[a-z:-]+\}`[^`]*`|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|!?\[[^\]\n]*\]\([^)\n]*\)|<[^>\n]*>"
    r"|https?://\S+"
)
# Directives whose body is prose; the body of any other fenced block (code, figures' options) stays as is.
PROSE_DIRECTIVES = {"exercise", "solution", "solution-start", "note", "tip", "hint", "important", "warning",
                    "caution", "attention", "seealso", "admonition", "dropdown", "margin", "sidebar"}


def chapter_files(folder: Path = NOTEBOOKS) -> dict[int, str]:
    """Chapter number -> notebook file name, from the names `NN_title.ipynb`."""
    files = {}
    for path in sorted(folder.glob("*.ipynb")):
        if match := CHAPTER_FILE.match(path.name):
            files[int(match.group(1))] = path.name
    return files


def _rewrite_prose(markdown: str, rewrite) -> str:
    """Apply `rewrite` to the prose of a markdown text only: not to code, math, links, headings or options."""
    out, fence, in_math = [], None, False
    for line in markdown.split("\n"):
        stripped = line.strip()
        if fence is not None:  # inside a fenced block that is not prose
            if stripped.startswith(fence) and stripped.strip("`~") == "":
                fence = None
            out.append(line)
            continue
        if stripped.startswith(("```", "~~~")):
            marker = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
            name = re.match(r"\{([a-z-]+)\}", stripped[len(marker):])
            if stripped.strip("`~") and not (name and name.group(1) in PROSE_DIRECTIVES):
                fence = marker  # code, math or a directive without prose: skip to its closing fence
            out.append(line)
            continue
        if stripped == "$$":
            in_math = not in_math
            out.append(line)
            continue
        if in_math or stripped.startswith(("#", ":")) or line.startswith("    "):
            out.append(line)
            continue
        pieces, last = [], 0
        for match in INLINE_PROTECTED.finditer(line):
            pieces.append(rewrite(line[last:match.start()]))
            pieces.append(match.group(0))
            last = match.end()
        pieces.append(rewrite(line[last:]))
        out.append("".join(pieces))
    return "\n".join(out)


EQUATION_LABEL = re.compile(r"^\$\$\s*\(([^)]+)\)\s*$")


def equation_labels(markdown: str) -> list[str]:
    return [m.group(1) for line in markdown.split("\n") if (m := EQUATION_LABEL.match(line.strip()))]


def label_equations(markdown: str, prefix: str, used: set[str]) -> str:
    """Give each unlabelled display equation in its own paragraph a label `<prefix>-<n>` not in `used`."""
    lines = markdown.split("\n")
    fence, opening = None, None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and not stripped.strip("`~"):
                fence = None
            continue
        if opening is None and stripped.startswith(("```", "~~~")):
            name = re.match(r"[`~]+\{([a-z-]+)\}", stripped)
            if stripped.strip("`~") and not (name and name.group(1) in PROSE_DIRECTIVES):
                fence = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
            continue
        if opening is None and stripped == "$$":
            opening = index
        elif opening is not None and stripped.startswith("$$"):
            own_paragraph = (opening == 0 or not lines[opening - 1].strip()) and (
                index == len(lines) - 1 or not lines[index + 1].strip())
            if stripped == "$$" and own_paragraph:
                number = 1
                while f"{prefix}-{number}" in used:
                    number += 1
                used.add(f"{prefix}-{number}")
                lines[index] = line.rstrip() + f" ({prefix}-{number})"
            opening = None
    return "\n".join(lines)


IMAGE_ALT = re.compile(r"!\[([^\]]*\n[^\]]*)\]\(")


def one_line_alt_text(markdown: str) -> str:
    """Join the lines of every image's alt text with spaces, so the words stay apart on the page."""
    return IMAGE_ALT.sub(lambda m: "![" + " ".join(m.group(1).split()) + "](", markdown)


def link_chapters(markdown: str, files: dict[int, str], folder: str = "", this: int | None = None) -> str:
    """Make every "chapter N" of the prose a link to chapter N's notebook (folder prefix for other pages)."""

    def link(number: str) -> str:
        return f"[{number}]({folder}{files[int(number)]})"

    def replace(match: re.Match) -> str:
        numbers = re.findall(r"\d+", match.group("numbers"))
        if any(int(n) not in files or int(n) == this for n in numbers):
            return match.group(0)
        if len(numbers) == 1:
            return f"[{match.group('word')}{match.group('numbers')}]({folder}{files[int(numbers[0])]})"
        return match.group("word") + re.sub(r"\d+", lambda m: link(m.group(0)), match.group("numbers"))

    return _rewrite_prose(markdown, lambda text: CHAPTER_MENTION.sub(replace, text))


def reference_exercises(markdown: str, labels: list[str]) -> str:
    """Replace "exercise N" in the prose by a numbered reference to the chapter's N-th exercise."""

    def replace(match: re.Match) -> str:
        number = int(match.group(1))
        return f"{{numref}}`{labels[number - 1]}`" if 1 <= number <= len(labels) else match.group(0)

    return _rewrite_prose(markdown, lambda text: EXERCISE_MENTION.sub(replace, text))


def _top_level_names(source: str) -> set[str]:
    """Names that a code cell binds at the top level (functions, classes, assignments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _top_level_functions(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def solution_name(name: str) -> str:
    """The name a solution gives its version of the learner's `name`."""
    return "solution_" + name[3:] if name.startswith("my_") else name + "_solution"


def rename(source: str, names: dict[str, str]) -> str:
    """The source with every identifier in `names` renamed (strings and comments untouched)."""
    lines = source.split("\n")
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type == tokenize.NAME and t.string in names]
    for token in reversed(tokens):  # from the end, so earlier positions stay valid
        row, col = token.start
        line = lines[row - 1]
        lines[row - 1] = line[:col] + names[token.string] + line[col + len(token.string):]
    return "\n".join(lines)


def _separate_solutions(cells: list[dict]) -> None:
    """Rename, in each solution's code cells, the names that the exercise's own code cells define."""
    attempt: set[str] = set()
    in_solution = False
    for cell in cells:
        text = cell_source(cell)
        if cell["cell_type"] == "markdown":
            if "{exercise}" in text:
                attempt, in_solution = set(), False
            if "{solution-start}" in text:
                in_solution = True
            if "{solution-end}" in text:
                in_solution = False
            continue
        if cell["cell_type"] != "code":
            continue
        if not in_solution:
            if CHECKER_TAG not in cell.get("metadata", {}).get("tags", []):
                attempt |= _top_level_names(text)
            continue
        clashes = {name: solution_name(name) for name in _top_level_names(text) & attempt}
        if clashes:
            try:
                _set_source(cell, rename(text, clashes))
            except (tokenize.TokenError, SyntaxError, IndentationError):
                pass


def _too_long(source: str, limit: int) -> bool:
    return any(len(line) > limit for line in source.splitlines())


def _string_tokens(source: str) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    """(start, end, bracket depth) of each string literal, f-strings included on every Python version."""
    found, depth, fstring_start, nested = [], 0, None, 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        name = tokenize.tok_name[token.type]
        if name == "FSTRING_START":
            if nested == 0:
                fstring_start = token.start
            nested += 1
        elif name == "FSTRING_END":
            nested -= 1
            if nested == 0:
                found.append((fstring_start, token.end, depth))
        elif nested:
            continue
        elif token.type == tokenize.STRING:
            found.append((token.start, token.end, depth))
        elif token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
    return found


def _split_point(literal: str, room: int) -> int | None:
    """Where to cut a one-line string literal so that its first part, closed, is at most `room` characters.

    Returns the index in `literal` just after a space, outside any f-string replacement field, or None.
    """
    match = re.match(r"([rRbBuUfF]*)(['\"])", literal)
    if match is None or literal[match.end():match.end() + 2] == match.group(2) * 2:
        return None  # not a plain one-line literal (a triple-quoted string, for instance)
    prefix_end, quote = match.end(), match.group(2)
    is_f = "f" in match.group(1).lower()
    best, braces, index = None, 0, prefix_end
    while index < len(literal) - 1:
        char = literal[index]
        if char == "\\":
            index += 2
            continue
        if is_f and char in "{}":
            if literal[index:index + 2] in ("{{", "}}"):
                index += 2
                continue
            braces += 1 if char == "{" else -1
        elif char == " " and braces == 0 and index + 1 < len(literal) - 1:
            if index + 1 + len(quote) <= room and index + 1 > prefix_end + 1:
                best = index + 1
        index += 1
    return best


def _split_long_strings(source: str, limit: int) -> str:
    """Split string literals that run past the limit into adjacent literals, while one can be split."""
    for _ in range(200):
        lines = source.split("\n")
        try:
            strings = _string_tokens(source)
        except (tokenize.TokenError, SyntaxError, IndentationError):
            return source
        for (row, col), (end_row, end_col), depth in strings:
            line = lines[row - 1]
            if row != end_row or depth == 0 or len(line) <= limit or end_col <= limit:
                continue
            literal = line[col:end_col]
            cut = _split_point(literal, limit - col)
            if cut is None:
                continue
            prefix, quote = re.match(r"([rRbBuUfF]*)(['\"])", literal).groups()
            first = literal[:cut] + quote
            second = prefix + quote + literal[cut:]
            lines[row - 1] = line[:col] + first + "\n" + " " * col + second + line[end_col:]
            source = "\n".join(lines)
            break
        else:
            return source
    return source


def _ruff_format(source: str, limit: int) -> str:
    """The source formatted by ruff at the given line length (unchanged if ruff is missing or fails)."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--isolated", "--line-length", str(limit),
             "--stdin-filename", "cell.py", "-"],
            input=source, capture_output=True, text=True, check=False,
        )
    except OSError:
        return source
    if result.returncode != 0:
        return source
    formatted = result.stdout
    return formatted if source.endswith("\n") else formatted.rstrip("\n")


def reflow(source: str, limit: int = LINE_LIMIT) -> str:
    """A code cell's source with no line over `limit` characters where that can be done without changing it.

    Cells with IPython magics or shell lines are left alone; so is a cell whose lines all fit.
    """
    has_magic = any(line.lstrip().startswith(("%", "!")) for line in source.splitlines())
    if has_magic or not _too_long(source, limit):
        return source
    source = _split_long_strings(source, limit)
    if _too_long(source, limit):
        source = _split_long_strings(_ruff_format(source, limit), limit)
    return source


# Exercises and solutions in a form that three renderers read: the book (MyST and sphinx-exercise), JupyterLab
# (jupyterlab-myst) and plain Jupyter markdown (Colab, GitHub, nbconvert), which knows no directives.
HIDDEN_OPEN, HIDDEN_CLOSE = "<div hidden>", "</div>"
SOLUTION_SUMMARY = "<details><summary>Solution</summary>"
CONTINUED_SUMMARY = "<details><summary>Solution (continued)</summary>"
DETAILS_CLOSE = "</details>"
DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{(exercise|solution|solution-start|solution-end)\}[ \t]*(.*)$")


def _new_id(cells: list[dict], seed: str) -> str:
    """A cell id not used in the notebook, derived from `seed` (deterministic: reruns give the same ids)."""
    import hashlib

    used = {cell.get("id") for cell in cells}
    number = 0
    while True:
        candidate = hashlib.sha1(f"{seed}-{number}".encode()).hexdigest()[:8]
        if candidate not in used:
            return candidate
        number += 1


def _segments(text: str) -> list[tuple[str, ...]]:
    """A markdown text cut into ("text", t), ("exercise", title, options, body), ("solution-start",
    argument, options) and ("solution-end",) pieces, in order."""
    lines = text.split("\n")
    pieces, buffer, index, fence = [], [], 0, None
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if fence is not None:  # inside a code block of the prose: copy it
            buffer.append(line)
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            index += 1
            continue
        match = DIRECTIVE.match(stripped)
        if match is None:
            if stripped.startswith(("```", "~~~")):
                fence = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
            buffer.append(line)
            index += 1
            continue
        if buffer:
            pieces.append(("text", "\n".join(buffer)))
            buffer = []
        marker, name, argument = match.groups()
        index += 1
        options = []
        while index < len(lines) and re.match(r"^:[a-z-]+:", lines[index].strip()):
            options.append(lines[index].strip())
            index += 1
        body = []
        while index < len(lines):
            stripped = lines[index].strip()
            closing = stripped.startswith(marker) and not stripped.strip(marker[0])
            if closing:
                index += 1
                break
            body.append(lines[index])
            index += 1
        body_text = "\n".join(body).strip("\n")
        if name == "exercise":
            pieces.append(("exercise", argument.strip(), tuple(options), body_text))
        elif name in ("solution-start", "solution"):  # a solution in one cell becomes a gated one
            pieces.append(("solution-start", argument.strip(), tuple(options)))
            if body_text:
                pieces.append(("text", body_text))
            if name == "solution":
                pieces.append(("solution-end",))
        else:
            pieces.append(("solution-end",))
            if body_text:
                pieces.append(("text", body_text))
    if buffer:
        pieces.append(("text", "\n".join(buffer)))
    return [piece for piece in pieces if piece[0] != "text" or piece[1].strip()]


def _hidden(directive: str) -> str:
    """A directive that plain markdown hides: the MyST renderers still read it, a browser does not show it."""
    return f"{HIDDEN_OPEN}\n\n{directive}\n\n{HIDDEN_CLOSE}"


def _folded(summary: str, text: str) -> str:
    return f"{summary}\n\n{text.strip()}\n\n{DETAILS_CLOSE}"


def _in_plain_form(text: str) -> bool:
    return text.startswith((HIDDEN_OPEN, "<details>"))


def plain_markdown_exercises(cells: list[dict]) -> list[dict]:
    """Exercises and solutions written so that plain markdown shows them readable and folded.

    Each exercise, solution start and solution end gets its own markdown cell:

    - an exercise is a colon-fenced `exercise` directive whose header (and `:label:`) sits in a
      `<div hidden>`, and whose fence stays open to the end of the cell (a closing fence would need a second
      hidden block, and jupyterlab-myst turns a pair of sibling HTML tags around a directive into raw HTML);
      its title is the first line of its body, in bold, so plain markdown shows it too;
    - a solution's first cell (a `solution` directive is split into `solution-start`, its body and
      `solution-end`) is a `<details>` with the summary "Solution" around the hidden
      `solution-start` directive and the solution's prose; later prose cells of the solution are folded in a
      `<details>` of their own; the `solution-end` cell is hidden; the solution's code cells get Colab's
      `"cellView": "form"` and JupyterLab's `metadata.jupyter.source_hidden` (collapsed until opened).

    The book drops these HTML tags (book/_ext/course_pages.py), so its pages are what the directives make.
    """
    out: list[dict] = []
    in_solution = False
    for cell in cells:
        if cell["cell_type"] == "code":
            if in_solution:  # folded in Colab (a form) and collapsed in JupyterLab until the learner opens it
                cell.setdefault("metadata", {})["cellView"] = "form"
                cell["metadata"].setdefault("jupyter", {})["source_hidden"] = True
            out.append(cell)
            continue
        if cell["cell_type"] != "markdown":
            out.append(cell)
            continue
        text = cell_source(cell)
        if _in_plain_form(text):
            if "{solution-start}" in text:
                in_solution = True
            if "{solution-end}" in text:
                in_solution = False
            out.append(cell)
            continue
        pieces = _segments(text)
        if not any(piece[0] != "text" for piece in pieces) and not in_solution:
            out.append(cell)
            continue
        new_texts: list[str] = []
        for piece in pieces:
            kind = piece[0]
            if kind == "exercise":
                _, title, options, body = piece
                header = "\n".join([":::{exercise}", *options])
                parts = [_hidden(header)]
                if title:
                    parts.append(f"**{title}**")
                if body:
                    parts.append(body)
                new_texts.append("\n\n".join(parts))
                in_solution = False
            elif kind == "solution-start":
                _, argument, options = piece
                directive = "\n".join([f":::{{solution-start}} {argument}".rstrip(), *options, ":::"])
                new_texts.append(_folded(SOLUTION_SUMMARY, _hidden(directive)))
                in_solution = True
            elif kind == "solution-end":
                new_texts.append(_hidden(":::{solution-end}\n:::"))
                in_solution = False
            elif in_solution:
                last = new_texts[-1] if new_texts else ""
                if last.startswith(SOLUTION_SUMMARY) and last.endswith(DETAILS_CLOSE):  # the solution's prose
                    new_texts[-1] = last[: -len(DETAILS_CLOSE)].rstrip() + "\n\n" + piece[1].strip() + (
                        "\n\n" + DETAILS_CLOSE)
                else:
                    new_texts.append(_folded(CONTINUED_SUMMARY, piece[1]))
            else:
                new_texts.append(piece[1].strip("\n"))
        for number, new_text in enumerate(new_texts):
            new = cell if number == 0 else {"cell_type": "markdown",
                                            "id": _new_id(cells + out, f"{cell.get('id')}-{number}"),
                                            "metadata": {}, "source": []}
            if number == 0 and new_text == text:
                out.append(cell)
                continue
            if number > 0 and "id" not in cell:
                del new["id"]
            as_list = isinstance(cell["source"], list)
            new["source"] = new_text.splitlines(keepends=True) if as_list else new_text
            out.append(new)
    return out


def transform(notebook: dict, files: dict[int, str] | None = None, this: int | None = None) -> dict:
    """The notebook in the course's form (a new dict; see the module's docstring).

    `files` maps chapter numbers to notebook file names (default: the course's notebooks); `this` is the
    notebook's own chapter number, which is not linked to itself.
    """
    notebook = copy.deepcopy(notebook)
    files = chapter_files() if files is None else files
    notebook["cells"] = plain_markdown_exercises(notebook["cells"])
    labels = [label for cell in notebook["cells"] if cell["cell_type"] == "markdown"
              for label in EXERCISE_LABEL.findall(cell_source(cell))]
    _separate_solutions(notebook["cells"])
    declared = [m.group(1) for cell in notebook["cells"] if cell["cell_type"] == "code"
                for line in cell_source(cell).splitlines() if (m := DEFAULT_EXP.match(line.strip()))]
    module = (notebook.get("metadata", {}).get(METADATA_KEY, {}).get("module")
              or (declared[0] if declared else f"chapter-{this}"))
    used = {label for cell in notebook["cells"] if cell["cell_type"] == "markdown"
            for label in equation_labels(cell_source(cell))}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = cell_source(cell)
            new = reference_exercises(link_chapters(one_line_alt_text(text), files, this=this), labels)
            new = label_equations(new, f"eq-{module}", used)
            if new != text:
                _set_source(cell, new)
            continue
        if cell["cell_type"] != "code":
            continue
        kept = []
        first_code_line = True
        for line in cell_source(cell).splitlines():
            stripped = line.strip()
            if match := DEFAULT_EXP.match(stripped):
                notebook.setdefault("metadata", {})[METADATA_KEY] = {"module": match.group(1)}
                continue
            if match := NBVAL_MARKER.match(stripped):
                _add_tag(cell, NBVAL_TAGS[match.group(1)])
                continue
            if first_code_line and EXPORT.match(stripped):
                _add_tag(cell, EXPORT_TAG)
                continue
            if stripped:
                first_code_line = False
            kept.append(line)
        while kept and not kept[0].strip():
            kept.pop(0)
        text = reflow("\n".join(kept))
        if text != cell_source(cell):
            _set_source(cell, text)
        if is_install_cell(text):
            _add_tag(cell, INSTALL_TAG)
        tags = cell.get("metadata", {}).get("tags", [])
        if EXPORT_TAG not in tags and any(name.startswith("check_") for name in _top_level_functions(text)):
            _add_tag(cell, CHECKER_TAG)
            _add_tag(cell, EXERCISE_CHECKER_TAG)
        if CHECKER_TAG in cell.get("metadata", {}).get("tags", []):
            cell["metadata"].setdefault("jupyter", {})["source_hidden"] = True
    return notebook


def dumps(notebook: dict) -> str:
    """JSON as nbformat writes it (one-space indent, non-ASCII kept, final newline)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report, write nothing")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("*.ipynb")) + sorted(PAGES.glob("*.md"))
    files = chapter_files()
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".md":
            new = link_chapters(text, files, folder="../notebooks/")
        else:
            match = CHAPTER_FILE.match(path.name)
            new = dumps(transform(json.loads(text), files, int(match.group(1)) if match else None))
        if new == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path}")
    if stale:
        print("Tooling markers in the code of: " + ", ".join(stale)
              + "\nRun `python tools/notebook_tags.py` to move them into cell tags and metadata.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
