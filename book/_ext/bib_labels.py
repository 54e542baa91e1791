"""Bibliography labels in the author-year form of the citations in the text.

The chapters cite with sphinxcontrib-bibtex's author-year style ("Vaswani et al., 2017"), but its default
bibliography style labels the entries "[VSP+17]", so a reader cannot match a citation with its entry. This
registers a pybtex style, `authoryear`, whose labels read like the citations: "Ba et al., 2016",
"Loshchilov and Hutter, 2019", and whose entries are sorted by author and year (pybtex's `plain` order).
`_config.yml` selects it with `bibtex_default_style`.
"""

from collections import Counter
from typing import Any

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.last_names)).render_as("text")


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_last_name(p) for p in people]
            if len(names) > 2:
                who = f"{names[0]} et al."
            elif names:
                who = " and ".join(names)
            else:
                who = entry.fields.get("organization", entry.key)
            labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
        seen, counts = Counter(), Counter(labels)
        for label in labels:
            if counts[label] > 1:  # two entries by the same authors in one year: 2016a, 2016b
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = "authoryear"


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app: Sphinx) -> dict[str, Any]:
    return {"parallel_read_safe": True, "parallel_write_safe": True}
