"""
The JSON shapes of messages: the list entry and the full parsed message.

Everything decoded comes from `twistedmail.message.ParsedMessage` (RFC 2047
headers, charsets, RFC 2231 file names), the same code IMAP SEARCH uses.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

from twistedmail.http.sanitize import sanitize_html
from twistedmail.message import ParsedMessage
from twistedmail.model import ANSWERED, DRAFT, FLAGGED, SEEN, MessageInfo

PREVIEW_LENGTH = 160

_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")
_STYLE = re.compile(r"<style>.*?</style>", re.DOTALL)
_QUOTED = re.compile(r"^>.*$", re.MULTILINE)


def _address(pair: tuple[str, str]) -> dict[str, str]:
    return {"name": pair[0], "address": pair[1]}


def _addresses(parsed: ParsedMessage, field: str) -> list[dict[str, str]]:
    return [_address(p) for p in parsed.addresses(field)]


def _first(parsed: ParsedMessage, field: str) -> str | None:
    values = parsed.header(field)
    return values[0] if values else None


def preview(parsed: ParsedMessage) -> str:
    """A short plain-text start of the message for list views."""
    text, html_body = parsed.text_and_html()
    if text is None and html_body is not None:
        # Sanitised first, so script and style content never reach the preview.
        safe = _STYLE.sub(" ", sanitize_html(html_body).html)
        text = html.unescape(_TAG.sub(" ", safe))
    if text is None:
        return ""
    text = _QUOTED.sub("", text)
    return _SPACE.sub(" ", text).strip()[:PREVIEW_LENGTH]


def message_url(mailbox: str, uid: int) -> str:
    return f"/api/mailboxes/{quote(mailbox, safe='')}/messages/{uid}"


def summary(mailbox: str, info: MessageInfo, parsed: ParsedMessage) -> dict[str, Any]:
    """One entry of a message list."""
    sent = parsed.date()
    senders = _addresses(parsed, "from")
    return {
        "uid": info.uid,
        "url": message_url(mailbox, info.uid),
        "flags": sorted(info.flags),
        "seen": SEEN in info.flags,
        "flagged": FLAGGED in info.flags,
        "answered": ANSWERED in info.flags,
        "draft": DRAFT in info.flags,
        "internal_date": info.internal_date.isoformat(),
        "date": sent.isoformat() if sent is not None else None,
        "size": info.size,
        "from": senders[0] if senders else None,
        "to": _addresses(parsed, "to"),
        "cc": _addresses(parsed, "cc"),
        "subject": _first(parsed, "subject") or "",
        "has_attachments": parsed.has_attachments,
        "preview": preview(parsed),
    }


def full(
    mailbox: str, info: MessageInfo, parsed: ParsedMessage, allow_remote_images: bool
) -> dict[str, Any]:
    """One message, parsed: headers, bodies (HTML sanitised), attachments."""
    url = message_url(mailbox, info.uid)
    text, html_body = parsed.text_and_html()
    described = summary(mailbox, info, parsed)
    del described["preview"]
    described.update(
        mailbox=mailbox,
        bcc=_addresses(parsed, "bcc"),
        reply_to=_addresses(parsed, "reply-to"),
        message_id=_first(parsed, "message-id"),
        in_reply_to=_first(parsed, "in-reply-to"),
        references=_first(parsed, "references"),
        headers=[[name, value] for name, value in parsed.headers()],
        text=text,
        html=None,
        html_url=None,
        remote_images_blocked=0,
        raw_url=url + "/raw",
        attachments=[
            {
                "index": a.index,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "url": f"{url}/attachments/{a.index}",
            }
            for a in parsed.attachments()
        ],
    )
    if html_body is not None:
        clean = sanitize_html(html_body, allow_remote_images)
        described.update(
            html=clean.html,
            html_url=url + "/html",
            remote_images_blocked=clean.remote_images_blocked,
        )
    return described
