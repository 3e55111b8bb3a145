"""
HTML mail made safe to display: an allow-list sanitiser.

This is one of two independent layers.  The page shows the result in an
``<iframe sandbox>`` without ``allow-scripts``, served with its own
``Content-Security-Policy: default-src 'none'`` (see
`twistedmail.http.content`), so even markup this code missed cannot run
script or fetch anything.  The sanitiser makes the HTML safe on its own
too, for API clients that display it elsewhere: only listed elements and
attributes survive; scripts, frames, forms, objects and event handlers go;
links must be http(s) or mailto and open outside the frame; and remote
images (the classic read receipt) are removed unless the reader asked for
them, counting how many were blocked so the page can offer to show them.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

# Elements kept (their attributes filtered).
_ALLOWED = frozenset(
    """a abbr address b bdi bdo big blockquote br caption center cite code col colgroup dd del
    details dfn div dl dt em figcaption figure font h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark
    ol p pre q s samp small span strike strong sub summary sup table tbody td tfoot th thead
    time tr tt u ul var wbr""".split()  # noqa: SIM905
)
# Elements dropped with everything inside them.
_DROP_WITH_CONTENT = frozenset(
    """script noscript iframe frame frameset object embed applet template svg math title
    textarea select button audio video canvas""".split()  # noqa: SIM905
)
_VOID = frozenset({"br", "hr", "img", "col", "wbr", "meta", "link", "base", "input", "area"})
_ATTRIBUTES = frozenset(
    """align alt bgcolor border cellpadding cellspacing class color colspan dir face height
    lang rowspan size span start style summary title valign width type open""".split()  # noqa: SIM905
)
_SAFE_LINK = re.compile(r"\A(?:https?:|mailto:|#)", re.IGNORECASE)
_DATA_IMAGE = re.compile(r"\Adata:image/(?:png|gif|jpeg|webp|bmp);", re.IGNORECASE)
_REMOTE = re.compile(r"\A(?:https?:)?//", re.IGNORECASE)
_CSS_DANGER = re.compile(
    r"@import|expression\s*\(|javascript:|vbscript:|behavior\s*:|-moz-binding", re.IGNORECASE
)
_CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Sanitized:
    html: str
    remote_images_blocked: int


def sanitize_html(source: str, allow_remote_images: bool = False) -> Sanitized:
    """The safe subset of ``source`` (a fragment or a whole document)."""
    parser = _Sanitizer(allow_remote_images)
    parser.feed(source)
    parser.close()
    return Sanitized("".join(parser.out), parser.blocked)


class _Sanitizer(HTMLParser):
    def __init__(self, allow_remote_images: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.allow_remote = allow_remote_images
        self.out: list[str] = []
        self.blocked = 0
        self._skip: list[str] = []  # stack of dropped-with-content elements
        self._in_style = False

    def close(self) -> None:
        super().close()
        if self._in_style:
            self._in_style = False
            self.out.append("</style>")

    # --- elements -----------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == self._skip[-1] and tag not in _VOID:
                self._skip.append(tag)
            return
        if tag in _DROP_WITH_CONTENT:
            self._skip.append(tag)
            return
        if tag == "style":
            self._in_style = True
            self.out.append("<style>")
            return
        if tag not in _ALLOWED:
            return  # html, body, form, font-less wrappers...: keep the content only
        kept = self._attributes(tag, attrs)
        self.out.append(f"<{tag}{kept}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag == "style" and self._in_style:
            self._in_style = False
            self.out.append("</style>")
            return
        if tag in _ALLOWED and tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_style:
            # "<" never appears in our output CSS, so nothing can end the element early.
            self.out.append(self._css(data).replace("<", "\\3c "))
            return
        self.out.append(html.escape(data, quote=False))

    # --- attributes ----------------------------------------------------------------

    def _attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        kept: list[tuple[str, str]] = []
        for name, value in attrs:
            value = value or ""
            if name in _ATTRIBUTES:
                if name == "style":
                    value = self._css(value)
                kept.append((name, value))
            elif name == "href" and tag == "a":
                if _SAFE_LINK.match(value.strip()):
                    kept.append(("href", value.strip()))
            elif name == "src" and tag == "img":
                src = self._image(value.strip())
                if src is not None:
                    kept.append(("src", src))
        if tag == "a":
            kept += [("target", "_blank"), ("rel", "noopener noreferrer")]
        return "".join(f' {n}="{html.escape(v, quote=True)}"' for n, v in kept)

    def _image(self, src: str) -> str | None:
        if _DATA_IMAGE.match(src):
            return src
        if re.match(r"\Ahttps?://", src, re.IGNORECASE):
            if self.allow_remote:
                return src
            self.blocked += 1
        return None  # cid:, file:, javascript: and the rest

    def _css(self, css: str) -> str:
        # CSS escapes could spell "url" or "@import" past the patterns below.
        css = _CSS_DANGER.sub("/* removed */", css.replace("\\", ""))

        def url(match: re.Match[str]) -> str:
            target = match.group(2).strip()
            if _DATA_IMAGE.match(target):
                return match.group(0)
            if self.allow_remote and re.match(r"\Ahttps?://", target, re.IGNORECASE):
                return match.group(0)
            if _REMOTE.match(target):
                self.blocked += 1
            return "none"

        return _CSS_URL.sub(url, css)
