"""
The SMTP server on real loopback listeners (port 0), driven by real clients:
a raw socket as with ``telnet host 25``, Python's smtplib, and swaks.
Blocking clients run in threads (deferToThread), never on the reactor.
Every test runs against both store backends.
"""

from __future__ import annotations

import importlib
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import threads

from twistedmail.accounts import Accounts, make_portal
from twistedmail.interfaces import IMailStore
from twistedmail.smtp.server import Role, SMTPFactory, SmtpSettings
from twistedmail.store.makers import store_makers
from twistedmail.tls import server_tls_options

HOST = "mx.hamburger.edu"
BOB = "bob@hamburger.edu"
ALICE = "alice@hamburger.edu"
PASSWORD = "s3cret pass"
BACKENDS = {"memory": "twistedmail.store.memory", "maildir": "twistedmail.store.maildir"}
USERS = [f"user{i}@hamburger.edu" for i in range(10)]


class Server:
    def __init__(self, store: IMailStore, accounts: Accounts, data_dir: str) -> None:
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        self.store = store
        self.accounts = accounts
        tls = server_tls_options(data_dir, None, None, "localhost")
        portal = make_portal(accounts, store, reactor)
        self.ports: list[Any] = []
        self.port: dict[Role, int] = {}
        settings = SmtpSettings(max_message_size=25_000_000, max_connections_per_client=50)
        for role in Role:
            factory = SMTPFactory(role, settings, HOST, accounts, store, portal, None, tls, reactor)
            if role is Role.SUBMISSIONS:
                port = reactor.listenSSL(0, factory, tls, interface="127.0.0.1")
            else:
                port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.ports.append(port)
            self.port[role] = port.getHost().port

    async def inbox(self, user: str) -> list[bytes]:
        account = await self.store.account(user)
        infos = await account.messages("INBOX")
        return [await account.fetch("INBOX", i.uid) for i in infos]


@pytest.fixture(params=list(BACKENDS))
def server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Server]:
    from twisted.internet import reactor

    name = request.param
    try:
        importlib.import_module(BACKENDS[name])
    except ImportError as e:
        pytest.skip(f"{name} backend not available yet: {e}")
    store: IMailStore = store_makers()[name].make_store(str(tmp_path / "mail"), reactor)
    accounts = Accounts(str(tmp_path / "accounts.json"), scrypt_n=2)
    for user in [BOB, ALICE, "jöran@hamburger.edu", *USERS]:
        accounts.add_user(user, PASSWORD)
    made = Server(store, accounts, str(tmp_path))
    yield made
    for port in made.ports:
        pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(store.close())


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def body_of(stored: bytes) -> bytes:
    head, sep, rest = stored.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    while lines and lines[0].startswith((b"Return-Path:", b"Received:", b"\t")):
        lines.pop(0)
    return b"\r\n".join(lines) + sep + rest


