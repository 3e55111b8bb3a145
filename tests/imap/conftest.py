"""
Fixtures for the IMAP protocol tests: a real store (every backend), real
accounts and portal, and sessions on `StringTransport`s driven byte by byte.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from twistedmail.accounts import Accounts, make_portal
from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.imap.session import IMAPSession
from twistedmail.interfaces import IMailAccount, IMailStore
from twistedmail.store.makers import store_makers

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse"

BACKENDS = {"memory": "twistedmail.store.memory", "maildir": "twistedmail.store.maildir"}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def turn() -> Deferred[None]:
    """
    A short trip through the reactor, so thread results (password checks,
    disk stores) land; callers bound the number of trips, not the time.
    """
    reactor = _reactor()
    d: Deferred[None] = Deferred()
    reactor.callLater(0.002, d.callback, None)
    return d


class Client:
    """A client at the byte level: what it sends and exactly what it got."""

    def __init__(self, factory: IMAPFactory, host: str = "127.0.0.1", secure: bool = False) -> None:
        self.factory = factory
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
        self.session: IMAPSession = factory.session(secure=secure)
        self.session.makeConnection(self.transport)
        self.greeting = self.take()

    def send(self, data: bytes) -> None:
        self.session.dataReceived(data)

    def take(self) -> bytes:
        """Everything written since the last take."""
        out = self.transport.value()
        self.transport.clear()
        return bytes(out)

    async def wait_for(self, marker: bytes, turns: int = 2500) -> bytes:
        """Output up to and including the line containing ``marker``."""
        buffered = b""
        for _ in range(turns):
            buffered += self.take()
            if marker in buffered:
                return buffered
            await turn()
        raise AssertionError(f"never saw {marker!r}; got {buffered!r}")

    async def command(self, line: bytes) -> bytes:
        """Send a tagged command line and return the output through its tagged reply."""
        tag = line.split(b" ", 1)[0]
        self.send(line + b"\r\n")
        return await self._tagged(tag)

    async def finish(self, data: bytes, tag: bytes) -> bytes:
        """Send the rest of a command (after a literal) and wait for ``tag``'s reply."""
        self.send(data + b"\r\n")
        return await self._tagged(tag)

    async def _tagged(self, tag: bytes) -> bytes:
        buffered = b""
        for _ in range(2500):
            buffered += self.take()
            for line in buffered.split(b"\r\n"):
                if line.startswith(tag + b" "):
                    return buffered
            await turn()
        raise AssertionError(f"no tagged reply for {tag!r}; got {buffered!r}")

    async def login(self, user: str = ALICE) -> None:
        out = await self.command(b"L1 LOGIN " + user.encode() + b' "' + PASSWORD.encode() + b'"')
        assert b"L1 OK" in out, out


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[IMailStore]:
    module = BACKENDS[request.param]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("twistedmail.store"):
            raise
        pytest.skip(f"{request.param} backend not available yet ({e})")
    made: IMailStore = store_makers()[request.param].make_store(str(tmp_path / "data"), _reactor())
    yield made
    pytest_twisted.blockon(made.close())


@pytest.fixture
def accounts(tmp_path: Any) -> Iterator[Accounts]:
    found = Accounts(str(tmp_path / "accounts.json"), scrypt_n=2**4)
    found.add_user(ALICE, PASSWORD)
    found.add_user(BOB, PASSWORD)
    yield found
    found.close()


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def settings() -> ImapSettings:
    return ImapSettings(allow_plaintext_login_on_loopback=True)


@pytest.fixture
def factory(
    settings: ImapSettings, accounts: Accounts, store: IMailStore, clock: task.Clock
) -> IMAPFactory:
    portal = make_portal(accounts, store, _reactor())
    return IMAPFactory(settings, portal, "mail.example.test", None, False, clock, _reactor())


@pytest.fixture
def account(store: IMailStore) -> IMailAccount:
    found: IMailAccount = pytest_twisted.blockon(store.account(ALICE))
    return found


@pytest.fixture
def client(factory: IMAPFactory) -> Client:
    return Client(factory)


def message(
    subject: str = "Hello", body: str = "Hi there.\r\n", sender: str = "bob@example.test"
) -> bytes:
    return (
        f"From: Bob <{sender}>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        "Date: Mon, 7 Feb 2024 10:00:00 +0000\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\n{body}"
    ).encode()


async def seen_elsewhere(factory: IMAPFactory, mailbox: bytes = b"INBOX") -> None:
    """
    Have an earlier session SELECT ``mailbox`` and log out, so its messages
    are no longer ``\\Recent`` for the sessions after it (RFC 3501 §2.3.2):
    for tests about something else that spell out FLAGS and counts.
    """
    earlier = Client(factory)
    await earlier.login()
    out = await earlier.command(b"r1 SELECT " + mailbox)
    assert b"r1 OK" in out, out
    await earlier.command(b"r2 LOGOUT")
