"""RFC 3464 delivery status notifications, parsed back with the stdlib."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from typing import Any

from twistedmail.model import Envelope, Recipient
from twistedmail.outbound import dsn

ARRIVAL = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ORIGINAL = b"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: hi\r\n\r\nBody line\r\n"


def make(envelope: Envelope, reports: list[dsn.Report], message: bytes = ORIGINAL) -> bytes:
    return dsn.build(
        hostname="crepes.fr",
        envelope=envelope,
        reports=reports,
        message=message,
        arrival=ARRIVAL,
        now=NOW,
    )


def test_failure_dsn_structure() -> None:
    bob = Recipient("bob@hamburger.edu", (), "rfc822;Bob@hamburger.edu")
    env = Envelope("alice@crepes.fr", (bob,), envid="QQ314159")
    raw = make(
        env,
        [
            dsn.Report(
                bob,
                dsn.Action.FAILED,
                "5.1.1",
                "550 5.1.1 <bob@hamburger.edu>: no such user\r\nInjected: yes",
                "mx.hamburger.edu",
                NOW,
            )
        ],
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@crepes.fr>"
    assert msg["To"] == "alice@crepes.fr"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts: list[Any] = list(msg.iter_parts())
    text, status, original = parts
    assert text.get_content_type() == "text/plain"
    assert "bob@hamburger.edu" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; crepes.fr"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_recipient["Final-Recipient"] == "rfc822; bob@hamburger.edu"
    assert per_recipient["Original-Recipient"] == "rfc822; Bob@hamburger.edu"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.hamburger.edu"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert "Injected" not in per_recipient  # no header injection from a server's text
    # Small message and no RET: the full original comes back (RFC 3461 §4.3 leaves it to us).
    assert original.get_content_type() == "message/rfc822"
    boundary = msg.get_boundary() or ""
    assert raw.endswith(b"\r\n" + ORIGINAL + b"\r\n--" + boundary.encode() + b"--\r\n")


def test_ret_hdrs_returns_only_headers() -> None:
    env = Envelope("alice@crepes.fr", (Recipient("b@x.example"),), ret="HDRS")
    raw = make(env, [dsn.Report(Recipient("b@x.example"), dsn.Action.FAILED, "5.0.0", "550 no")])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = list(msg.iter_parts())[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert b"Body line" not in raw and b"Subject: hi" in raw


def test_ret_full_returns_large_messages_too() -> None:
    big = ORIGINAL + b"x" * (dsn.FULL_RETURN_LIMIT + 10) + b"\r\n"
    env = Envelope("alice@crepes.fr", (Recipient("b@x.example"),), ret="FULL")
    raw = make(env, [dsn.Report(Recipient("b@x.example"), dsn.Action.FAILED, "5.0.0")], big)
    assert big in raw
    env = Envelope("alice@crepes.fr", (Recipient("b@x.example"),))
    raw = make(env, [dsn.Report(Recipient("b@x.example"), dsn.Action.FAILED, "5.0.0")], big)
    assert b"xxxxxxxx" not in raw and b"text/rfc822-headers" in raw


def test_delay_report_has_will_retry_until() -> None:
    env = Envelope("alice@crepes.fr", (Recipient("b@x.example"),))
    raw = make(
        env,
        [dsn.Report(Recipient("b@x.example"), dsn.Action.DELAYED, "4.4.1", will_retry_until=NOW)],
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"].startswith("Delayed Mail")
    parts: list[Any] = list(msg.iter_parts())
    per_recipient = parts[1].get_payload()[1]
    assert per_recipient["Action"] == "delayed"
    assert per_recipient["Will-Retry-Until"] == "Fri, 27 Nov 2026 09:00:00 +0000"


def test_envelope_has_the_null_sender() -> None:
    env = Envelope("alice@crepes.fr", (Recipient("b@x.example"),))
    raw = make(env, [dsn.Report(Recipient("b@x.example"), dsn.Action.FAILED, "5.0.0")])
    out = dsn.envelope_for(env, raw)
    assert out.sender == "" and [r.address for r in out.recipients] == ["alice@crepes.fr"]
    assert out.body is None and not out.smtputf8
    assert not dsn.may_notify(out)  # never a bounce for a bounce


def test_eight_bit_original_marks_the_dsn_8bitmime() -> None:
    env = Envelope("alice@crepes.fr", (Recipient("b@x.example"),))
    raw = make(
        env,
        [dsn.Report(Recipient("b@x.example"), dsn.Action.FAILED, "5.0.0")],
        ORIGINAL + "Grüße\r\n".encode(),
    )
    assert b"Content-Transfer-Encoding: 8bit" in raw
    assert dsn.envelope_for(env, raw).body == "8BITMIME"


def test_utf8_recipient_uses_rfc6533_types() -> None:
    rcpt = Recipient("josé@exemple.fr")
    env = Envelope("alice@crepes.fr", (rcpt,), smtputf8=True)
    raw = make(env, [dsn.Report(rcpt, dsn.Action.FAILED, "5.6.7")])
    assert b"message/global-delivery-status" in raw
    assert "Final-Recipient: utf-8; josé@exemple.fr".encode() in raw


def test_notify_rules() -> None:
    """RFC 3461 §4.1."""
    plain = Recipient("a@x.example")
    assert dsn.wants(plain, dsn.Action.FAILED) and dsn.wants(plain, dsn.Action.DELAYED)
    assert not dsn.wants(plain, dsn.Action.DELIVERED)
    never = Recipient("a@x.example", ("NEVER",))
    assert not any(dsn.wants(never, a) for a in (dsn.Action.FAILED, dsn.Action.DELAYED))
    success = Recipient("a@x.example", ("SUCCESS",))
    assert dsn.wants(success, dsn.Action.DELIVERED) and dsn.wants(success, dsn.Action.RELAYED)
    assert not dsn.wants(success, dsn.Action.FAILED)


def _text_part(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text: Any = next(iter(msg.iter_parts()))
    return str(text.get_content())


def test_an_expiry_is_not_called_a_permanent_error() -> None:
    """Status 4.x.x on an expired recipient: the text says temporary failures, and how long."""
    bob = Recipient("bob@hamburger.edu")
    env = Envelope("alice@crepes.fr", (bob,))
    report = dsn.Report(
        bob,
        dsn.Action.FAILED,
        "4.4.1",
        "delivery time expired; last error: 421 4.4.1 connection failed",
        expired_after=5 * 86400.0,
    )
    text = _text_part(make(env, [report]))
    assert "permanent" not in text
    assert "temporary failure" in text and "5 days" in text


def test_expired_and_permanent_recipients_in_one_dsn_are_told_apart() -> None:
    bob, carol = Recipient("bob@hamburger.edu"), Recipient("carol@hamburger.edu")
    env = Envelope("alice@crepes.fr", (bob, carol))
    reports = [
        dsn.Report(bob, dsn.Action.FAILED, "4.4.1", "421 4.4.1 down", expired_after=7200.0),
        dsn.Report(carol, dsn.Action.FAILED, "5.1.1", "550 5.1.1 no such user"),
    ]
    text = _text_part(make(env, reports))
    assert "<bob@hamburger.edu> (temporary failures for 2 hours): 421 4.4.1 down" in text
    assert "<carol@hamburger.edu> (permanent error): 550 5.1.1 no such user" in text
