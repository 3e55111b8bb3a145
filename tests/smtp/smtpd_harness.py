"""
Shared pieces of the SMTP server tests: real accounts, a real store of each
backend, the server factory on a `task.Clock`, and sessions over
`StringTransport` where bytes go in and exact reply bytes come out.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from twistedmail.accounts import Accounts, make_portal
from twistedmail.interfaces import IMailStore, IOutbox, TemporaryFailure
from twistedmail.model import Envelope
from twistedmail.smtp.server import Role, SMTPFactory, SMTPSession, SmtpSettings
from twistedmail.store.makers import store_makers

HOST = "mx.hamburger.edu"
BOB = "bob@hamburger.edu"
CAROL = "carol@hamburger.edu"
ALICE = "alice@hamburger.edu"  # the submission user
PASSWORD = "correct horse"

BACKENDS = {"memory": "twistedmail.store.memory", "maildir": "twistedmail.store.maildir"}


def backend_store(name: str, data_dir: str) -> IMailStore:
    """A store of backend ``name``; skips the test if it cannot be imported yet."""
    try:
        importlib.import_module(BACKENDS[name])
    except ImportError as e:
        pytest.skip(f"{name} backend not available yet: {e}")
    from twisted.internet import reactor

    store: IMailStore = store_makers()[name].make_store(data_dir, reactor)
    return store


def make_accounts(path: str) -> Accounts:
    accounts = Accounts(path, scrypt_n=2)
    for user in (BOB, CAROL, ALICE):
        accounts.add_user(user, PASSWORD)
    accounts.add_alias("team@hamburger.edu", [BOB, CAROL])
    accounts.add_alias("robert@hamburger.edu", [BOB])
    return accounts


@implementer(IOutbox)
class RecordingOutbox:
    """An `IOutbox` that records what it is given (a fake of the interface)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Envelope, bytes]] = []
        self.hold: Deferred[str] | None = None
        self.failing = False

    def enqueue(self, envelope: Envelope, message: bytes) -> Deferred[str]:
        self.calls.append((envelope, message))
        if self.failing:
            return fail(TemporaryFailure("queue disk full"))
        if self.hold is not None:
            return self.hold
        return succeed(f"Q{len(self.calls)}")


class TLSStringTransport(StringTransport):
    """StringTransport that records startTLS (the TLS handshake itself is e2e-tested)."""

    tls_options: Any = None

    def startTLS(self, options: Any) -> None:
        self.tls_options = options


class Client:
    """One session over a StringTransport."""

    def __init__(self, factory: SMTPFactory, ip: str = "203.0.113.5") -> None:
        self.transport = TLSStringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        session = factory.buildProtocol(IPv4Address("TCP", ip, 40000))
        self.session: SMTPSession = session
        session.makeConnection(self.transport)

    def take(self) -> bytes:
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    async def send(self, data: bytes) -> bytes:
        """Send bytes, wait for pending answers (a store's threads), return the output."""
        self.session.dataReceived(data)
        await self.session.settled()
        return self.take()

    async def lines(self, *lines: str) -> list[str]:
        """Send CRLF-terminated lines; return the reply lines."""
        out = await self.send("".join(f"{line}\r\n" for line in lines).encode())
        return out.decode().split("\r\n")[:-1]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class World:
    """Accounts + store + clock + a factory maker for one test."""

    def __init__(self, accounts: Accounts, store: IMailStore) -> None:
        self.accounts = accounts
        self.store = store
        self.clock = Clock()
        self.outbox = RecordingOutbox()

    def factory(
        self,
        role: Role = Role.MX,
        settings: SmtpSettings | None = None,
        outbox: bool = False,
        tls: bool = False,
    ) -> SMTPFactory:
        return SMTPFactory(
            role,
            settings or SmtpSettings(),
            HOST,
            self.accounts,
            self.store,
            make_portal(self.accounts, self.store, self.clock),
            self.outbox if outbox else None,
            object() if tls else None,
            self.clock,
        )

    def client(self, factory: SMTPFactory | None = None, ip: str = "203.0.113.5") -> Client:
        return Client(factory or self.factory(), ip)

    async def inbox(self, user: str) -> list[bytes]:
        """Every message in ``user``'s INBOX, oldest first."""
        account = await self.store.account(user)
        infos = await account.messages("INBOX")
        return [await account.fetch("INBOX", i.uid) for i in infos]


@pytest.fixture(params=list(BACKENDS))
def world(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[World]:
    store = backend_store(request.param, str(tmp_path / "mail"))
    made = World(make_accounts(str(tmp_path / "accounts.json")), store)
    yield made
    pytest_twisted.blockon(store.close())


@pytest.fixture
def memory_world(tmp_path: Any) -> Iterator[World]:
    """For tests of pure protocol behaviour, where the backend does not matter."""
    store = backend_store("memory", str(tmp_path / "mail"))
    made = World(make_accounts(str(tmp_path / "accounts.json")), store)
    yield made
    pytest_twisted.blockon(store.close())


def body_of(stored: bytes) -> bytes:
    """The message as the client sent it: stored bytes minus our prepended trace lines."""
    lines = stored.split(b"\r\n")
    i = 0
    while lines[i].startswith((b"Return-Path:", b"Received:", b"\t")):
        i += 1
    return b"\r\n".join(lines[i:])
