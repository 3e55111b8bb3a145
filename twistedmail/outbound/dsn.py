"""
Delivery status notifications (RFC 3464): what a sender gets back when we
could not deliver, are still trying, or (on request) did deliver.

A DSN is a ``multipart/report; report-type=delivery-status`` message from
``MAILER-DAEMON@<hostname>``, sent with the null reverse path so that it can
never cause another DSN (RFC 5321 §6.2, RFC 3461 §6.2).  Which events the
sender hears about comes from each recipient's ``NOTIFY`` (RFC 3461 §4.1)
and how much of the original comes back from ``RET`` (§4.3).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from twistedmail.model import Envelope, Recipient

#: Without RET, return the full message only up to this size (RFC 3461 §4.3
#: leaves the choice to us); larger ones come back as headers.
FULL_RETURN_LIMIT = 256 * 1024


class Action:
    """RFC 3464 §2.3.3 action values."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"


@dataclass(frozen=True, slots=True)
class Report:
    """The per-recipient part of a DSN (RFC 3464 §2.3)."""

    recipient: Recipient
    action: str
    status: str
    diagnostic: str | None = None
    remote_mta: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None
    #: Failed because it expired: seconds of temporary failures before we
    #: gave up (the Status is then the last temporary one, 4.x.x).
    expired_after: float | None = None


def wants(recipient: Recipient, action: str) -> bool:
    """
    Whether the sender asked to hear about ``action`` for this recipient.

    RFC 3461 §4.1: NOTIFY=NEVER silences everything; without NOTIFY we
    report failures and delays (the usual default); SUCCESS covers delivered
    and relayed.
    """
    notify = {n.upper() for n in recipient.notify}
    if "NEVER" in notify:
        return False
    if not notify:
        notify = {"FAILURE", "DELAY"}
    wanted = {
        Action.FAILED: "FAILURE",
        Action.DELAYED: "DELAY",
        Action.DELIVERED: "SUCCESS",
        Action.RELAYED: "SUCCESS",
    }[action]
    return wanted in notify


def may_notify(envelope: Envelope) -> bool:
    """Never a DSN for a message with the null reverse path (a bounce)."""
    return envelope.sender != ""


_SUBJECTS = {
    Action.FAILED: "Undelivered Mail Returned to Sender",
    Action.DELAYED: "Delayed Mail (still being retried)",
    Action.DELIVERED: "Successful Mail Delivery Report",
    Action.RELAYED: "Mail Relayed to a Server Without Delivery Reports",
}

_EXPLANATIONS = {
    Action.FAILED: "could not be delivered to the recipients below; this is a permanent error.",
    Action.DELAYED: "has not yet been delivered to the recipients below; we are still trying.",
    Action.DELIVERED: "was delivered to the recipients below.",
    Action.RELAYED: (
        "was handed to a server that does not send delivery reports;"
        " you will not hear from it again."
    ),
}


def _duration(seconds: float) -> str:
    """``5 days``, ``6 hours``, ``10 minutes``: for people, not parsers."""
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{round(seconds / size, 1):g} {unit}"
    return f"{round(seconds):d} seconds"


def _explanation(action: str, reports: Sequence[Report]) -> tuple[str, dict[int, str]]:
    """
    The human part's opening sentence, and a note per report (by index).
    A failure that is only an expiry must not say "permanent error": its
    Status is the last temporary one (4.x.x).
    """
    expired = [i for i, r in enumerate(reports) if r.expired_after is not None]
    if action != Action.FAILED or not expired:
        return _EXPLANATIONS[action], {}
    longest = _duration(max(reports[i].expired_after or 0.0 for i in expired))
    if len(expired) == len(reports):
        return (
            f"could not be delivered to the recipients below: every attempt for {longest}"
            " met a temporary failure, and that is as long as we keep trying.",
            {},
        )
    notes = {i: "permanent error" for i in range(len(reports))}
    for i in expired:
        notes[i] = f"temporary failures for {_duration(reports[i].expired_after or 0.0)}"
    return "could not be delivered to the recipients below.", notes


def _one_line(text: str, limit: int = 900) -> str:
    """A header value: no CR/LF (header injection), bounded length."""
    return " ".join(text.split())[:limit]


