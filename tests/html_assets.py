"""What an HTML page we serve loads, read from its markup, for the tests of the board and the reports."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Attributes whose URL the browser fetches by itself, without a click.
_LOADED = {("link", "href"), ("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"),
           ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data"), ("image", "href"),
           ("use", "href"), ("input", "src"), ("track", "src")}  # fmt: skip
_URL_ATTRIBUTES = {"href", "src", "data", "action", "formaction", "poster", "srcset", "xlink:href", "background"}
_OTHER_ORIGIN = re.compile(r"^\s*([a-z][a-z0-9+.-]*:|//|\\\\)", re.IGNORECASE)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loaded: set[str] = set()
        self.problems: list[str] = []
        self._script_without_src = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"inline handler {tag}[{name}]")
            if name == "style":
                self.problems.append(f"inline style on <{tag}>")
            if name in _URL_ATTRIBUTES and value and _OTHER_ORIGIN.match(value):
                self.problems.append(f"an absolute URL in {tag}[{name}]: {value}")
            if (tag, name) in _LOADED and value:
                self.loaded.add(value)
        if tag == "style":
            self.problems.append("an inline <style>")
        if tag == "script" and not attributes.get("src"):
            self._script_without_src = True
        if tag == "meta" and (attributes.get("http-equiv") or "").lower() not in ("", "refresh"):
            self.problems.append(f"a <meta http-equiv={attributes['http-equiv']}>")
        if tag == "base":
            self.problems.append("a <base>")

    def handle_data(self, data):
        if self._script_without_src and data.strip():
            self.problems.append("an inline <script>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._script_without_src = False


def page_assets(page: str) -> set[str]:
    """The URLs a page loads by itself; fails if it holds inline code or names an absolute URL anywhere.

    A Content-Security-Policy of ``'self'`` would block inline code (the page would break in the
    browser without telling the server) and anything from another origin.
    """
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert not parser.problems, parser.problems
    return parser.loaded
