"""
Two policies of the SMTP server, over a `StringTransport`:

* sender identity on submission (RFC 6409 §6.1): an authenticated user's
  MAIL FROM must be one of their own addresses, or ``<>`` (RFC 6409 §3.2);
* postmaster (RFC 5321 §4.5.1): ``postmaster@`` every local domain, and a
  bare ``<postmaster>``, is always accepted and delivered to somebody.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.smtp.smtpd_harness import (  # type: ignore[import-not-found]
    ALICE,
    BOB,
    CAROL,
    HOST,
    PASSWORD,
    Client,
    World,
    memory_world,
    world,
)
from twistedmail.accounts import Accounts
from twistedmail.smtp.server import Role, SmtpSettings

__all__ = ["memory_world", "world"]

NOT_OWNED = "553 5.7.1 Sender address not owned by authenticated user"
SENDER_OK = "250 2.1.0 Sender ok"


def plain(user: str) -> str:
    return base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()


async def logged_in(
    w: World, user: str = ALICE, settings: SmtpSettings | None = None, outbox: bool = True
) -> Client:
    c = w.client(w.factory(Role.SUBMISSIONS, settings=settings, outbox=outbox))
    c.take()
    assert (await c.lines("EHLO laptop", f"AUTH PLAIN {plain(user)}"))[-1] == (
        "235 2.7.0 Authentication successful"
    )
    return c


async def mail_from(c: Client, sender: str) -> str:
    """One MAIL FROM's reply; the transaction is reset afterwards."""
    [reply] = await c.lines(f"MAIL FROM:<{sender}>")
    await c.lines("RSET")
    return reply


def reconfigured(w: World, **kw: Any) -> World:
    """The same accounts file and store, with ``[server] postmaster``/``hostname`` set."""
    return World(Accounts(w.accounts.path, scrypt_n=2, **kw), w.store)