def _address_field(address: str) -> tuple[str, bool]:
    """RFC 3464 ``rfc822;`` or RFC 6533 ``utf-8;`` address type."""
    if address.isascii():
        return f"rfc822; {address}", False
    return f"utf-8; {address}", True


def _split_headers(message: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = message.find(separator)
        if end >= 0:
            return message[: end + len(separator)]
    return message + b"\r\n"


def _crlf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def build(
    *,
    hostname: str,
    envelope: Envelope,
    reports: Sequence[Report],
    message: bytes,
    arrival: datetime,
    now: datetime,
) -> bytes:
    """
    The DSN for ``reports`` (all with the same action) about ``message``.

    Returned as bytes ready to queue with `envelope_for`; CRLF line ends;
    8-bit only when the returned original is.
    """
    action = reports[0].action
    utf8 = False
    fields = [f"Reporting-MTA: dns; {hostname}"]
    if envelope.envid:
        fields.append(f"Original-Envelope-Id: {_one_line(envelope.envid)}")
    fields.append(f"Arrival-Date: {format_datetime(arrival)}")
    blocks = ["\r\n".join(fields)]
    lines = []
    explanation, notes = _explanation(action, reports)
    for index, report in enumerate(reports):
        final, wide = _address_field(report.recipient.address)
        utf8 = utf8 or wide
        block = [f"Final-Recipient: {final}"]
        if report.recipient.orcpt:
            kind, _, given = report.recipient.orcpt.partition(";")
            utf8 = utf8 or not given.isascii()
            block.append(f"Original-Recipient: {kind.strip()}; {_one_line(given.strip())}")
        block.append(f"Action: {report.action}")
        block.append(f"Status: {report.status}")
        if report.remote_mta:
            block.append(f"Remote-MTA: dns; {_one_line(report.remote_mta)}")
        if report.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {_one_line(report.diagnostic)}")
        if report.last_attempt:
            block.append(f"Last-Attempt-Date: {format_datetime(report.last_attempt)}")
        if report.will_retry_until:
            block.append(f"Will-Retry-Until: {format_datetime(report.will_retry_until)}")
        blocks.append("\r\n".join(block))
        why = f": {_one_line(report.diagnostic, 300)}" if report.diagnostic else ""
        note = f" ({notes[index]})" if index in notes else ""
        lines.append(f"<{report.recipient.address}>{note}{why}")

    full = envelope.ret == "FULL" or (envelope.ret is None and len(message) <= FULL_RETURN_LIMIT)
    original = _crlf(message) if full else _crlf(_split_headers(message))
    if original and not original.endswith(b"\r\n"):
        original += b"\r\n"
    eight_bit = any(b > 127 for b in original)

    text = (
        f"This is the mail system at {hostname}.\r\n\r\n"
        f"Your message {explanation}\r\n\r\n" + "\r\n".join(lines) + "\r\n"
    )
    status = "\r\n\r\n".join(blocks) + "\r\n"
    boundary = f"{secrets.token_hex(12)}/{hostname}"
    while boundary.encode() in original:
        boundary = f"{secrets.token_hex(12)}/{hostname}"
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    original_type = "message/rfc822" if full else "text/rfc822-headers"
    if full and not original.isascii() and utf8:
        original_type = "message/global"

    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{envelope.sender}>",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{secrets.token_hex(16)}@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
    ]
    parts: list[bytes] = [
        "\r\n".join(headers).encode("utf-8"),
        f"\r\n--{boundary}\r\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" if not text.isascii() else b"\r\n",
        text.encode("utf-8"),
        f"\r\n--{boundary}\r\n".encode(),
        f"Content-Type: {status_type}\r\n".encode(),
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" if utf8 else b"\r\n",
        status.encode("utf-8"),
        f"\r\n--{boundary}\r\n".encode(),
        f"Content-Type: {original_type}\r\n".encode(),
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" if eight_bit else b"\r\n",
        original,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def envelope_for(envelope: Envelope, dsn: bytes) -> Envelope:
    """
    The envelope a DSN travels in: null sender (so it is never bounced),
    to the original sender, 8BITMIME/SMTPUTF8 only when needed.
    """
    eight_bit = any(b > 127 for b in dsn)
    return Envelope(
        sender="",
        recipients=(Recipient(envelope.sender, ("NEVER",)),),
        body="8BITMIME" if eight_bit else None,
        smtputf8=not envelope.sender.isascii(),
        size=len(dsn),
    )
