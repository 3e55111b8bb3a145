"""
The login throttle's per-account limit through each protocol: SMTP AUTH and
IMAP LOGIN/AUTHENTICATE over `StringTransport`, the HTTP login over a real
loopback socket.  In each, guessers from many addresses lock the account for
new addresses while the owner's usual address still gets in, and the
replies are the ones a locked-out address always got.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from tests.imap.conftest import Client as ImapClient  # type: ignore[import-not-found]
from tests.smtp.smtpd_harness import ALICE as SMTP_ALICE  # type: ignore[import-not-found]
from tests.smtp.smtpd_harness import PASSWORD as SMTP_PASSWORD
from tests.smtp.smtpd_harness import World, memory_world
from twistedmail.accounts import Accounts
from twistedmail.auth import make_portal
from twistedmail.delivery import Delivery
from twistedmail.http.app import make_http_site
from twistedmail.http.context import HttpSettings
from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.smtp.server import Role, SmtpSettings
from twistedmail.store.memory import MemoryStore

__all__ = ["memory_world"]

ALICE = "alice@example.test"
PASSWORD = "correct horse"
OWNER = "203.0.113.7"
LOCKED = "421 4.7.0 Too many failed authentications, try again later"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- SMTP AUTH -------------------------------------------------------------------


async def smtp_auth(w: World, factory: Any, ip: str, *lines: str) -> list[str]:
    client = w.client(factory, ip=ip)
    client.take()
    await client.lines("EHLO x")
    return await client.lines(*lines)


@pytest_twisted.ensureDeferred
async def test_smtp_auth_locks_the_account_for_new_addresses_only(memory_world: World) -> None:
    w = memory_world
    # max 2 per address, so the account locks at 8.
    factory = w.factory(Role.SUBMISSIONS, settings=SmtpSettings(max_auth_failures=2))
    right = f"AUTH PLAIN {plain(SMTP_ALICE, SMTP_PASSWORD)}"
    assert (await smtp_auth(w, factory, OWNER, right))[-1].startswith("235 ")
    for i in range(8):
        out = await smtp_auth(w, factory, f"198.51.100.{i}", f"AUTH PLAIN {plain(SMTP_ALICE, 'x')}")
        assert out == ["535 5.7.8 Authentication credentials invalid"] + [LOCKED] * (i == 7)
    # A new address is refused with the right password, by PLAIN or LOGIN
    # (once the user name is known, before the password is checked) ...
    assert await smtp_auth(w, factory, "192.0.2.1", right) == [LOCKED]
    login = await smtp_auth(w, factory, "192.0.2.2", "AUTH LOGIN", b64(SMTP_ALICE), b64("x"))
    assert login[-1] == LOCKED
    # ... while other users, and the owner's address, are not.
    assert (await smtp_auth(w, factory, OWNER, right))[-1].startswith("235 ")
    bob = f"AUTH PLAIN {plain('bob@hamburger.edu', SMTP_PASSWORD)}"
    assert (await smtp_auth(w, factory, "192.0.2.1", bob))[-1].startswith("235 ")
    w.clock.advance(300)
    assert (await smtp_auth(w, factory, "192.0.2.1", right))[-1].startswith("235 ")


# --- IMAP LOGIN / AUTHENTICATE -----------------------------------------------------


@pytest.fixture
def imap_clock() -> Clock:
    return Clock()


@pytest.fixture
def imap_factory(tmp_path: Path, imap_clock: Clock) -> Iterator[IMAPFactory]:
    clock = imap_clock
    accounts = Accounts.in_data_dir(str(tmp_path), scrypt_n=2)
    accounts.add_user(ALICE, PASSWORD)
    accounts.add_user("bob@example.test", PASSWORD)
    # The clock as the portal's reactor: password checks answer inline.
    portal = make_portal(accounts, MemoryStore(), clock)
    settings = ImapSettings(max_login_failures=2)
    yield IMAPFactory(settings, portal, "mail.example.test", None, False, clock, None)
    accounts.close()


async def imap_login(factory: IMAPFactory, host: str, user: str, password: str) -> bytes:
    client = ImapClient(factory, host=host, secure=True)
    out: bytes = await client.command(f'a LOGIN {user} "{password}"'.encode())
    return out


@pytest_twisted.ensureDeferred
async def test_imap_login_locks_the_account_for_new_addresses_only(
    imap_factory: IMAPFactory, imap_clock: Clock
) -> None:
    unavailable = b"a NO [UNAVAILABLE] Too many failed logins; try again later\r\n"
    assert b"a OK" in await imap_login(imap_factory, OWNER, ALICE, PASSWORD)
    for i in range(8):
        out = await imap_login(imap_factory, f"198.51.100.{i}", ALICE, "wrong")
        assert out == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert await imap_login(imap_factory, "192.0.2.1", ALICE.upper(), PASSWORD) == unavailable
    # AUTHENTICATE: refused once the response names the user.
    client = ImapClient(imap_factory, host="192.0.2.2", secure=True)
    out = await client.command(b"b AUTHENTICATE PLAIN " + plain(ALICE, PASSWORD).encode())
    assert out == unavailable.replace(b"a NO", b"b NO")
    assert b"a OK" in await imap_login(imap_factory, OWNER, ALICE, PASSWORD)
    assert b"a OK" in await imap_login(imap_factory, "192.0.2.1", "bob@example.test", PASSWORD)
    imap_clock.advance(300)
    assert b"a OK" in await imap_login(imap_factory, "192.0.2.1", ALICE, PASSWORD)


# --- HTTP login --------------------------------------------------------------------


@pytest.fixture
def http_site(tmp_path: Path) -> Iterator[tuple[int, Clock]]:
    reactor = _reactor()
    clock = Clock()
    accounts = Accounts.in_data_dir(str(tmp_path), scrypt_n=2)
    accounts.add_user(ALICE, PASSWORD)
    store = MemoryStore()
    settings = HttpSettings(hostname="mail.example.test", max_login_failures=2)
    site = make_http_site(
        settings, make_portal(accounts, store, clock), accounts, store,
        Delivery(store, None), clock, reactor,
    )  # fmt: skip
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield port.getHost().port, clock
    pytest_twisted.blockon(port.stopListening())
    accounts.close()


def http_login(port: int, source: str, login: str, password: str) -> tuple[int, str | None]:
    """POST /api/session from ``source`` (a loopback address); the status and Retry-After."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        body = json.dumps({"address": login, "password": password})
        conn.request("POST", "/api/session", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_http_login_cannot_lock_the_owner_out(http_site: tuple[int, Clock]) -> None:
    """The old per-user key locked everyone out after 5 failures: a lockout DoS."""
    port, clock = http_site

    async def attempt(source: str, login: str, password: str) -> tuple[int, str | None]:
        result: tuple[int, str | None] = await deferToThread(
            http_login, port, source, login, password
        )
        return result

    assert (await attempt("127.0.0.2", ALICE, PASSWORD))[0] == 201
    for i in range(8):
        assert (await attempt(f"127.0.1.{i}", ALICE, "wrong"))[0] == 401
    assert await attempt("127.0.2.1", "Alice@Example.Test", PASSWORD) == (429, "300")
    assert (await attempt("127.0.0.2", ALICE, PASSWORD))[0] == 201
    # The per-address limit still holds, even for the owner's address.
    for _ in range(2):
        assert (await attempt("127.0.0.2", ALICE, "typo"))[0] == 401
    assert (await attempt("127.0.0.2", ALICE, PASSWORD))[0] == 429
    clock.advance(300)
    assert (await attempt("127.0.2.1", ALICE, PASSWORD))[0] == 201


def test_the_daemon_counts_an_accounts_failures_over_every_protocol_together(tmp_path) -> None:
    """
    service.py gives SMTP, IMAP and HTTP one account limit: a guesser who
    spreads attempts over the three protocols gets one allowance, not three.
    """
    from twisted.internet import reactor

    from twistedmail.accounts import Accounts
    from twistedmail.auth import make_portal
    from twistedmail.config import Config
    from twistedmail.delivery import Delivery
    from twistedmail.service import (
        ServiceContext,
        _http_factory,
        _imap_factory,
        _smtp_factory,
    )
    from twistedmail.store.memory import MemoryStore
    from twistedmail.throttle import ACCOUNT_FACTOR

    store = MemoryStore()
    accounts = Accounts.in_data_dir(str(tmp_path), scrypt_n=2)
    accounts.add_user("alice@example.test", "right")
    unused: Any = None  # the outbox and TLS: no factory reads them here
    ctx = ServiceContext(
        Config(),
        reactor,
        str(tmp_path),
        store,
        accounts,
        make_portal(accounts, store, reactor),
        unused,
        unused,
        Delivery(store, None),
    )
    smtp = _smtp_factory(ctx, "submission")
    imap = _imap_factory(ctx, "imap")
    _http_factory(ctx, "http")
    throttles = [ctx.shared[f"{name}-throttle"] for name in ("smtp", "imap", "http")]
    assert smtp.throttle is throttles[0] and imap.throttle is throttles[1]  # type: ignore[union-attr]
    assert ctx.shared["http"].resource.ctx.throttle is throttles[2]
    assert len({id(t) for t in throttles}) == 3  # per-address counts stay per protocol
    assert len({id(t.accounts) for t in throttles}) == 1
    # One guess per address, the protocols taking turns, up to the account's limit.
    limit = ACCOUNT_FACTOR * 5
    for n in range(limit):
        throttles[n % 3].failed(f"192.0.2.{n}", "Alice@Example.Test")
    for throttle in throttles:
        assert not throttle.allowed("198.51.100.7", "alice@example.test")