def converse(port: int, script: list[bytes]) -> list[bytes]:
    """Send each item and read one reply (all lines of it) after each."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        replies.append(read_reply(f))
        for item in script:
            s.sendall(item)
            replies.append(read_reply(f))
    return replies


def read_reply(f: Any) -> bytes:
    out = b""
    while True:
        line: bytes = f.readline()
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


@pytest_twisted.ensureDeferred
async def test_textbook_telnet_session(server):
    script = [
        b"HELO crepes.fr\r\n",
        b"MAIL FROM: <alice@crepes.fr>\r\n",
        b"RCPT TO: <bob@hamburger.edu>\r\n",
        b"DATA\r\n",
        b"Do you like ketchup?\r\nHow about pickles?\r\n.\r\n",
        b"QUIT\r\n",
    ]
    replies = await threads.deferToThread(converse, server.port[Role.MX], script)
    assert replies[0] == f"220 {HOST} ESMTP\r\n".encode()
    assert replies[1] == f"250 {HOST}\r\n".encode()
    assert replies[2:5] == [
        b"250 2.1.0 Sender ok\r\n",
        b"250 2.1.5 Recipient ok\r\n",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
    ]
    assert replies[5].startswith(b"250 2.0.0 Ok: queued as ")
    assert replies[6] == b"221 2.0.0 Bye\r\n"
    [stored] = await server.inbox(BOB)
    assert stored.startswith(
        b"Return-Path: <alice@crepes.fr>\r\nReceived: from crepes.fr ([127.0.0.1])"
    )
    assert stored.endswith(
        b"\r\n\tfor <bob@hamburger.edu>; " + stored.split(b"for <bob@hamburger.edu>; ")[1]
    )
    assert body_of(stored) == b"Do you like ketchup?\r\nHow about pickles?\r\n"


@pytest_twisted.ensureDeferred
async def test_pipelined_raw_session(server):
    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port[Role.MX]), timeout=30) as s:
            s.recv(1000)
            s.sendall(b"EHLO client\r\n")
            read_reply(s.makefile("rb"))
            s.sendall(
                b"MAIL FROM:<a@crepes.fr>\r\nRCPT TO:<nobody@hamburger.edu>\r\n"
                b"RCPT TO:<bob@hamburger.edu>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n"
            )
            f = s.makefile("rb")
            out = b"".join(read_reply(f) for _ in range(5))
            s.sendall(b"..one\r\n.\r\nQUIT\r\n")
            out += read_reply(f) + read_reply(f)
            return out

    out = await threads.deferToThread(run)
    lines = out.split(b"\r\n")
    assert lines[:5] == [
        b"250 2.1.0 Sender ok",
        b"550 5.1.1 User unknown",
        b"250 2.1.5 Recipient ok",
        b"554 5.7.1 Relay access denied",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]
    assert lines[5].startswith(b"250 2.0.0 Ok: queued")
    assert lines[6] == b"221 2.0.0 Bye"
    assert body_of((await server.inbox(BOB))[0]) == b".one\r\n"


@pytest_twisted.ensureDeferred
async def test_smtplib_starttls_auth_plain_and_login(server):
    def run(method: str) -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", server.port[Role.SUBMISSION], timeout=30) as smtp:
            smtp.ehlo("laptop")
            assert not smtp.has_extn("auth")
            smtp.starttls(context=no_verify())
            smtp.ehlo("laptop")
            assert smtp.has_extn("auth")
            smtp.user, smtp.password = ALICE, PASSWORD
            smtp.auth(method, getattr(smtp, f"auth_{method.lower()}"))
            return smtp.sendmail(ALICE, [BOB], f"Subject: {method}\r\n\r\nhi\r\n")

    assert await threads.deferToThread(run, "PLAIN") == {}
    assert await threads.deferToThread(run, "LOGIN") == {}
    stored = await server.inbox(BOB)
    assert len(stored) == 2
    assert b"with ESMTPSA id" in stored[0]
    assert b"\r\nMessage-ID: <" in stored[0]


@pytest_twisted.ensureDeferred
async def test_implicit_tls_submission(server):
    def run() -> dict[str, Any]:
        port = server.port[Role.SUBMISSIONS]
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=30, context=no_verify()) as smtp:
            smtp.ehlo("laptop")
            assert not smtp.has_extn("starttls")
            smtp.login(ALICE, PASSWORD)
            return smtp.sendmail(ALICE, [BOB], b"Subject: 465\r\n\r\nhi\r\n")

    assert await threads.deferToThread(run) == {}
    assert len(await server.inbox(BOB)) == 1


@pytest_twisted.ensureDeferred
async def test_open_relay_refused(server):
    """From loopback on the MX port, and authenticated with no outbound queue yet."""

    def mx() -> None:
        with smtplib.SMTP("127.0.0.1", server.port[Role.MX], timeout=30) as smtp:
            smtp.sendmail("x@localhost", ["victim@remote.example"], b"spam\r\n")

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await threads.deferToThread(mx)
    assert refused.value.recipients["victim@remote.example"][0] == 554

    def submission() -> None:
        with smtplib.SMTP("127.0.0.1", server.port[Role.SUBMISSION], timeout=30) as smtp:
            smtp.starttls(context=no_verify())
            smtp.login(ALICE, PASSWORD)
            smtp.sendmail(ALICE, ["friend@remote.example"], b"hi\r\n")

    with pytest.raises(smtplib.SMTPRecipientsRefused) as deferred:
        await threads.deferToThread(submission)
    assert deferred.value.recipients["friend@remote.example"][0] == 451

    def unknown_user() -> None:
        with smtplib.SMTP("127.0.0.1", server.port[Role.SUBMISSION], timeout=30) as smtp:
            smtp.starttls(context=no_verify())
            smtp.login("mallory@hamburger.edu", PASSWORD)

    with pytest.raises(smtplib.SMTPAuthenticationError):
        await threads.deferToThread(unknown_user)


@pytest_twisted.ensureDeferred
async def test_8bit_body_and_utf8_addresses(server):
    body = "From: Élise <élise@crêpes.fr>\r\nSubject: Grüße\r\n\r\nÄpfel und Birnen\r\n".encode()

    def run() -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", server.port[Role.MX], timeout=30) as smtp:
            return smtp.sendmail(
                "élise@crêpes.fr",
                ["jöran@hamburger.edu"],
                body,
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )

    assert await threads.deferToThread(run) == {}
    [stored] = await server.inbox("jöran@hamburger.edu")
    assert body_of(stored) == body
    assert stored.startswith("Return-Path: <élise@crêpes.fr>\r\n".encode())


@pytest_twisted.ensureDeferred
async def test_20_mb_message_with_dot_lines(server):
    line = b"x" * 76 + b"\r\n"
    dots = b".\r\n..\r\n.x\r\n"
    body = b"Subject: big\r\n\r\n" + (line * 1000 + dots) * 260
    assert 20_000_000 < len(body) < 25_000_000

    def run() -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", server.port[Role.MX], timeout=120) as smtp:
            return smtp.sendmail("a@crepes.fr", [BOB], body)

    assert await threads.deferToThread(run) == {}
    [stored] = await server.inbox(BOB)
    assert body_of(stored) == body


@pytest_twisted.ensureDeferred
async def test_size_limit_refused_early(server):
    def run() -> None:
        with smtplib.SMTP("127.0.0.1", server.port[Role.MX], timeout=30) as smtp:
            smtp.sendmail("a@crepes.fr", [BOB], b"x" * 25_000_001)

    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await threads.deferToThread(run)
    assert refused.value.smtp_code == 552


@pytest_twisted.ensureDeferred
async def test_100_recipients_one_copy_per_user(server):
    recipients = [f"user{i % 10}+{i}@hamburger.edu" for i in range(100)]

    def run() -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", server.port[Role.MX], timeout=60) as smtp:
            return smtp.sendmail("a@crepes.fr", recipients, b"Subject: many\r\n\r\nhi\r\n")

    assert await threads.deferToThread(run) == {}
    for user in USERS:
        assert len(await server.inbox(user)) == 1


@pytest_twisted.ensureDeferred
async def test_smuggling_over_the_wire(server):
    def run() -> list[bytes]:
        return converse(
            server.port[Role.MX],
            [
                b"EHLO x\r\n",
                b"MAIL FROM:<a@crepes.fr>\r\n",
                b"RCPT TO:<bob@hamburger.edu>\r\n",
                b"DATA\r\n",
                b"Subject: a\r\n\r\na\n.\nMAIL FROM:<spoof@x>\r\nRCPT TO:<bob@hamburger.edu>\r\n"
                b"DATA\r\nspoofed\r\n.\r\n",
                b"QUIT\r\n",
            ],
        )

    replies = await threads.deferToThread(run)
    assert replies[5].startswith(b"550 5.5.2 Bare CR or LF")
    assert replies[6] == b"221 2.0.0 Bye\r\n"
    assert await server.inbox(BOB) == []


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--hide-all", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is not installed (apt install swaks)"
)
@pytest_twisted.ensureDeferred
async def test_swaks_sessions(server):
    mx = f"127.0.0.1:{server.port[Role.MX]}"
    sub = f"127.0.0.1:{server.port[Role.SUBMISSION]}"
    runs = [
        ("--server", mx, "--from", "a@crepes.fr", "--to", BOB, "--pipeline"),
        (
            "--server", sub, "--from", ALICE, "--to", BOB, "-tls",
            "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
        ),
        (
            "--server", sub, "--from", ALICE, "--to", BOB, "-tls",
            "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
        ),
        ("--server", mx, "--from", "a@crepes.fr", "--to", BOB, "--body", "line\n.\n..\nend"),
    ]  # fmt: skip
    for args in runs:
        result = await threads.deferToThread(swaks, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    stored = await server.inbox(BOB)
    assert len(stored) == 4
    assert b"\r\n.\r\n..\r\nend" in stored[3]
    # Relay and bad auth fail, as they should.
    relay = await threads.deferToThread(
        swaks, "--server", mx, "--from", "a@crepes.fr", "--to", "v@remote.example"
    )
    assert relay.returncode != 0
    bad = await threads.deferToThread(
        swaks, "--server", sub, "-tls", "--auth", "PLAIN", "--auth-user", ALICE,
        "--auth-password", "wrong", "--to", BOB,
    )  # fmt: skip
    assert bad.returncode != 0


@pytest_twisted.ensureDeferred
async def test_connection_limit_per_client_and_others_still_served(server):
    def run() -> tuple[list[bytes], int]:
        socks = [
            socket.create_connection(("127.0.0.1", server.port[Role.MX]), timeout=30)
            for _ in range(51)
        ]
        try:
            greetings = [s.makefile("rb").readline() for s in socks]
            # Another client address is still served while this one is at its limit.
            with smtplib.SMTP(
                "127.0.0.1", server.port[Role.MX], timeout=30, source_address=("127.0.0.2", 0)
            ) as smtp:
                code, _ = smtp.noop()
        finally:
            for s in socks:
                s.close()
        return greetings, code

    greetings, code = await threads.deferToThread(run)
    assert sum(g.startswith(b"220 ") for g in greetings) == 50
    assert greetings[50].startswith(b"421 4.7.0")
    assert code == 250


@pytest_twisted.ensureDeferred
async def test_mx_starttls_without_auth(server):
    def run() -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", server.port[Role.MX], timeout=30) as smtp:
            smtp.ehlo("relay.crepes.fr")
            assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
            smtp.starttls(context=no_verify())
            smtp.ehlo("relay.crepes.fr")
            assert not smtp.has_extn("starttls") and not smtp.has_extn("auth")
            return smtp.sendmail("a@crepes.fr", [BOB], b"Subject: tls\r\n\r\nhi\r\n")

    assert await threads.deferToThread(run) == {}
    [stored] = await server.inbox(BOB)
    assert b"with ESMTPS id " in stored
