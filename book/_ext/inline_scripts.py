"""Stop Sphinx 7 from writing inline scripts twice into every page.

sphinx-thebe registers an inline script with `add_js_file(None, body=...)`. Sphinx 7 fails to recognise two
such registrations as the same script, so each page declares `const THEBE_JS_URL` twice and the browser reports
"Identifier 'THEBE_JS_URL' has already been declared". Registering inline scripts under the empty file name ""
lets Sphinx's own duplicate check see them, and the page carries the script once.
"""

from typing import Any

from sphinx.application import Sphinx
from sphinx.builders.html import StandaloneHTMLBuilder

_add_js_file = StandaloneHTMLBuilder.add_js_file


def _add_js_file_once(self: StandaloneHTMLBuilder, filename: str | None, **kwargs: Any) -> None:
    _add_js_file(self, "" if filename is None else filename, **kwargs)


def setup(app: Sphinx) -> dict[str, Any]:
    StandaloneHTMLBuilder.add_js_file = _add_js_file_once
    return {"parallel_read_safe": True, "parallel_write_safe": True}
