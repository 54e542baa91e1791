"""What the built pages say: no tooling markers, exercises numbered per chapter, chapters linked, equations
numbered, references labelled like their citations and linked to the papers."""

import re
from html import unescape

import pytest
from conftest import SITE
from test_site import PAGES

CHAPTERS = [p for p in PAGES if p.startswith("notebooks/")]
MARKERS = ["#| export", "#| default_exp", "NBVAL_", "%pip install"]


def html(path: str) -> str:
    return (SITE / f"{path}.html").read_text(encoding="utf-8")


def article_text(path: str) -> str:
    """The visible text of a page's article (tags stripped, entities decoded)."""
    body = html(path).split('<article class="bd-article"', 1)[1].split("</article>", 1)[0]
    return unescape(re.sub(r"<[^>]+>", "", body))


@pytest.mark.parametrize("path", CHAPTERS)
def test_no_tooling_marker_on_the_page(path):
    text = article_text(path)
    found = [marker for marker in MARKERS if marker in text]
    assert not found, f"{path} shows tooling markers to the reader: {found}"


@pytest.mark.parametrize("path", CHAPTERS)
def test_exercises_are_numbered_per_chapter(path):
    chapter = int(re.match(r"notebooks/(\d+)_", path).group(1))
    numbers = re.findall(r'<span class="caption-number">Exercise ([\d.]+) </span>', html(path))
    expected = [f"{chapter}.{i}" for i in range(1, len(numbers) + 1)]
    assert numbers, f"{path} has no numbered exercise"
    assert numbers == expected, f"{path}: exercises numbered {numbers}, expected {expected}"


def test_prose_refers_to_exercises_by_number_of_the_same_chapter():
    page = html("notebooks/06_encoder")
    references = re.findall(r'<a class="reference internal" href="#([^"]+)">.*?Exercise ([\d.]+)', page, re.S)
    assert ("ex-encoder-mask-every-layer", "6.4") in references, references


@pytest.mark.parametrize("path", CHAPTERS)
def test_chapter_mentions_are_links(path):
    text = html(path).split('<article class="bd-article"', 1)[1].split("</article>", 1)[0]
    prose = re.sub(r"<pre.*?</pre>|<code.*?</code>|<a [^>]*>.*?</a>|<h\d.*?</h\d>", "", text, flags=re.S)
    this = int(re.match(r"notebooks/(\d+)_", path).group(1))
    unlinked = [
        m.group(0) for m in re.finditer(r"\b[Cc]hapter (\d+)\b", unescape(re.sub(r"<[^>]+>", "", prose)))
        if int(m.group(1)) != this and any(p.startswith(f"notebooks/{int(m.group(1)):02d}_") for p in PAGES)
    ]
    assert not unlinked, f"{path}: chapter names without a link: {unlinked[:5]}"


@pytest.mark.parametrize("path", CHAPTERS)
def test_display_equations_are_numbered(path):
    page = html(path)
    displays = len(re.findall(r'<div class="math notranslate nohighlight"', page))
    numbered = len(re.findall(r'<span class="eqno">\(\d+(?:\.\d+)*\)', page))
    assert numbered == displays, f"{path}: {numbered} of {displays} display equations carry a number"


def test_references_are_labelled_like_citations_and_linked():
    page = html("book/references")
    entries = re.findall(r'<div class="citation" id="[^"]*" role="doc-biblioentry">(.*?)</div>', page, re.S)
    assert len(entries) > 10
    labels = [
        unescape(re.sub(r"<[^>]+>", "", re.search(r'<span class="label">(.*?)</span></span>', e).group(1)))
        .strip("[]")
        for e in entries
    ]
    # Papers link to their DOI, arXiv or publisher page; software cited as such (char-rnn, nanoGPT) to its
    # repository on GitHub.
    link = re.compile(
        r'href="https://(doi\.org|arxiv\.org|jmlr\.org|proceedings\.mlr\.press|cdn\.openai\.com|github\.com)/'
    )
    without_link = [label for label, entry in zip(labels, entries, strict=True) if not link.search(entry)]
    assert not without_link, f"references without a DOI, arXiv, publisher or repository link: {without_link}"
    citations = set()
    cite = re.compile(r'<a class="reference internal" href="[^"]*references\.html#[^"]*"[^>]*>(.*?)</a>',
                      re.S)
    for path in PAGES:
        citations.update(unescape(re.sub(r"<[^>]+>", "", text)) for text in cite.findall(html(path)))
    assert citations, "no citation found in the chapters"
    # Two works with the same label (Li et al., 2020) are listed as 2020a and 2020b; sphinxcontrib-bibtex's
    # author-year citations do not carry the letter, so a citation may match a label without it.
    unsuffixed = {re.sub(r"(\d{4})[a-z]$", r"\1", label) for label in labels}
    unmatched = sorted(c for c in citations if c not in labels and c not in unsuffixed)
    assert not unmatched, f"citations matching no reference label: {unmatched[:5]} (labels {labels[:3]})"


@pytest.mark.parametrize("path", CHAPTERS)
def test_alt_text_reads_as_words(path):
    glued = [alt for alt in re.findall(r'<img alt="([^"]*)"', html(path))
             if re.search(r"[a-z](network|layers|values|and|the)[a-z]*\b", alt)
             and re.search(r"forwardnetwork|Nlayers|andvalues", alt)]
    assert not glued, f"{path}: alt text with words run together: {glued}"
