"""
A real twisted.web listener on a loopback port over a real store, and a
blocking ``http.client`` client the tests run in a thread.

The client keeps the path exactly as given (``%2F`` stays encoded), keeps
the session cookie like a browser would, and never follows redirects.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from twistedmail.accounts import Accounts
from twistedmail.auth import make_portal
from twistedmail.delivery import Delivery
from twistedmail.http.app import make_http_site
from twistedmail.http.context import HttpSettings
from twistedmail.interfaces import IMailAccount, IMailStore, IOutbox
from twistedmail.model import Envelope
from twistedmail.store.makers import store_makers
from twistedmail.tls import server_tls_options

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}
FAST_SCRYPT = 2**10
SETTINGS = HttpSettings(hostname="mail.example.test", max_upload_size=3_000_000)


_Test = TypeVar("_Test", bound=Callable[..., Coroutine[Any, Any, None]])


def ensure_deferred(test: _Test) -> _Test:
    """pytest_twisted.ensureDeferred, typed (the package has no type hints)."""
    result: _Test = pytest_twisted.ensureDeferred(test)
    return result


@implementer(IOutbox)
class RecordingOutbox:
    """The outbound queue's fake: remembers what it was given."""

    def __init__(self) -> None:
        self.queued: list[tuple[Envelope, bytes]] = []

    def enqueue(self, envelope: Envelope, message: bytes) -> Deferred[str]:
        self.queued.append((envelope, message))
        return succeed(f"Q{len(self.queued)}")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str | None:
        try:
            return str(self.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Client:
    """A blocking client for one server; call it only from a thread."""

    port: int
    cookie: str | None = None
    token: str | None = None
    basic: tuple[str, str] | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    tls: bool = False

    def request(
        self,
        method: str,
        path: str,
        json_body: object = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        sent = dict(self.extra_headers)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        if self.basic is not None:
            pair = f"{self.basic[0]}:{self.basic[1]}".encode()
            sent["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        if self.cookie is not None:
            sent["Cookie"] = self.cookie
        sent.update(headers or {})
        conn: http.client.HTTPConnection
        if self.tls:
            # The test certificate is self-signed: encryption, not identity, is under test.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
            for name, value in response.getheaders():
                if name.lower() == "set-cookie" and value.startswith("twistedmail_session="):
                    cookie = value.split(";", 1)[0]
                    self.cookie = None if cookie.endswith("=") else cookie
            return Response(response.status, got, data)
        finally:
            conn.close()


def call(client: Client, method: str, path: str, **kw: Any) -> Deferred[Response]:
    """``client.request`` in a thread, so the reactor keeps serving."""
    d: Deferred[Response] = deferToThread(client.request, method, path, **kw)
    return d


@dataclass
class Server:
    port: int
    store: IMailStore
    accounts: Accounts
    outbox: RecordingOutbox
    backend: str
    tls: bool = False

    def client(self, **kw: Any) -> Client:
        return Client(self.port, tls=self.tls, **kw)

    async def account(self, user: str) -> IMailAccount:
        found: IMailAccount = await self.store.account(user)
        return found

    async def deliver(self, user: str, message: bytes, mailbox: str = "INBOX") -> int:
        account = await self.account(user)
        appended = await account.deliver(message, mailbox)
        return appended.info.uid

    async def login(self, user: str = ALICE) -> Client:
        """A client with a bearer token for ``user``."""
        client = self.client()
        r = await call(client, "POST", "/api/session", json_body=_login(user))
        assert r.status == 201, r.body
        client.token = r.json()["token"]
        client.cookie = None
        return client


def _login(user: str) -> dict[str, str]:
    return {"address": user, "password": PASSWORDS[user]}


def start_server(
    backend: str,
    data_dir: Path,
    settings: HttpSettings = SETTINGS,
    relay: bool = True,
    tls: bool = False,
) -> Iterator[Server]:
    """
    Build and listen; a generator for fixtures (tears down after the yield).
    Without ``relay`` there is no outbound queue, as before it is configured;
    with ``tls`` the listener speaks HTTPS (the ``https`` role).
    """
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    accounts = Accounts.in_data_dir(str(data_dir), scrypt_n=FAST_SCRYPT)
    for user, password in PASSWORDS.items():
        accounts.add_user(user, password)
    accounts.add_alias("al@example.test", [ALICE])
    store: IMailStore = store_makers()[backend].make_store(str(data_dir), reactor)
    outbox = RecordingOutbox()
    delivery = Delivery(store, outbox if relay else None)
    site = make_http_site(
        settings, make_portal(accounts, store, reactor), accounts, store, delivery, reactor, reactor
    )
    if tls:
        options = server_tls_options(str(data_dir), None, None, "localhost")
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    else:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        yield Server(port.getHost().port, store, accounts, outbox, backend, tls)
    finally:
        pytest_twisted.blockon(port.stopListening())
        pytest_twisted.blockon(store.close())
        accounts.close()


def message(
    subject: str = "Hello",
    body: str = "Hi Alice,\r\nhow are you?\r\n",
    sender: str = "carol@remote.test",
    to: str = ALICE,
    extra: str = "",
) -> bytes:
    return (
        f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n"
        f"{extra}\r\n{body}"
    ).encode()


def multipart_message() -> bytes:
    """text + html alternative, plus a PDF attachment with a UTF-8 file name."""
    pdf = base64.b64encode(b"%PDF-1.4 fake" * 10).decode()
    return (
        "From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: Report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="OUT"\r\n\r\n'
        "--OUT\r\n"
        'Content-Type: multipart/alternative; boundary="ALT"\r\n\r\n'
        "--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain report\r\n"
        "--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        '<p onclick="evil()">Report <b>bold</b></p><script>alert(1)</script>'
        '<img src="https://tracker.test/pixel.gif"><a href="javascript:alert(1)">x</a>\r\n'
        "--ALT--\r\n"
        "--OUT\r\n"
        "Content-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%22.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{pdf}\r\n"
        "--OUT--\r\n"
    ).encode()
