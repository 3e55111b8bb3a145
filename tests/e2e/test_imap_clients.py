"""
Real IMAP clients (imaplib, imapclient) against a real listener on
127.0.0.1, with every store backend.  Blocking clients run in threads.
"""

from __future__ import annotations

import imaplib
import importlib
import smtplib
import ssl
from collections.abc import Iterator
from typing import Any

import imapclient
import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer, threads

from twistedmail.accounts import Accounts, make_portal
from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.interfaces import IMailAccount, IMailStore
from twistedmail.smtp.server import SMTPFactory
from twistedmail.smtp.settings import Role, SmtpSettings
from twistedmail.store.makers import store_makers

ALICE = "alice@example.test"
PASSWORD = "s3cret pass"
BACKENDS = {"memory": "twistedmail.store.memory", "maildir": "twistedmail.store.maildir"}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def message(subject: str, body: str = "Hello Alice.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: Wed, 7 Feb 2024 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


def _send_smtp(port: int, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail("bob@example.test", [ALICE], data)


class Server:
    def __init__(self, store: IMailStore, accounts: Accounts, tls: Any = None) -> None:
        reactor = _reactor()
        portal = make_portal(accounts, store, reactor)
        settings = ImapSettings(allow_plaintext_login_on_loopback=tls is None)
        self.factory = IMAPFactory(settings, portal, "localhost", tls, False, reactor, reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.number = self.port.getHost().port
        smtp = SMTPFactory(
            Role.MX, SmtpSettings(), "localhost", accounts, store, None, None, None, reactor
        )
        self.smtp_port = reactor.listenTCP(0, smtp, interface="127.0.0.1")
        self.smtp_number = self.smtp_port.getHost().port
        if tls is not None:
            self.tls_factory = IMAPFactory(
                settings, portal, "localhost", tls, True, reactor, reactor
            )
            self.tls_port = reactor.listenTCP(0, self.tls_factory, interface="127.0.0.1")
            self.tls_number = self.tls_port.getHost().port

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.smtp_port.stopListening()
        if hasattr(self, "tls_port"):
            await self.tls_port.stopListening()


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[IMailStore]:
    try:
        importlib.import_module(BACKENDS[request.param])
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
    yield found
    found.close()


@pytest.fixture
def server(store: IMailStore, accounts: Accounts) -> Iterator[Server]:
    made = Server(store, accounts)
    yield made
    pytest_twisted.blockon(defer.ensureDeferred(made.stop()))


@pytest.fixture
def account(store: IMailStore) -> IMailAccount:
    found: IMailAccount = pytest_twisted.blockon(store.account(ALICE))
    return found


@pytest_twisted.ensureDeferred
async def test_imaplib_session(server: Server) -> None:
    def client() -> None:
        data: Any
        listing: Any
        with imaplib.IMAP4("127.0.0.1", server.number) as imap:
            assert imap.login(ALICE, PASSWORD)[0] == "OK"
            assert imap.create("Projects/2024")[0] == "OK"
            typ, listing = imap.list()
            assert typ == "OK" and b'(\\HasNoChildren) "/" Projects/2024' in listing
            typ, data = imap.append("INBOX", "(\\Flagged)", None, message("one"))
            assert typ == "OK" and data[0].startswith(b"[APPENDUID ")
            imap.append("INBOX", "", None, message("two", "findme\r\n"))
            typ, data = imap.select("INBOX")
            assert (typ, data) == ("OK", [b"2"])
            typ, data = imap.search(None, "BODY", "findme")
            assert data == [b"2"]
            typ, data = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            # The first session to select INBOX: \Recent (RFC 3501 §2.3.2).
            assert data[0][0] == (
                b"1 (FLAGS (\\Flagged \\Recent) BODY[HEADER.FIELDS (SUBJECT)] {16}"
            )
            assert data[0][1] == b"Subject: one\r\n\r\n"
            typ, data = imap.fetch("2", "(RFC822)")
            assert data[0][1] == message("two", "findme\r\n")
            typ, data = imap.store("1", "+FLAGS", "(\\Deleted)")
            assert typ == "OK"
            typ, data = imap.expunge()
            assert data == [b"1"]
            typ, data = imap.uid("SEARCH", "ALL")
            assert data == [b"2"]
            typ, data = imap.status("INBOX", "(MESSAGES UNSEEN)")
            assert data == [b'"INBOX" (MESSAGES 1 UNSEEN 0)'] or data == [
                b"INBOX (MESSAGES 1 UNSEEN 0)"
            ]
            imap.close()
            imap.logout()

    await threads.deferToThread(client)


@pytest_twisted.ensureDeferred
async def test_imapclient_session(server: Server, account: IMailAccount) -> None:
    await account.append("INBOX", message("first"))
    await account.append("INBOX", message("Grüße".encode().decode(), "hello\r\n"))

    def client() -> None:
        with imapclient.IMAPClient("127.0.0.1", port=server.number, ssl=False) as imap:
            imap.login(ALICE, PASSWORD)
            caps = imap.capabilities()
            for cap in (b"IDLE", b"MOVE", b"UIDPLUS", b"SPECIAL-USE", b"ESEARCH", b"CONDSTORE"):
                assert cap in caps
            assert imap.find_special_folder(imapclient.imapclient.SENT) == "Sent"
            imap.create_folder("Entwürfe")
            assert "Entwürfe" in [f[2] for f in imap.list_folders()]
            imap.rename_folder("Entwürfe", "Alt")
            imap.delete_folder("Alt")
            assert imap.namespace().personal == (("", "/"),)
            assert b"twistedmail" in imap.id_({"name": "test"})[0]
            info = imap.select_folder("INBOX")
            assert info[b"EXISTS"] == 2 and info[b"READ-WRITE"]
            assert imap.search(["SUBJECT", "first"]) == [1]
            fetched = imap.fetch([1, 2], ["ENVELOPE", "FLAGS", "BODY[]", "BODYSTRUCTURE"])
            assert fetched[1][b"ENVELOPE"].subject == b"first"
            assert fetched[2][b"BODY[]"] == message("Grüße", "hello\r\n")
            assert b"\\Seen" in fetched[1][b"FLAGS"]
            imap.add_flags([2], [b"$Work"])
            assert set(imap.get_flags([2])[2]) == {b"$Work", b"\\Seen", b"\\Recent"}
            result = imap.move([1], "Archive")
            assert result is None or result
            assert imap.search("ALL") == [2]
            imap.add_flags([2], [b"\\Deleted"])
            imap.uid_expunge([2])
            assert imap.search("ALL") == []
            status = imap.folder_status("Archive", [b"MESSAGES", b"UIDNEXT"])
            assert status[b"MESSAGES"] == 1
            imap.logout()

    await threads.deferToThread(client)


@pytest_twisted.ensureDeferred
async def test_two_sessions_and_idle(server: Server, account: IMailAccount) -> None:
    await account.append("INBOX", message("a"))
    await account.append("INBOX", message("b"))
    clients: list[imapclient.IMAPClient] = []

    def setup() -> None:
        # Connecting blocks for the greeting: never on the reactor thread.
        clients.extend(
            imapclient.IMAPClient("127.0.0.1", port=server.number, ssl=False) for _ in "ab"
        )
        for c in clients:
            c.login(ALICE, PASSWORD)
            c.select_folder("INBOX")
        clients[0].idle()

    await threads.deferToThread(setup)
    watcher, actor = clients
    # Delivery over SMTP reaches the idling session through the store's events.
    await threads.deferToThread(_send_smtp, server.smtp_number, message("pushed"))

    def see_exists() -> list[Any]:
        got: list[Any] = watcher.idle_check(timeout=10)
        return got

    responses = await threads.deferToThread(see_exists)
    assert (3, b"EXISTS") in responses

    def act() -> None:
        actor.add_flags([1], [b"\\Deleted", b"\\Seen"])
        actor.expunge()

    await threads.deferToThread(act)

    def see_rest() -> list[Any]:
        seen: list[Any] = []
        while (1, b"EXPUNGE") not in seen:
            got = watcher.idle_check(timeout=10)
            assert got, seen
            seen += got
        watcher.idle_done()
        return seen

    seen = await threads.deferToThread(see_rest)
    assert any(r[1] == b"FETCH" for r in seen)

    def finish() -> None:
        assert watcher.search("ALL") == [2, 3]  # UIDs: imapclient uses UID SEARCH
        assert [m[b"SEQ"] for m in watcher.fetch([2, 3], ["UID"]).values()] == [1, 2]
        for c in (watcher, actor):
            c.logout()

    await threads.deferToThread(finish)


@pytest_twisted.ensureDeferred
async def test_starttls_and_implicit_tls(
    store: IMailStore, accounts: Accounts, tmp_path: Any
) -> None:
    from twistedmail.tls import server_tls_options

    options = server_tls_options(str(tmp_path / "tls"), None, None, "localhost")
    server = Server(store, accounts, tls=options)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def client() -> None:
        with imaplib.IMAP4("127.0.0.1", server.number) as imap:
            assert "LOGINDISABLED" in imap.capabilities
            imap.starttls(context)
            assert imap.login(ALICE, PASSWORD)[0] == "OK"
            imap.logout()
        with imaplib.IMAP4_SSL("127.0.0.1", server.tls_number, ssl_context=context) as imap:
            assert "STARTTLS" not in imap.capabilities
            assert imap.login(ALICE, PASSWORD)[0] == "OK"
            assert imap.select("INBOX")[0] == "OK"
            imap.logout()

    try:
        await threads.deferToThread(client)
    finally:
        await server.stop()
