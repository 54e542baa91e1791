"""What a learner sees in JupyterLab (`make lab`): rendered exercises, no solution or reference answer on
screen until opened, and a "Run All" that leaves the learner's own attempt in place.

JupyterLab runs on 127.0.0.1 with no token, on a temporary copy of a chapter (it autosaves what it opens).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, SCREENSHOTS

JUPYTER = Path(sys.executable).with_name("jupyter")
CHAPTER = "01_tokens_and_embeddings.ipynb"
# LAB_NOTEBOOKS points the test at another folder of notebooks (to show that it fails on an older version).
NOTEBOOKS = Path(os.environ.get("LAB_NOTEBOOKS", ROOT / "notebooks"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """JupyterLab serving a temporary copy of chapter 1; yields its URL and the copy's path."""
    folder = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOKS / CHAPTER, folder / CHAPTER)
    port = _free_port()
    command = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--IdentityProvider.token=", "--ServerApp.password=", f"--notebook-dir={folder}",
               "--LabApp.news_url=None", "--ServerApp.disable_check_xsrf=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / ".config"), "PYTHONPATH": str(ROOT)}
    log = open(folder / "lab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("JupyterLab exited:\n" + (folder / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        yield url, folder / CHAPTER
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def notebook_page(browser, lab):
    url, path = lab
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/lab/tree/{CHAPTER}", wait_until="domcontentloaded")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-Notebook .jp-Cell').length > 20", timeout=60_000
    )
    page.wait_for_timeout(2_000)  # let jupyterlab-myst render the markdown
    yield page, path
    context.close()


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _cell(page, index):
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(150)
    return cell


def test_exercises_render_as_exercises(notebook_page):
    page, path = notebook_page
    exercises = [i for i, c in enumerate(_cells(path)) if "{exercise}" in "".join(c["source"])]
    assert exercises
    for number, index in enumerate(exercises, start=1):
        cell = _cell(page, index)
        try:  # JupyterLab renders a cell when it scrolls into view; on a busy machine that takes a while
            cell.locator(f"text=Exercise {number}").first.wait_for(timeout=30_000)
        except Exception:  # the assertion below says what is on screen instead
            pass
        text = cell.inner_text()
        assert f"Exercise {number}" in text, f"cell {index} is not exercise {number}: {text[:99]!r}"
        assert "{exercise}" not in text and ":label:" not in text, f"cell {index} shows raw directives"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _cell(page, exercises[0])
    page.screenshot(path=str(SCREENSHOTS / "jupyterlab-exercise.png"))


def test_solutions_and_reference_answers_are_hidden(notebook_page):
    page, path = notebook_page
    cells = _cells(path)
    hidden = [i for i, c in enumerate(cells) if c["cell_type"] == "code"
              and (c["metadata"].get("jupyter", {}).get("source_hidden")
                   or "hide-input" in c["metadata"].get("tags", []))]
    solutions = [i for i, c in enumerate(cells) if "solution_" in "".join(c["source"])]
    assert solutions and set(solutions) <= set(hidden), "a solution cell is not hidden"
    for index in hidden:
        cell = _cell(page, index)
        editor = cell.locator(".jp-InputArea-editor")
        assert editor.count() == 0 or not editor.first.is_visible(), f"cell {index}'s code is on screen"
        assert cell.locator(".jp-InputPlaceholder").first.is_visible(), f"cell {index} has no fold to open"
    # Opening a fold shows the code: hidden, not lost.
    cell = _cell(page, solutions[0])
    cell.locator(".jp-InputPlaceholder").first.click()
    cell.locator(".jp-InputArea-editor").first.wait_for(state="visible", timeout=5_000)
    assert "solution_" in cell.locator(".jp-InputArea-editor").first.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "jupyterlab-solution-opened.png"))


def test_run_all_keeps_the_learners_attempt(notebook_page):
    page, path = notebook_page
    cells = _cells(path)
    stub = next(i for i, c in enumerate(cells) if "def my_" in "".join(c["source"])
                and "NotImplementedError" in "".join(c["source"]))
    name = "".join(cells[stub]["source"]).split("def ", 1)[1].split("(", 1)[0]
    _cell(page, 0).click()
    page.keyboard.press("Escape")
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    # A cell added after "Run All" runs after every cell of the chapter (the kernel runs them in order).
    last = _cell(page, len(cells) - 1)
    last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(
        f'print("attempt kept" if "NotImplementedError" in {name}.__code__.co_names else "replaced")'
    )
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-Notebook .jp-Cell").nth(len(cells)).locator(".jp-OutputArea-output")
    output.first.wait_for(timeout=120_000)
    page.screenshot(path=str(SCREENSHOTS / "jupyterlab-after-run-all.png"))
    assert output.first.inner_text().strip() == "attempt kept", (
        f"after Run All, {name} in the kernel is the solution's: {output.first.inner_text()!r}"
    )
