"""
The HTML sanitiser on its own: known attacks, remote-image blocking, and a
property test that no input ever yields script, handlers or active URLs.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twistedmail.http.sanitize import sanitize_html

ATTACKS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.test/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="jav&#x61;script:alert(1)">x</a>',
    '<a href=" java\tscript:alert(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    "<svg onload=alert(1)><script>alert(1)</script></svg>",
    "<iframe src=//evil.test></iframe>",
    "<object data=//evil.test></object><embed src=//evil.test>",
    '<form action="//evil.test"><input name=p><button>go</button></form>',
    '<meta http-equiv="refresh" content="0;url=//evil.test">',
    '<base href="//evil.test/">',
    '<link rel=stylesheet href="//evil.test/x.css">',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<div style="width: expression(alert(1))">x</div>',
    "<style>@import url(//evil.test/x.css); body{background:url(https://t.test/p.gif)}</style>",
    "<style>body{} </style><script>alert(1)</script><style>",
    '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<!--<script>alert(1)</script>-->",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<p style="u\\72l(https://t.test/p.gif)">x</p>',
    "<template><script>alert(1)</script></template>",
]

_ACTIVE = re.compile(
    r"<\s*(script|iframe|object|embed|form|base|meta|link|svg|math)\b"
    r"|\son\w+\s*="
    r"|javascript:|vbscript:|expression\(|@import"
    r"|url\(\s*['\"]?(https?:)?//",
    re.IGNORECASE,
)


@pytest.mark.parametrize("attack", ATTACKS)
def test_known_attacks_come_out_inert(attack: str) -> None:
    clean = sanitize_html(attack).html
    assert not _ACTIVE.search(clean), clean
    # Markup pointing elsewhere is gone (a CSS escape left as plain text is inert).
    assert "//evil.test" not in clean, clean


def test_ordinary_mail_markup_survives() -> None:
    source = (
        '<table width="100%" cellpadding="4"><tr><td bgcolor="#eeeeee" style="color: red">'
        '<h2>Hi</h2><p>See <a href="https://example.test/x?a=1&amp;b=2">this</a> and '
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="dot"></p>'
        "<ul><li>one</li><li>two &lt;3</li></ul></td></tr></table>"
    )
    clean = sanitize_html(source).html
    for kept in (
        'width="100%"',
        'style="color: red"',
        "<h2>Hi</h2>",
        'href="https://example.test/x?a=1&amp;b=2"',
        'target="_blank" rel="noopener noreferrer"',
        'src="data:image/png;base64,iVBORw0KGgo="',
        "<li>two &lt;3</li>",
    ):
        assert kept in clean, (kept, clean)


def test_an_unclosed_style_element_is_closed() -> None:
    """Else an API client embedding the HTML would see its own page styled away."""
    assert sanitize_html("<p>x</p><style>p { color: red }").html.endswith("</style>")
    assert sanitize_html("<style>a<b</style>").html == "<style>a\\3c b</style>"


def test_remote_images_blocked_and_counted_unless_allowed() -> None:
    source = (
        '<img src="https://a.test/1.png"><img src="http://b.test/2.png">'
        "<div style=\"background-image: url('https://c.test/3.png')\">x</div>"
    )
    blocked = sanitize_html(source)
    assert blocked.remote_images_blocked == 3
    assert "a.test" not in blocked.html and "c.test" not in blocked.html
    allowed = sanitize_html(source, allow_remote_images=True)
    assert allowed.remote_images_blocked == 0
    assert 'src="https://a.test/1.png"' in allowed.html and "c.test/3.png" in allowed.html


_PIECES = st.sampled_from(
    [
        "<", ">", "/", "=", '"', "'", " ", "\t", "&", "#", ";", ":", "(", ")", "\\",
        "script", "style", "img", "a", "svg", "iframe", "on", "onerror", "onload", "href",
        "src", "javascript", "java", "&#x61;", "url", "expression", "@import", "<!--", "-->",
        "<![CDATA[", "]]>", "data", "p", "div", "title", "textarea", "noscript", "x",
    ]
)  # fmt: skip


class _Audit(HTMLParser):
    """What a browser would see in the output: elements, attributes, CSS."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "iframe", "object", "embed", "form", "base", "meta", "link", "svg"}:
            self.problems.append(f"element {tag}")
        self._in_style = tag == "style"
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self.problems.append(f"handler {name}")
            if name == "href" and not re.match(r"(https?:|mailto:|#)", value, re.IGNORECASE):
                self.problems.append(f"href {value!r}")
            if name == "src" and not value.startswith("data:image/"):
                self.problems.append(f"src {value!r}")
            if name == "style":
                self._css(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._css(data)

    def _css(self, css: str) -> None:
        # "\\3c " is how the sanitiser writes "<" inside CSS; no other escape may remain.
        if _ACTIVE.search(css) or "\\" in css.replace("\\3c ", ""):
            self.problems.append(f"css {css!r}")


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join))
def test_no_input_yields_active_content(source: str) -> None:
    audit = _Audit()
    audit.feed(sanitize_html(source).html)
    audit.close()
    assert not audit.problems, (source, audit.problems)