async def deliver(c: Client, rcpt: str, sender: str = "crepes@crepes.fr") -> list[str]:
    replies = await c.lines(f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>", "DATA")
    out = await c.send(b"Subject: hello postmaster\r\n\r\nx\r\n.\r\n")
    return [*replies, out.decode().rstrip("\r\n")]


# --- Sender identity ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_user_may_send_as_their_own_addresses(memory_world):
    memory_world.accounts.add_alias("ally@hamburger.edu", [ALICE])
    memory_world.accounts.add_alias("al@hamburger.edu", ["ally@hamburger.edu"])
    c = await logged_in(memory_world)
    for sender in (
        ALICE,
        "Alice@HAMBURGER.edu",  # local parts fold, as for delivery
        "alice+lists@hamburger.edu",  # a +tag still reaches only her
        "ally@hamburger.edu",  # an alias of hers alone
        "al@hamburger.edu",  # ... through another alias
        "ally+x@hamburger.edu",
    ):
        assert await mail_from(c, sender) == SENDER_OK, sender


@pytest.mark.parametrize(
    "sender",
    [
        BOB,  # another user
        "robert@hamburger.edu",  # another user's alias
        "team@hamburger.edu",  # an alias shared with others
        "bob+alice@hamburger.edu",
        "nobody@hamburger.edu",  # nobody at all
        "alice@crepes.fr",  # not one of our domains
        "alice@[127.0.0.1]",
    ],
)
@pytest_twisted.ensureDeferred
async def test_other_senders_are_refused_with_553(memory_world, sender):
    memory_world.accounts.add_alias("all@hamburger.edu", [ALICE, BOB])
    c = await logged_in(memory_world)
    assert await c.lines(f"MAIL FROM:<{sender}>", "RCPT TO:<bob@hamburger.edu>", "DATA") == [
        NOT_OWNED,
        "503 5.5.1 Need MAIL command",
        "503 5.5.1 Need MAIL command",
    ]
    # Nothing is left of the refused MAIL, and the session goes on.
    assert await c.lines(f"MAIL FROM:<{ALICE}>") == [SENDER_OK]


@pytest_twisted.ensureDeferred
async def test_an_alias_shared_with_others_is_refused(memory_world):
    memory_world.accounts.add_alias("all@hamburger.edu", [ALICE, BOB])
    c = await logged_in(memory_world)
    assert await mail_from(c, "all@hamburger.edu") == NOT_OWNED


@pytest_twisted.ensureDeferred
async def test_a_catch_all_does_not_make_every_address_its_targets(memory_world):
    memory_world.accounts.set_catch_all("hamburger.edu", ALICE)
    c = await logged_in(memory_world)
    assert await mail_from(c, "anything@hamburger.edu") == NOT_OWNED


@pytest_twisted.ensureDeferred
async def test_the_null_sender_is_accepted_on_submission(world):
    """RFC 6409 §3.2: <> MUST NOT in itself be refused (MUAs send MDNs with it)."""
    c = await logged_in(world)
    replies = await c.lines("MAIL FROM:<>", f"RCPT TO:<{BOB}>", "DATA")
    assert replies == [SENDER_OK, "250 2.1.5 Recipient ok", "354 End data with <CR><LF>.<CR><LF>"]
    mdn = b"Subject: Read: hello\r\nContent-Type: multipart/report\r\n\r\nread\r\n"
    assert (await c.send(mdn + b".\r\n")).startswith(b"250 2.0.0 Ok: queued as ")
    [stored] = await world.inbox(BOB)
    assert stored.startswith(b"Return-Path: <>\r\n")


@pytest_twisted.ensureDeferred
async def test_the_from_header_is_not_checked(world):
    """Only the envelope is the server's to check, as with Postfix."""
    c = await logged_in(world)
    await c.lines(f"MAIL FROM:<{ALICE}>", f"RCPT TO:<{BOB}>", "DATA")
    body = b"From: Carol <carol@hamburger.edu>\r\nSubject: on behalf\r\n\r\nhi\r\n"
    assert (await c.send(body + b".\r\n")).startswith(b"250 ")
    [stored] = await world.inbox(BOB)
    assert stored.startswith(b"Return-Path: <alice@hamburger.edu>\r\n")
    assert stored.endswith(body)


@pytest_twisted.ensureDeferred
async def test_every_user_is_checked_against_their_own_login(memory_world):
    c = await logged_in(memory_world, user=BOB)
    assert await mail_from(c, "robert@hamburger.edu") == SENDER_OK
    assert await mail_from(c, ALICE) == NOT_OWNED


@pytest_twisted.ensureDeferred
async def test_the_check_follows_changes_to_the_accounts(memory_world):
    c = await logged_in(memory_world)
    assert await mail_from(c, "ally@hamburger.edu") == NOT_OWNED
    memory_world.accounts.add_alias("ally@hamburger.edu", [ALICE])
    assert await mail_from(c, "ally@hamburger.edu") == SENDER_OK


@pytest_twisted.ensureDeferred
async def test_enforce_sender_identity_off_allows_any_sender(memory_world):
    c = await logged_in(memory_world, settings=SmtpSettings(enforce_sender_identity=False))
    assert await mail_from(c, BOB) == SENDER_OK
    assert await mail_from(c, "alice@crepes.fr") == SENDER_OK


@pytest_twisted.ensureDeferred
async def test_the_mx_listener_does_not_check_senders(memory_world):
    """Strangers are not authenticated: SPF/DKIM, not login names, judge them."""
    c = memory_world.client()
    c.take()
    assert (await c.lines("HELO crepes.fr", f"MAIL FROM:<{BOB}>"))[-1] == SENDER_OK


# --- postmaster -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rcpt",
    [
        "postmaster@hamburger.edu",
        "PostMaster@Hamburger.EDU",  # RFC 5321 §4.1.1.3: case-insensitive
        "postmaster+bounces@hamburger.edu",
    ],
)
@pytest_twisted.ensureDeferred
async def test_postmaster_without_an_alias_reaches_the_first_user(world, rcpt):
    """Unset [server] postmaster: the domain's first user alphabetically (alice)."""
    c = world.client()
    c.take()
    await c.lines("EHLO crepes.fr")
    replies = await deliver(c, rcpt)
    assert replies[:3] == [
        SENDER_OK,
        "250 2.1.5 Recipient ok",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert replies[3].startswith("250 2.0.0 Ok: queued as ")
    [stored] = await world.inbox(ALICE)
    assert b"hello postmaster" in stored
    assert await world.inbox(BOB) == [] and await world.inbox(CAROL) == []


@pytest_twisted.ensureDeferred
async def test_configured_postmaster_gets_every_domains_postmaster_mail(memory_world):
    memory_world.accounts.add_domain("crepes.test")
    w = reconfigured(memory_world, postmaster=CAROL)
    c = w.client()
    c.take()
    await c.lines("EHLO x")
    for rcpt in ("postmaster@hamburger.edu", "POSTMASTER@crepes.test", "Postmaster"):
        assert (await deliver(c, rcpt))[-1].startswith("250 2.0.0 Ok"), rcpt
    assert len(await w.inbox(CAROL)) == 3
    assert await w.inbox(ALICE) == []


@pytest_twisted.ensureDeferred
async def test_an_explicit_postmaster_wins_over_the_configured_one(memory_world):
    memory_world.accounts.add_alias("postmaster@hamburger.edu", [BOB])
    w = reconfigured(memory_world, postmaster=CAROL)
    c = w.client()
    c.take()
    await c.lines("EHLO x")
    assert (await deliver(c, "postmaster@hamburger.edu"))[-1].startswith("250 ")
    assert len(await w.inbox(BOB)) == 1
    assert await w.inbox(CAROL) == []


@pytest_twisted.ensureDeferred
async def test_bare_postmaster_is_the_hostnames_postmaster(memory_world):
    """RFC 5321 §4.1.1.3: <Postmaster> without a domain, any case."""
    memory_world.accounts.add_domain(HOST)  # mx.hamburger.edu: no user of its own
    memory_world.accounts.add_alias("postmaster@hamburger.edu", [BOB])
    w = reconfigured(memory_world, hostname=HOST)
    c = w.client()
    c.take()
    await c.lines("EHLO x")
    assert (await deliver(c, "POSTMASTER", sender=""))[-1].startswith("250 ")
    # mx.hamburger.edu has neither a postmaster nor a user: the first user of all.
    [stored] = await w.inbox(ALICE)
    assert stored.startswith(b"Return-Path: <>\r\nReceived: ")
    assert b"for <postmaster>;" in stored


@pytest_twisted.ensureDeferred
async def test_postmaster_is_local_even_for_an_authenticated_client(memory_world):
    """A bare <postmaster> must never be taken for a remote address and queued."""
    c = await logged_in(memory_world)
    assert (await deliver(c, "postmaster", sender=ALICE))[-1].startswith("250 ")
    assert memory_world.outbox.calls == []
    assert len(await memory_world.inbox(ALICE)) == 1


@pytest_twisted.ensureDeferred
async def test_postmaster_of_a_domain_that_is_not_ours_is_relaying(memory_world):
    c = memory_world.client()
    c.take()
    assert (await c.lines("EHLO x", "MAIL FROM:<>", "RCPT TO:<postmaster@crepes.fr>"))[-2:] == [
        SENDER_OK,
        "554 5.7.1 Relay access denied",
    ]


@pytest_twisted.ensureDeferred
async def test_the_postmaster_may_send_as_postmaster(memory_world):
    """Whoever gets a domain's postmaster mail may answer from that address."""
    c = await logged_in(memory_world)  # alice: hamburger.edu's first user
    assert await mail_from(c, "postmaster@hamburger.edu") == SENDER_OK
    c = await logged_in(memory_world, user=BOB)
    assert await mail_from(c, "postmaster@hamburger.edu") == NOT_OWNED
