"""
Message content served as itself: the raw message, one attachment, and the
sanitised HTML body for the reading pane's sandboxed frame.

Anything from a message could be hostile.  Attachments keep their declared
type (when it is a well-formed ``type/subtype``) but are always sent as
downloads: ``Content-Disposition: attachment`` with an RFC 6266 file name
that cannot break the header, ``nosniff``, and the API's ``sandbox`` policy,
so even an HTML or SVG attachment opened by mistake runs nothing here.  The HTML body gets
its own policy: ``default-src 'none'`` and ``sandbox`` (so even a direct
visit runs no script), inline styles, ``data:`` images, and remote images
only when the reader asked for them.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from twistedmail.http.errors import ApiError, from_store_error
from twistedmail.http.messages import locate
from twistedmail.http.routing import Call, Reply
from twistedmail.http.sanitize import sanitize_html
from twistedmail.interfaces import MailError

# RFC 2045 §5.1 type/subtype tokens; anything else is served as bytes.
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+\Z")

_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')

FRAME_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:{remote}; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)

_FRAME_PAGE = (
    '<!doctype html><html><head><meta charset="utf-8">'
    "<style>body{{font-family:system-ui,sans-serif;font-size:14px;margin:8px;"
    "word-wrap:break-word}}img{{max-width:100%;height:auto}}</style>"
    "</head><body>{body}</body></html>"
)


def content_disposition(filename: str | None, fallback: str) -> str:
    """``attachment`` with an ASCII name and the exact UTF-8 one (RFC 6266 §4.3)."""
    name = _UNSAFE_NAME.sub("_", filename or "").strip(" .")[:200] or fallback
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


async def raw_message(call: Call) -> Reply:
    found = await locate(call)
    try:
        raw = await call.me.fetch(found.mailbox, found.info.uid)
    except MailError as e:
        raise from_store_error(e) from None
    disposition = content_disposition(None, f"message-{found.info.uid}.eml")
    return Reply(200, raw, "message/rfc822", (("Content-Disposition", disposition),))


async def attachment(call: Call) -> Reply:
    found = await locate(call)
    text = call.path["n"]
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise ApiError.bad("n", "n must be the attachment's index, from 0")
    try:
        parsed = await call.ctx.parsed(call.me, found.mailbox, found.uidvalidity, found.info.uid)
    except MailError as e:
        raise from_store_error(e) from None
    attachments = parsed.attachments()
    index = int(text)
    if index >= len(attachments):
        raise ApiError(404, "no_such_attachment", "The message has no such attachment.")
    described = attachments[index]
    data = parsed.attachment_bytes(index)
    kind = described.content_type if _MEDIA_TYPE.match(described.content_type) else None
    disposition = content_disposition(described.filename, f"attachment-{index}")
    return Reply(
        200, data, kind or "application/octet-stream", (("Content-Disposition", disposition),)
    )


async def html_body(call: Call) -> Reply:
    """The sanitised HTML body as a page of its own, for ``<iframe sandbox src=...>``."""
    found = await locate(call)
    try:
        parsed = await call.ctx.parsed(call.me, found.mailbox, found.uidvalidity, found.info.uid)
    except MailError as e:
        raise from_store_error(e) from None
    _text, html = parsed.text_and_html()
    if html is None:
        raise ApiError(404, "no_html", "The message has no HTML body.")
    images = bool(call.bool_arg("images"))
    clean = sanitize_html(html, images)
    page = _FRAME_PAGE.format(body=clean.html).encode("utf-8")
    policy = FRAME_POLICY.format(remote=" https: http:" if images else "")
    return Reply(
        200,
        page,
        "text/html; charset=utf-8",
        (("Content-Security-Policy", policy), ("X-Frame-Options", "SAMEORIGIN")),
    )
