"""
Turning a send request into a MIME message, with the stdlib ``email``
package: the request is validated field by field first (so a 400 names the
field), then built with `email.message.EmailMessage`, which refuses header
injection and encodes non-ASCII text (RFC 2047 headers, quoted-printable or
base64 bodies).
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from twistedmail.accounts import parse_address
from twistedmail.http.errors import ApiError

#: The most recipients one request may name (to + cc + bcc).
MAX_RECIPIENTS = 100

#: The most parts a multipart/form-data body may have.  The stdlib parser
#: slows down badly with many parts (100,000 tiny ones, 6 MB, take half a
#: minute), so a body with more is refused before it is parsed.
MAX_FORM_PARTS = 500


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Mailbox:
    """An address with its optional display name."""

    display: str
    address: str

    def header(self) -> str:
        if not self.display:
            return self.address
        return email.utils.formataddr((self.display, self.address))


@dataclass
class Draft:
    """A validated send request."""

    sender: Mailbox
    to: list[Mailbox]
    cc: list[Mailbox] = field(default_factory=list)
    bcc: list[Mailbox] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def recipients(self) -> list[str]:
        """Every recipient address once, in order: the envelope's RCPT TOs."""
        return list(dict.fromkeys(m.address for m in self.to + self.cc + self.bcc))

    @property
    def needs_utf8(self) -> bool:
        """An address (not a display name) is non-ASCII: RFC 6531 SMTPUTF8."""
        return any(not a.isascii() for a in [self.sender.address, *self.recipients])


# --- Reading the request ---------------------------------------------------------


def draft_from_json(body: dict[str, Any]) -> Draft:
    attachments = []
    raw = body.get("attachments", [])
    if not isinstance(raw, list):
        raise ApiError.bad("attachments", "attachments must be a list")
    if len(raw) > MAX_FORM_PARTS:
        raise ApiError.bad("attachments", f"at most {MAX_FORM_PARTS} attachments")
    for n, item in enumerate(raw):
        name = f"attachments[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise ApiError.bad(name, f"{name} needs filename, content_type and base64 data")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except binascii.Error:
            raise ApiError.bad(name, f"{name}.data is not base64") from None
        attachments.append(
            Attachment(
                _text(item, "filename", name) or f"attachment-{n}",
                _text(item, "content_type", name) or "application/octet-stream",
                data,
            )
        )
    return _draft(body, attachments)


