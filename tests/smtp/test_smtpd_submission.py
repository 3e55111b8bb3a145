"""
Submission: STARTTLS (RFC 3207), AUTH (RFC 4954), relaying through the
outbox, DSN parameters (RFC 3461), the headers added on submission
(RFC 6409 §8), and all-or-nothing delivery.
"""

from __future__ import annotations

import base64

import pytest_twisted  # type: ignore[import-untyped]

from tests.smtp.smtpd_harness import (  # type: ignore[import-not-found]
    ALICE,
    BOB,
    CAROL,
    PASSWORD,
    World,
    body_of,
    memory_world,
    world,
)
from twistedmail.smtp.server import Role, SmtpSettings

__all__ = ["memory_world", "world"]


def plain(user: str = ALICE, password: str = PASSWORD, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def logged_in(w: World, outbox: bool = True, ip: str = "203.0.113.9"):
    c = w.client(w.factory(Role.SUBMISSION, outbox=outbox, tls=True), ip=ip)
    c.take()
    await c.lines("EHLO laptop", "STARTTLS")
    assert c.transport.tls_options is not None
    assert (await c.lines("EHLO laptop", f"AUTH PLAIN {plain()}"))[-1] == (
        "235 2.7.0 Authentication successful"
    )
    return c


@pytest_twisted.ensureDeferred
async def test_starttls_resets_and_drops_pipelined_plaintext(memory_world):
    """RFC 3207 §5 (CVE-2011-0411): commands sent with STARTTLS are discarded."""
    c = memory_world.client(memory_world.factory(Role.SUBMISSION, tls=True))
    c.take()
    ehlo = await c.send(b"EHLO laptop\r\n")
    assert ehlo.endswith(b"250 STARTTLS\r\n")
    assert b"AUTH" not in ehlo  # not before TLS
    out = await c.send(b"STARTTLS\r\nMAIL FROM:<injected@x>\r\n")
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    # The EHLO before TLS is forgotten (RFC 3207 §4.2).
    assert await c.lines("MAIL FROM:<a@b.c>") == ["503 5.5.1 Send HELO/EHLO first"]
    ehlo = await c.send(b"EHLO laptop\r\n")
    assert b"STARTTLS" not in ehlo
    assert b"250 AUTH PLAIN LOGIN\r\n" in ehlo
    assert await c.lines("STARTTLS") == ["503 5.5.1 TLS already active"]


@pytest_twisted.ensureDeferred
async def test_auth_needs_tls_unless_loopback_is_allowed(memory_world):
    c = memory_world.client(memory_world.factory(Role.SUBMISSION), ip="127.0.0.1")
    c.take()
    assert (await c.lines("EHLO x", f"AUTH PLAIN {plain()}"))[-1] == (
        "538 5.7.11 Encryption required for authentication"
    )
    assert (await c.lines("MAIL FROM:<alice@hamburger.edu>")) == [
        "530 5.7.0 Authentication required"
    ]
    allow = SmtpSettings(allow_plaintext_auth_on_loopback=True)
    c = memory_world.client(memory_world.factory(Role.SUBMISSION, settings=allow), ip="127.0.0.1")
    c.take()
    assert b"250 AUTH PLAIN LOGIN\r\n" in await c.send(b"EHLO x\r\n")
    assert await c.lines(f"AUTH PLAIN {plain()}") == ["235 2.7.0 Authentication successful"]
    # ... but only on loopback.
    c = memory_world.client(memory_world.factory(Role.SUBMISSION, settings=allow), ip="192.0.2.1")
    c.take()
    assert (await c.lines("EHLO x", f"AUTH PLAIN {plain()}"))[-1].startswith("538 ")


@pytest_twisted.ensureDeferred
async def test_auth_plain_without_initial_response_and_login(memory_world):
    c = memory_world.client(memory_world.factory(Role.SUBMISSIONS))
    c.take()
    assert b"AUTH PLAIN LOGIN" in await c.send(b"EHLO x\r\n")
    assert await c.send(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert await c.lines(plain()) == ["235 2.7.0 Authentication successful"]
    assert await c.lines("AUTH LOGIN") == ["503 5.5.1 Already authenticated"]

    c = memory_world.client(memory_world.factory(Role.SUBMISSIONS))
    c.take()
    await c.lines("EHLO x")
    assert await c.send(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert await c.send(f"{b64('ALICE@hamburger.edu')}\r\n".encode()) == b"334 UGFzc3dvcmQ6\r\n"
    assert await c.lines(b64(PASSWORD)) == ["235 2.7.0 Authentication successful"]

    c = memory_world.client(memory_world.factory(Role.SUBMISSIONS))
    c.take()
    await c.lines("EHLO x")
    assert await c.send(f"AUTH LOGIN {b64(ALICE)}\r\n".encode()) == b"334 UGFzc3dvcmQ6\r\n"
    assert await c.lines("*") == ["501 5.0.0 Authentication cancelled"]
    assert await c.lines("AUTH CRAM-MD5") == ["504 5.5.4 Unrecognized authentication mechanism"]
    assert await c.lines("AUTH PLAIN !!!") == ["501 5.5.2 Cannot decode response"]
    assert await c.lines(f"AUTH PLAIN {plain(authzid=BOB)}") == [
        "535 5.7.8 Authentication credentials invalid"
    ]


@pytest_twisted.ensureDeferred
async def test_failed_auth_is_throttled_per_client(memory_world):
    factory = memory_world.factory(Role.SUBMISSIONS, settings=SmtpSettings(max_auth_failures=3))
    c = memory_world.client(factory, ip="198.51.100.1")
    c.take()
    await c.lines("EHLO x")
    bad = f"AUTH PLAIN {plain(password='guess')}"
    assert await c.lines(bad, bad) == ["535 5.7.8 Authentication credentials invalid"] * 2
    assert await c.lines(bad) == [
        "535 5.7.8 Authentication credentials invalid",
        "421 4.7.0 Too many failed authentications, try again later",
    ]
    assert c.closed
    # A new connection from the same address is locked out, even with the right password.
    again = memory_world.client(factory, ip="198.51.100.1")
    again.take()
    assert (await again.lines("EHLO x", f"AUTH PLAIN {plain()}"))[-1].startswith("421 4.7.0")
    # Others are not affected, and the lockout ends.
    other = memory_world.client(factory, ip="198.51.100.2")
    other.take()
    assert (await other.lines("EHLO x", f"AUTH PLAIN {plain()}"))[-1].startswith("235 ")
    memory_world.clock.advance(301)
    late = memory_world.client(factory, ip="198.51.100.1")
    late.take()
    assert (await late.lines("EHLO x", f"AUTH PLAIN {plain()}"))[-1].startswith("235 ")


@pytest_twisted.ensureDeferred
async def test_authenticated_relay_goes_to_the_outbox_with_dsn(world):
    c = await logged_in(world)
    replies = await c.lines(
        "MAIL FROM:<alice@hamburger.edu> RET=HDRS ENVID=QQ314159 BODY=8BITMIME SIZE=200",
        "RCPT TO:<friend@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;friend@remote.example",
        "RCPT TO:<bob@hamburger.edu> NOTIFY=NEVER",
        "DATA",
    )
    assert replies[-1].startswith("354 ")
    body = b"From: alice@hamburger.edu\r\nSubject: caf\xc3\xa9\r\n\r\n8-bit \xff body\r\n"
    assert (await c.send(body + b".\r\n")).startswith(b"250 2.0.0 Ok: queued as ")
    [(envelope, queued)] = world.outbox.calls
    assert envelope.sender == ALICE
    assert [r.address for r in envelope.recipients] == ["friend@remote.example"]
    assert envelope.recipients[0].notify == ("SUCCESS", "FAILURE")
    assert envelope.recipients[0].orcpt == "rfc822;friend@remote.example"
    assert (envelope.ret, envelope.envid, envelope.body) == ("HDRS", "QQ314159", "8BITMIME")
    assert not queued.startswith(b"Return-Path:")
    assert queued.endswith(body)
    assert b"with ESMTPSA id " in queued
    # Submission fills in Message-ID and Date (RFC 6409 §8.3, §8.1).
    assert b"\r\nMessage-ID: <" in queued and b"\r\nDate: " in queued
    [stored] = await world.inbox(BOB)
    assert stored.startswith(b"Return-Path: <alice@hamburger.edu>\r\n")
    assert stored.endswith(body)


@pytest_twisted.ensureDeferred
async def test_submission_keeps_the_clients_message_id_and_date(memory_world):
    c = await logged_in(memory_world)
    await c.lines("MAIL FROM:<alice@hamburger.edu>", "RCPT TO:<bob@hamburger.edu>", "DATA")
    body = b"Message-ID: <mine@laptop>\r\ndate: Fri, 1 Jan 2027 00:00:00 +0000\r\n\r\nhi\r\n"
    await c.send(body + b".\r\n")
    [stored] = await memory_world.inbox(BOB)
    assert stored.count(b"Message-ID:") == 1
    assert stored.lower().count(b"date:") == 1


@pytest_twisted.ensureDeferred
async def test_relay_without_outbox_is_451(memory_world):
    c = await logged_in(memory_world, outbox=False)
    assert (await c.lines("MAIL FROM:<alice@hamburger.edu>", "RCPT TO:<friend@remote.example>"))[
        -1
    ] == "451 4.3.0 Outgoing mail is not available here yet, try again later"


@pytest_twisted.ensureDeferred
async def test_unauthenticated_relay_refused_everywhere(memory_world):
    """From loopback too, on the MX port and when the client claims AUTH=."""
    mx = memory_world.client(memory_world.factory(outbox=True), ip="127.0.0.1")
    mx.take()
    assert (
        await mx.lines(
            "EHLO localhost",
            "MAIL FROM:<alice@hamburger.edu> AUTH=alice@hamburger.edu",
            "RCPT TO:<x@remote.example>",
        )
    )[-1] == "554 5.7.1 Relay access denied"
    assert memory_world.outbox.calls == []


@pytest_twisted.ensureDeferred
async def test_queue_failure_rolls_back_local_copies(world):
    world.outbox.failing = True
    c = await logged_in(world)
    await c.lines(
        "MAIL FROM:<alice@hamburger.edu>",
        "RCPT TO:<bob@hamburger.edu>",
        "RCPT TO:<friend@remote.example>",
        "DATA",
    )
    assert await c.send(b"hi\r\n.\r\n") == (
        b"451 4.3.0 Local error in processing, try again later\r\n"
    )
    assert await world.inbox(BOB) == []
    assert await c.lines("NOOP") == ["250 2.0.0 Ok"]


@pytest_twisted.ensureDeferred
async def test_one_full_mailbox_means_nobody_gets_it(tmp_path):
    """One reply for the whole DATA (RFC 5321 §4.1.1.4): all or nothing, then retry."""
    from tests.smtp.smtpd_harness import make_accounts  # type: ignore[import-not-found]
    from twistedmail.store.memory import Limits, MemoryStore

    w = World(make_accounts(str(tmp_path / "a.json")), MemoryStore(limits=Limits(quota=2000)))
    carol = await w.store.account(CAROL)
    await carol.append("INBOX", b"Subject: big\r\n\r\n" + b"x" * 1800 + b"\r\n")
    c = w.client()
    c.take()
    await c.lines(
        "EHLO x",
        "MAIL FROM:<a@b.c>",
        "RCPT TO:<bob@hamburger.edu>",
        "RCPT TO:<carol@hamburger.edu>",
        "DATA",
    )
    assert await c.send(b"y" * 500 + b"\r\n.\r\n") == b"452 4.2.2 Mailbox full, try again later\r\n"
    assert await w.inbox(BOB) == []
    assert len(await w.inbox(CAROL)) == 1
    # Alone, Bob gets it.
    await c.lines("MAIL FROM:<a@b.c>", "RCPT TO:<bob@hamburger.edu>", "DATA")
    assert (await c.send(b"y\r\n.\r\n")).startswith(b"250 ")
    assert body_of((await w.inbox(BOB))[0]) == b"y\r\n"


@pytest_twisted.ensureDeferred
async def test_stopping_waits_for_a_pending_delivery_then_says_421(memory_world):
    from twisted.internet.defer import Deferred

    c = await logged_in(memory_world)
    hold: Deferred[str] = Deferred()
    memory_world.outbox.hold = hold
    c.session.dataReceived(
        b"MAIL FROM:<alice@hamburger.edu>\r\nRCPT TO:<x@remote.example>\r\nDATA\r\n"
        b"hello\r\n.\r\nMAIL FROM:<alice@hamburger.edu>\r\n"
    )
    c.take()
    stopped = c.session.factory.stopService()
    assert not stopped.called and not c.closed
    hold.callback("Q1")
    out = c.take().split(b"\r\n")
    assert out[0].startswith(b"250 2.0.0 Ok: queued as ")
    assert out[1:] == [b"421 4.3.2 Service shutting down, try again later", b""]
    assert c.closed
    await stopped
