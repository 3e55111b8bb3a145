"""
The SMTP server's conversation, bytes in and exact bytes out (RFC 5321), on
both store backends where the store is involved.
"""

from __future__ import annotations

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.smtp.smtpd_harness import (  # type: ignore[import-not-found]
    BOB,
    CAROL,
    HOST,
    body_of,
    memory_world,
    world,
)
from twistedmail.smtp.server import Role, SmtpSettings

__all__ = ["memory_world", "world"]  # fixtures


@pytest_twisted.ensureDeferred
async def test_textbook_session(world):
    """The telnet session of every textbook, line by line (RFC 5321 §D.1)."""
    c = world.client()
    assert c.take() == f"220 {HOST} ESMTP\r\n".encode()
    assert await c.send(b"HELO crepes.fr\r\n") == f"250 {HOST}\r\n".encode()
    assert await c.send(b"MAIL FROM: <alice@crepes.fr>\r\n") == b"250 2.1.0 Sender ok\r\n"
    assert await c.send(b"RCPT TO: <bob@hamburger.edu>\r\n") == b"250 2.1.5 Recipient ok\r\n"
    assert await c.send(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert await c.send(b"Do you like ketchup?\r\n") == b""
    assert await c.send(b"How about pickles?\r\n") == b""
    out = await c.send(b".\r\n")
    assert out.startswith(b"250 2.0.0 Ok: queued as ")
    assert await c.send(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert c.closed
    [stored] = await world.inbox(BOB)
    assert stored.startswith(b"Return-Path: <alice@crepes.fr>\r\nReceived: from crepes.fr ([")
    assert b"by mx.hamburger.edu (twistedmail) with SMTP id " in stored
    assert b"\tfor <bob@hamburger.edu>; " in stored
    assert body_of(stored) == b"Do you like ketchup?\r\nHow about pickles?\r\n"


@pytest_twisted.ensureDeferred
async def test_ehlo_advertises_extensions(memory_world):
    c = memory_world.client(memory_world.factory(tls=True))
    c.take()
    assert (
        await c.send(b"EHLO crepes.fr\r\n")
        == (
            f"250-{HOST}\r\n250-PIPELINING\r\n250-SIZE 25000000\r\n250-8BITMIME\r\n"
            "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-CHUNKING\r\n"
            "250 STARTTLS\r\n"
        ).encode()
    )


@pytest_twisted.ensureDeferred
async def test_mx_never_offers_auth(memory_world):
    c = memory_world.client(ip="127.0.0.1")
    c.take()
    assert b"AUTH" not in await c.send(b"EHLO x\r\n")
    assert await c.lines("AUTH PLAIN AGJvYgBwdw==") == ["503 5.5.1 AUTH not available"]


@pytest.mark.parametrize(
    "commands, replies",
    [
        (["MAIL FROM:<a@b.c>"], ["503 5.5.1 Send HELO/EHLO first"]),
        (["EHLO x", "RCPT TO:<bob@hamburger.edu>"], ["503 5.5.1 Need MAIL command"]),
        (["EHLO x", "MAIL FROM:<a@b.c>", "DATA"], ["503 5.5.1 Need RCPT command"]),
        (["EHLO x", "MAIL FROM:<a@b.c>", "MAIL FROM:<a@b.c>"], ["503 5.5.1 Sender already given"]),
        (
            ["EHLO x", "MAIL FROM:<a@b.c>", "RCPT TO:<x@hamburger.edu>", "DATA"],
            ["550 5.1.1 User unknown", "554 5.5.1 No valid recipients"],
        ),
        (["FOO"], ["500 5.5.2 Command not recognized"]),
        ([""], ["500 5.5.2 Command not recognized"]),
        (["HELO"], ["501 5.5.4 Syntax: HELO/EHLO hostname"]),
        (["EHLO x", "MAIL TO:<a@b.c>"], ["501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"]),
        (["EHLO x", "MAIL FROM:<a@@>"], ["501 5.1.7 Bad sender address syntax"]),
        (["EHLO x", "MAIL FROM:<a@b.c> FOO=1"], ["555 5.5.4 Unsupported MAIL/RCPT parameter"]),
        (
            ["EHLO x", "MAIL FROM:<a@b.c> BODY=BINARYMIME"],
            ["555 5.5.4 Unsupported MAIL/RCPT parameter"],
        ),
        (["HELO x", "MAIL FROM:<a@b.c> SIZE=10"], ["555 5.5.4 Unsupported MAIL/RCPT parameter"]),
        (
            ["EHLO x", "MAIL FROM:<a@b.c>", "RCPT TO:<bob>"],
            ["501 5.1.3 Bad recipient address syntax"],
        ),
        (["VRFY bob"], ["252 2.5.0 Cannot VRFY user; send some mail and we will try"]),
        (["VRFY"], ["501 5.5.4 Syntax: VRFY address"]),
        (["EXPN team"], ["502 5.5.1 Command not implemented"]),
        (["NOOP"], ["250 2.0.0 Ok"]),
        (["RSET"], ["250 2.0.0 Reset"]),
        (["RSET now"], ["501 5.5.4 No parameters allowed"]),
        (["STARTTLS"], ["502 5.5.1 Command not implemented"]),
        (["BDAT x"], ["501 5.5.4 Syntax: BDAT size [LAST]"]),
    ],
)
@pytest_twisted.ensureDeferred
async def test_misuse_gets_the_right_code(memory_world, commands, replies):
    c = memory_world.client()
    c.take()
    got = await c.lines(*commands)
    assert got[-len(replies) :] == replies


@pytest_twisted.ensureDeferred
async def test_help(memory_world):
    c = memory_world.client()
    c.take()
    assert (await c.lines("HELP"))[-1] == "214 2.0.0 See RFC 5321"


@pytest_twisted.ensureDeferred
async def test_null_sender_and_postmaster(world):
    """Bounces use <> (RFC 5321 §4.5.5); <postmaster> needs no domain (§4.1.1.3)."""
    world.accounts.add_alias(f"postmaster@{HOST}", [CAROL])
    c = world.client()
    c.take()
    assert (await c.lines("EHLO x", "MAIL FROM:<>", "RCPT TO:<Postmaster>", "DATA"))[-3:] == [
        "250 2.1.0 Sender ok",
        "250 2.1.5 Recipient ok",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    out = await c.send(b"Subject: bounce\r\n\r\nx\r\n.\r\n")
    assert out.startswith(b"250 2.0.0 Ok: queued")
    [stored] = await world.inbox(CAROL)
    assert stored.startswith(b"Return-Path: <>\r\n")


@pytest_twisted.ensureDeferred
async def test_unknown_user_and_relay_from_loopback_denied(world):
    """No open relay, even for 127.0.0.1 (the classic misconfiguration)."""
    c = world.client(ip="127.0.0.1")
    c.take()
    assert (
        await c.lines(
            "EHLO localhost",
            "MAIL FROM:<spammer@evil.example>",
            "RCPT TO:<victim@gmail.example>",
            "RCPT TO:<nobody@hamburger.edu>",
            "RCPT TO:<victim@[192.0.2.1]>",
            "RCPT TO:<bob@hamburger.edu@gmail.example>",
        )
    )[-4:] == [
        "554 5.7.1 Relay access denied",
        "550 5.1.1 User unknown",
        "554 5.7.1 Relay access denied",
        "501 5.1.3 Bad recipient address syntax",
    ]


@pytest_twisted.ensureDeferred
async def test_aliases_and_plus_addresses_store_one_copy_per_user(world):
    c = world.client()
    c.take()
    await c.lines(
        "EHLO x",
        "MAIL FROM:<a@crepes.fr>",
        "RCPT TO:<bob@hamburger.edu>",
        "RCPT TO:<team@hamburger.edu>",
        "RCPT TO:<Robert@Hamburger.EDU>",
        "RCPT TO:<bob+lists@hamburger.edu>",
        "DATA",
    )
    assert (await c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")).startswith(b"250 ")
    assert len(await world.inbox(BOB)) == 1
    assert len(await world.inbox(CAROL)) == 1
    # Several recipients: no "for <...>" that would disclose the others.
    assert b"\tfor <" not in (await world.inbox(BOB))[0]


@pytest_twisted.ensureDeferred
async def test_pipelined_session_answers_in_order(world):
    c = world.client()
    c.take()
    out = await c.send(
        b"EHLO x\r\nMAIL FROM:<a@crepes.fr>\r\nRCPT TO:<nobody@hamburger.edu>\r\n"
        b"RCPT TO:<bob@hamburger.edu>\r\nDATA\r\n"
    )
    assert out.split(b"\r\n")[-5:] == [
        b"250 2.1.0 Sender ok",
        b"550 5.1.1 User unknown",
        b"250 2.1.5 Recipient ok",
        b"354 End data with <CR><LF>.<CR><LF>",
        b"",
    ]
    out = await c.send(
        b"one\r\n.\r\nMAIL FROM:<b@crepes.fr>\r\nRCPT TO:<carol@hamburger.edu>\r\nDATA\r\n"
    )
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"250 2.0.0 Ok: queued as ")
    assert lines[1:] == [
        b"250 2.1.0 Sender ok",
        b"250 2.1.5 Recipient ok",
        b"354 End data with <CR><LF>.<CR><LF>",
        b"",
    ]
    assert (await c.send(b"two\r\n.\r\nQUIT\r\n")).endswith(b"\r\n221 2.0.0 Bye\r\n")
    assert body_of((await world.inbox(BOB))[0]) == b"one\r\n"
    assert body_of((await world.inbox(CAROL))[0]) == b"two\r\n"


@pytest_twisted.ensureDeferred
async def test_replies_wait_for_a_slow_delivery(memory_world):
    """RFC 2920 §3: a pending delivery holds back the answers to later commands."""
    from twisted.internet.defer import Deferred

    factory = memory_world.factory(Role.SUBMISSION, outbox=True, tls=True)
    c = memory_world.client(factory)
    c.take()
    c.session._tls = True  # as after STARTTLS (the handshake is tested end to end)
    await c.lines("EHLO x", "AUTH PLAIN AGFsaWNlQGhhbWJ1cmdlci5lZHUAY29ycmVjdCBob3JzZQ==")
    hold: Deferred[str] = Deferred()
    memory_world.outbox.hold = hold
    c.session.dataReceived(
        b"MAIL FROM:<alice@hamburger.edu>\r\nRCPT TO:<x@remote.example>\r\nDATA\r\n"
        b"hello\r\n.\r\nNOOP\r\nRSET\r\n"
    )
    out = c.take()
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert c.transport.producerState == "paused"
    hold.callback("Q7")
    out = c.take()
    assert out.split(b"\r\n")[1:] == [b"250 2.0.0 Ok", b"250 2.0.0 Reset", b""]
    assert out.startswith(b"250 2.0.0 Ok: queued as ")
    assert c.transport.producerState == "producing"


@pytest_twisted.ensureDeferred
async def test_size_limits(world):
    factory = world.factory(settings=SmtpSettings(max_message_size=100))
    c = world.client(factory)
    c.take()
    assert b"250-SIZE 100\r\n" in await c.send(b"EHLO x\r\n")
    assert await c.lines("MAIL FROM:<a@b.c> SIZE=101") == [
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ]
    await c.lines("MAIL FROM:<a@b.c> SIZE=50", "RCPT TO:<bob@hamburger.edu>", "DATA")
    out = await c.send(b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\nNOOP\r\n")
    assert out == (b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n")
    assert await world.inbox(BOB) == []


@pytest_twisted.ensureDeferred
async def test_recipient_limit(memory_world):
    c = memory_world.client(memory_world.factory(settings=SmtpSettings(max_recipients=2)))
    c.take()
    assert (
        await c.lines(
            "EHLO x",
            "MAIL FROM:<a@b.c>",
            "RCPT TO:<bob@hamburger.edu>",
            "RCPT TO:<carol@hamburger.edu>",
            "RCPT TO:<team@hamburger.edu>",
        )
    )[-1] == "452 4.5.3 Too many recipients"


@pytest_twisted.ensureDeferred
async def test_idle_timeout(memory_world):
    c = memory_world.client()
    c.take()
    memory_world.clock.advance(299)
    await c.send(b"NOOP\r\n")
    memory_world.clock.advance(299)
    assert not c.closed
    memory_world.clock.advance(1)
    assert c.take() == b"421 4.4.2 Idle timeout, closing connection\r\n"
    assert c.closed


@pytest_twisted.ensureDeferred
async def test_connection_limits(memory_world):
    factory = memory_world.factory(
        settings=SmtpSettings(max_connections=3, max_connections_per_client=2)
    )
    a = memory_world.client(factory, ip="192.0.2.1")
    b = memory_world.client(factory, ip="192.0.2.1")
    refused = memory_world.client(factory, ip="192.0.2.1")
    assert refused.take() == b"421 4.7.0 Too many connections, try again later\r\n"
    assert refused.closed
    other = memory_world.client(factory, ip="192.0.2.2")
    assert other.take().startswith(b"220 ")
    full = memory_world.client(factory, ip="192.0.2.3")
    assert full.take().startswith(b"421 4.7.0")
    # Leaving frees the slot, for the same client too.
    a.session.connectionLost()
    assert memory_world.client(factory, ip="192.0.2.1").take().startswith(b"220 ")
    assert factory.session_count == 3
    assert not b.closed


@pytest_twisted.ensureDeferred
async def test_too_many_errors_disconnects(memory_world):
    c = memory_world.client(memory_world.factory(settings=SmtpSettings(max_errors=3)))
    c.take()
    assert await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nMore: x\r\n") == (
        b"500 5.5.2 Command not recognized\r\n" * 3
        + b"421 4.7.0 Too many errors, closing connection\r\n"
    )
    assert c.closed


@pytest_twisted.ensureDeferred
async def test_shutdown_says_421(memory_world):
    factory = memory_world.factory()
    c = memory_world.client(factory)
    c.take()
    factory.shut_down()
    assert c.take() == b"421 4.3.2 Service shutting down, try again later\r\n"
    assert c.closed


@pytest_twisted.ensureDeferred
async def test_unexpected_error_is_451_and_session_goes_on(memory_world):
    class Broken:
        def resolve(self, address: str) -> tuple[str, ...]:
            raise RuntimeError("database on fire")

    factory = memory_world.factory()
    factory.accounts = Broken()
    c = memory_world.client(factory)
    c.take()
    assert (await c.lines("EHLO x", "MAIL FROM:<a@b.c>", "RCPT TO:<bob@hamburger.edu>", "NOOP"))[
        -2:
    ] == [
        "451 4.3.0 Local error in processing, try again later",
        "250 2.0.0 Ok",
    ]


@pytest_twisted.ensureDeferred
async def test_received_header_names_client_and_protocol(world):
    c = world.client(ip="198.51.100.7")
    c.take()
    await c.lines("EHLO (evil)\r\nX-Injected: yes", "MAIL FROM:<a@crepes.fr>")
    await c.lines(
        "EHLO good.example", "MAIL FROM:<a@crepes.fr>", "RCPT TO:<bob@hamburger.edu>", "DATA"
    )
    await c.send(b"x\r\n.\r\n")
    [stored] = await world.inbox(BOB)
    first = stored.split(b"\r\n")[1]
    assert first == b"Received: from good.example ([198.51.100.7])"
    assert b"with ESMTP id " in stored


@pytest_twisted.ensureDeferred
async def test_received_date_follows_the_clock_per_second(memory_world):
    """The factory's date memo never hands out a past second's date."""
    world = memory_world
    world.clock.advance(86400 + 59.25)
    c = world.client()
    c.take()
    await c.lines("EHLO x")
    for step in (0.0, 0.5, 0.2, 1.0, 240.0):
        world.clock.advance(step)
        await c.lines("MAIL FROM:<a@b.c>", "RCPT TO:<bob@hamburger.edu>", "DATA")
        await c.send(b"x\r\n.\r\n")
    dates = [m.split(b"\r\n")[3].rpartition(b"; ")[2] for m in await world.inbox(BOB)]
    assert dates == [
        b"Fri, 02 Jan 1970 00:00:59 +0000",
        b"Fri, 02 Jan 1970 00:00:59 +0000",
        b"Fri, 02 Jan 1970 00:00:59 +0000",
        b"Fri, 02 Jan 1970 00:01:00 +0000",
        b"Fri, 02 Jan 1970 00:05:00 +0000",
    ]


@pytest_twisted.ensureDeferred
async def test_duplicate_recipients_count_once_per_user(world):
    c = world.client()
    c.take()
    await c.lines(
        "EHLO x",
        "MAIL FROM:<a@b.c>",
        "RCPT TO:<bob@hamburger.edu>",
        "RCPT TO:<bob@hamburger.edu>",
        "DATA",
    )
    await c.send(b"x\r\n.\r\n")
    assert len(await world.inbox(BOB)) == 1


@pytest_twisted.ensureDeferred
async def test_utf8_addresses_need_smtputf8(world):
    world.accounts.add_user("jöran@hamburger.edu", "pw")
    c = world.client()
    c.take()
    assert (await c.lines("EHLO x", "MAIL FROM:<a@b.c>", "RCPT TO:<jöran@hamburger.edu>"))[-1] == (
        "553 5.6.7 Non-ASCII address needs SMTPUTF8"
    )
    await c.lines("RSET")
    assert await c.lines(
        "MAIL FROM:<élise@crêpes.fr> SMTPUTF8 BODY=8BITMIME",
        "RCPT TO:<jöran@hamburger.edu>",
        "DATA",
    ) == ["250 2.1.0 Sender ok", "250 2.1.5 Recipient ok", "354 End data with <CR><LF>.<CR><LF>"]
    body = "Subject: Grüße\r\n\r\nÄpfel\r\n".encode()
    assert (await c.send(body + b".\r\n")).startswith(b"250 ")
    [stored] = await world.inbox("jöran@hamburger.edu")
    assert stored.startswith("Return-Path: <élise@crêpes.fr>\r\n".encode())
    assert b"with UTF8SMTP id" in stored
    assert body_of(stored) == body