def draft_from_multipart(content_type: bytes, payload: bytes) -> Draft:
    """
    multipart/form-data (RFC 7578): text fields as in the JSON form, list
    fields repeated or comma-separated, files in fields named ``attachments``.
    """
    # Every delimiter line (RFC 2046 §5.1.1) starts "--" after a line break,
    # nested ones included: a cheap upper bound on the parts.
    if payload.count(b"\n--") > MAX_FORM_PARTS + 1:
        raise ApiError.bad("body", f"at most {MAX_FORM_PARTS} form parts", "too_many_parts")
    head = b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\n"
    parsed = BytesParser(policy=email.policy.HTTP).parsebytes(head + payload)
    if not parsed.is_multipart() or parsed.defects:
        raise ApiError.bad("body", "the multipart/form-data body is malformed", "bad_multipart")
    fields: dict[str, Any] = {}
    attachments: list[Attachment] = []
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ApiError.bad("body", "a form part has no name", "bad_multipart")
        data = part.get_payload(decode=True) or b""
        assert isinstance(data, bytes)
        filename = part.get_filename()
        if filename is not None or name == "attachments":
            if data or filename:
                kind = part.get_content_type()
                if kind == "text/plain" and filename is None:
                    kind = "application/octet-stream"
                attachments.append(Attachment(filename or "attachment", kind, data))
            continue
        try:
            value = data.decode(part.get_content_charset() or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise ApiError.bad(name, f"{name} is not UTF-8 text") from None
        if name in ("to", "cc", "bcc"):
            fields.setdefault(name, []).extend(a.strip() for a in value.split(",") if a.strip())
        else:
            fields[name] = value
    return _draft(fields, attachments)


def _text(body: dict[str, Any], name: str, prefix: str | None = None) -> str | None:
    value = body.get(name)
    label = f"{prefix}.{name}" if prefix else name
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError.bad(label, f"{label} must be a string")
    return value


def _breaks_lines(text: str) -> bool:
    """
    True for any control character but tab, and for U+2028/U+2029: the
    ``email`` package treats all of them as line ends and refuses them in a
    header (a ValueError, which would be a 500 rather than a 400).
    """
    return any(c != "\t" and unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def _header_text(body: dict[str, Any], name: str) -> str | None:
    value = _text(body, name)
    if value is not None and _breaks_lines(value):
        raise ApiError.bad(name, f"{name} must be one line")
    return value


def _address(text: Any, label: str) -> Mailbox:
    """``addr@domain`` or ``Display Name <addr@domain>``, one of them only."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError.bad(label, f"{label} must be an email address")
    text = text.strip()
    display, address = "", text
    if text.endswith(">") and "<" in text:
        display, _, address = text[:-1].rpartition("<")
        display = display.strip().strip('"').strip()
    try:
        if _breaks_lines(text) or any(c in address for c in "<>,; "):
            raise ValueError(text)
        parse_address(address)
    except ValueError:
        raise ApiError.bad(label, f"{label} is not a valid email address") from None
    return Mailbox(display, address)


def _addresses(body: dict[str, Any], name: str) -> list[Mailbox]:
    value = body.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ApiError.bad(name, f"{name} must be a list of addresses")
    if len(value) > MAX_RECIPIENTS:  # before parsing a million of them
        raise ApiError.bad(name, f"at most {MAX_RECIPIENTS} recipients")
    return [_address(a, f"{name}[{n}]") for n, a in enumerate(value)]


def _draft(body: dict[str, Any], attachments: list[Attachment]) -> Draft:
    known = {"from", "to", "cc", "bcc", "subject", "text", "html", "in_reply_to", "references"}
    unknown = sorted(set(body) - known - {"attachments"})
    if unknown:
        raise ApiError.bad(unknown[0], f"unknown field {unknown[0]!r}")
    if body.get("from") is None:
        raise ApiError.bad("from", "from is required")
    draft = Draft(
        sender=_address(body.get("from"), "from"),
        to=_addresses(body, "to"),
        cc=_addresses(body, "cc"),
        bcc=_addresses(body, "bcc"),
        subject=_header_text(body, "subject") or "",
        text=_text(body, "text"),
        html=_text(body, "html"),
        in_reply_to=_header_text(body, "in_reply_to"),
        references=_header_text(body, "references"),
        attachments=attachments,
    )
    if not draft.recipients:
        raise ApiError.bad("to", "at least one recipient is required")
    if len(draft.recipients) > MAX_RECIPIENTS:
        raise ApiError.bad("to", f"at most {MAX_RECIPIENTS} recipients")
    return draft


# --- Building the message -----------------------------------------------------------


def build(draft: Draft, now: float, hostname: str, with_bcc: bool) -> tuple[bytes, str]:
    """
    The message as CRLF bytes, and its Message-ID.

    ``with_bcc`` is for the sender's own Sent copy only: the copy that
    travels never names Bcc recipients (RFC 5322 §3.6.3).
    """
    message = EmailMessage()
    message["From"] = draft.sender.header()
    if draft.to:
        message["To"] = ", ".join(m.header() for m in draft.to)
    if draft.cc:
        message["Cc"] = ", ".join(m.header() for m in draft.cc)
    if with_bcc and draft.bcc:
        message["Bcc"] = ", ".join(m.header() for m in draft.bcc)
    message["Subject"] = draft.subject
    message["Date"] = email.utils.format_datetime(datetime.fromtimestamp(now, UTC))
    # Random, unlike make_msgid's time and process id, which tell strangers about us.
    message_id = f"<{secrets.token_hex(16)}@{hostname}>"
    message["Message-ID"] = message_id
    if draft.in_reply_to:
        message["In-Reply-To"] = draft.in_reply_to
    if draft.references or draft.in_reply_to:
        message["References"] = draft.references or draft.in_reply_to or ""
    message["User-Agent"] = "twistedmail web"
    if draft.html is not None:
        message.set_content(draft.text or "")
        message.add_alternative(draft.html, subtype="html")
    else:
        message.set_content(draft.text or "")
    for attachment in draft.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not maintype or not subtype or _breaks_lines(attachment.content_type):
            maintype, subtype = "application", "octet-stream"
        # A browser's file name is taken as given, but never as a line break.
        filename = "".join(" " if _breaks_lines(c) else c for c in attachment.filename)
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=filename
        )
    policy = email.policy.SMTPUTF8 if draft.needs_utf8 else email.policy.SMTP
    return message.as_bytes(policy=policy), message_id
