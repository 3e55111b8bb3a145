"""
The header lines the SMTP server adds in front of a message: the
``Received:`` trace line (RFC 5321 §4.4) and, on submission, ``Message-ID``
and ``Date`` when the client left them out (RFC 6409 §8.1, §8.3).

The body and the client's headers are never rewritten: everything is
prepended, so the stored message ends with the client's exact bytes.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from math import floor
from typing import NamedTuple

# Characters a client-supplied HELO name may bring into our header; anything
# else (spaces, parentheses, controls, non-ASCII) becomes "?" so that a
# hostile EHLO cannot add header lines or break the comment syntax.
_SAFE_HELO = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")


def new_id() -> str:
    """A short random id naming one message in the logs and trace headers."""
    return secrets.token_hex(6).upper()


def rfc5322_date(now: float) -> str:
    """``now`` (seconds since the epoch) as an RFC 5322 §3.3 date in UTC."""
    return format_datetime(datetime.fromtimestamp(floor(now), UTC))


class DateMemo:
    """
    `rfc5322_date` of the last whole second asked for.

    Formatting costs ~10 µs, more than the rest of the trace header, and
    its result changes once a second, so every message of a busy second
    shares one.  Owned by the `SMTPFactory`, not the module: STYLE.md §7
    rules out module-level caches.
    """

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = ""

    def format(self, now: float) -> str:
        second = floor(now)
        if second != self._second:
            self._text = rfc5322_date(second)
            self._second = second
        return self._text


class TraceInfo(NamedTuple):
    """
    What the session knows when a message arrives.  A NamedTuple, not a
    frozen dataclass: one is built per message, at a third of the cost.
    """

    helo: str
    client_ip: str
    hostname: str
    protocol: str  # "SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "UTF8SMTPS", ...
    message_id: str
    date: str  # the RFC 5322 date of arrival, see `DateMemo`


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, utf8: bool) -> str:
    """
    The ``with`` keyword: RFC 3848 (ESMTPS/ESMTPA/ESMTPSA) and RFC 6531 §3.7.3
    (UTF8SMTP...).
    """
    if not esmtp:
        return "SMTP"
    name = "UTF8SMTP" if utf8 else "ESMTP"
    if tls:
        name += "S"
    if authenticated:
        name += "A"
    return name


def received_header(info: TraceInfo, recipient: str | None) -> bytes:
    """
    ``Received: from helo ([ip]) by host (twistedmail) with P id I for <r>; date``

    ``for`` is only given for a single recipient, so a Bcc'd recipient list
    never leaks into everybody's copy (RFC 5321 §7.2).
    """
    helo = _SAFE_HELO.sub("?", info.helo)[:255] or "unknown"
    ip = _SAFE_HELO.sub("?", info.client_ip)
    if recipient is not None and "\r" not in recipient and "\n" not in recipient:
        last = f"\r\n\tfor <{recipient}>; "
    else:
        last = ";\r\n\t"
    text = (
        f"Received: from {helo} ([{ip}])\r\n"
        f"\tby {info.hostname} (twistedmail) with {info.protocol} id {info.message_id}"
        f"{last}{info.date}\r\n"
    )
    return text.encode("utf-8")


def _header_names(message: bytes) -> set[bytes]:
    """Lower-cased names of the header fields (up to the first empty line)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    names = set()
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.add(line.split(b":", 1)[0].strip().lower())
    return names


def submission_headers(message: bytes, info: TraceInfo) -> bytes:
    """``Message-ID`` and ``Date`` lines to add when missing (RFC 6409 §8)."""
    names = _header_names(message)
    added = b""
    if b"message-id" not in names:
        token = f"{info.message_id}.{secrets.token_hex(8)}"
        added += f"Message-ID: <{token}@{info.hostname}>\r\n".encode()
    if b"date" not in names:
        added += f"Date: {info.date}\r\n".encode()
    return added
