"""
The daemon and the clients the security tests attack it with: one
``twistd -n twistedmail`` subprocess per test module (Maildir storage, every
listener on a loopback port 0, small limits), and clients that send bytes no
library would.

Login throttles count per client address, so tests that fail logins on
purpose connect from their own loopback address (127.0.0.x: Linux routes the
whole 127/8 to ``lo``, and the daemon listens on 127.0.0.1); the others never
lock each other out.

Everything here blocks: the daemon is another process, nothing runs on this
process's reactor, and every wait is a poll or a socket timeout with a
deadline, never a measurement.
"""

from __future__ import annotations

import contextlib
import http.client
import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon_harness import (
    LOOPBACK,
    WAIT,
    MailHost,
    wait_until,
)
from tests.e2e.test_twistd import listeners_reported

DOMAIN = "example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"
ALICE_PASSWORD = "alice-Secret-7f3a9"
BOB_PASSWORD = "bob-Secret-c41d2"
WRONG_PASSWORD = "Wrong-Guess-5e8b0"
CATCH_ALL_DOMAIN = "other.test"
REMOTE = "victim@remote.test"

MAX_MESSAGE = 200_000
MAX_LITERAL = 100_000
MAX_UPLOAD = 300_000


# --- The daemon ------------------------------------------------------------------------


def security_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailHost]:
    """
    The daemon under attack, for a module-scoped ``host`` fixture: users
    alice and bob, alias team@ to both, carol at other.test whose catch-all
    is alice, small limits; stopped (SIGTERM) afterwards.
    """
    root = tmp_path_factory.mktemp("security")
    any_port = f"tcp:0:interface={LOOPBACK}"
    mail = MailHost(
        root,
        DOMAIN,
        extra={
            "listeners": {
                "submissions": any_port,
                "imaps": any_port,
                "http": any_port,
                "https": any_port,
            },
            "smtp": {
                "max_message_size": MAX_MESSAGE,
                "max_connections_per_client": 5,
                "max_auth_failures": 3,
            },
            "imap": {"max_literal_size": MAX_LITERAL},
            "http": {"max_upload_size": MAX_UPLOAD},
        },
    )
    mail.add_user(ALICE, ALICE_PASSWORD)
    mail.add_user(BOB, BOB_PASSWORD)
    mail.add_user("carol@" + CATCH_ALL_DOMAIN, ALICE_PASSWORD)
    mail.write_config()
    mail.cli("alias", "add", "team@example.test", ALICE, BOB)
    _catch_all(mail)
    mail.start()
    try:
        yield mail
    finally:
        mail.stop()


def _catch_all(mail: MailHost) -> None:
    from twistedmail.accounts import Accounts

    accounts = Accounts.in_data_dir(str(mail.data), scrypt_n=2)
    try:
        accounts.set_catch_all(CATCH_ALL_DOMAIN, ALICE)
    finally:
        accounts.close()


def ports(mail: MailHost) -> dict[str, int]:
    assert mail.daemon is not None
    found = listeners_reported(mail.daemon.lines)
    return {role: port for role, port in found.items() if port is not None}


def tls_context(mail: MailHost) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=mail.cafile)


# --- Clients -----------------------------------------------------------------------------


class IMAP(imaplib.IMAP4):
    """imaplib from a chosen loopback source address (throttles count per address)."""

    def __init__(self, port: int, source: str = LOOPBACK) -> None:
        self._source = source
        super().__init__(LOOPBACK, port, timeout=WAIT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


class IMAPS(imaplib.IMAP4_SSL):
    """imaplib over implicit TLS from a chosen loopback source address."""

    def __init__(self, port: int, context: ssl.SSLContext, source: str = LOOPBACK) -> None:
        self._source = source
        super().__init__(LOOPBACK, port, ssl_context=context, timeout=WAIT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )
        context: ssl.SSLContext = self.ssl_context
        return context.wrap_socket(sock, server_hostname=self.host)


def imap_login(mail: MailHost, user: str, password: str, source: str = LOOPBACK) -> IMAP:
    client = IMAP(ports(mail)["imap"], source)
    client.starttls(tls_context(mail))
    client.login(user, password)
    return client


class Raw:
    """A line-oriented plain socket, for bytes no library would send."""

    def __init__(self, port: int, source: str = LOOPBACK) -> None:
        self.sock = socket.create_connection(
            (LOOPBACK, port), timeout=WAIT, source_address=(source, 0)
        )
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """IMAP: every line up to and including the one tagged ``tag``."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def smtp_reply(self) -> bytes:
        """SMTP: a whole (multi-line) reply; its last line."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def closed(self) -> bool:
        """True once the peer closed (reading whatever it still sends)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def raw_imap(mail: MailHost, user: str = BOB, password: str = BOB_PASSWORD) -> Raw:
    """A logged-in plain IMAP session (loopback may log in without TLS)."""
    raw = Raw(ports(mail)["imap"])
    assert raw.line().startswith(b"* OK")
    raw.send(b"L LOGIN " + user.encode() + b' "' + password.encode() + b'"\r\n')
    assert raw.until_tagged(b"L")[-1].startswith(b"L OK")
    return raw


def http_call(
    mail: MailHost,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    token: str | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    source: str = LOOPBACK,
    secure: bool = False,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    sent = dict(headers or {})
    if isinstance(body, dict):
        data: bytes | None = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    else:
        data = body
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        sent["Cookie"] = f"twistedmail_session={cookie}"
    connection: http.client.HTTPConnection
    if secure:
        connection = http.client.HTTPSConnection(
            LOOPBACK,
            ports(mail)["https"],
            timeout=WAIT,
            source_address=(source, 0),
            context=https_context(mail),
        )
    else:
        connection = http.client.HTTPConnection(
            LOOPBACK, ports(mail)["http"], timeout=WAIT, source_address=(source, 0)
        )
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def https_context(mail: MailHost) -> ssl.SSLContext:
    context = tls_context(mail)
    context.check_hostname = False  # we connect by address; the chain is still verified
    return context


def http_login(
    mail: MailHost, user: str, password: str, source: str = LOOPBACK
) -> tuple[str, http.client.HTTPMessage]:
    status, headers, body = http_call(
        mail, "POST", "/api/session", {"address": user, "password": password}, source=source
    )
    assert status == 201, body
    return json.loads(body)["token"], headers


def smtp_send(mail: MailHost, rcpts: list[str], message: bytes, sender: str = REMOTE) -> None:
    with smtplib.SMTP(LOOPBACK, ports(mail)["smtp"], timeout=WAIT) as client:
        refused = client.sendmail(sender, rcpts, message)
    assert not refused


def plain_message(subject: str, body: str = "hello\r\n", to: str = BOB) -> bytes:
    return (
        f"From: {REMOTE}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@remote.test>\r\n\r\n{body}"
    ).encode()


def imap_messages(mail: MailHost, user: str, password: str, mailbox: str = "INBOX") -> list[bytes]:
    client = imap_login(mail, user, password)
    try:
        client.select(mailbox, readonly=True)
        typ, data = client.uid("SEARCH", "ALL")
        assert typ == "OK"
        out = []
        for uid in (data[0] or b"").split():
            typ, fetched = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            item = fetched[0]
            assert isinstance(item, tuple)
            out.append(item[1])
        return out
    finally:
        client.logout()


def wait_for_subject(mail: MailHost, user: str, password: str, subject: str) -> bytes:
    def find() -> bytes | None:
        for raw in imap_messages(mail, user, password):
            if f"Subject: {subject}".encode() in raw:
                return raw
        return None

    return wait_until(find, f"{subject!r} in {user}'s INBOX")


def queue_is_empty(mail: MailHost) -> bool:
    return mail.queue_empty()


def still_serves(mail: MailHost) -> None:
    """A fresh SMTP session gets its greeting and a NOOP answer."""
    with smtplib.SMTP(LOOPBACK, ports(mail)["smtp"], timeout=WAIT) as client:
        assert client.noop()[0] == 250


MAILDIR_ENTRIES = re.compile(r"\A(cur|new|tmp|\..+|[\w.-]+)\Z")


def escapes(mail: MailHost) -> list[str]:
    """
    Every path under the test's root named like our probes ("evil") that
    is not a Maildir++ folder directly inside a user's directory.
    """
    mail_root = mail.data / "mail"
    bad = []
    for directory, subdirs, files in os.walk(mail.root):
        for name in subdirs + files:
            if "evil" not in name.lower():
                continue
            path = Path(directory) / name
            inside_user = path.parent.parent == mail_root and name.startswith(".")
            inside_folder = path.parent.parent.parent == mail_root and name in ("cur", "new")
            if not (inside_user or inside_folder):
                bad.append(str(path.relative_to(mail.root)))
    return bad


# RFC 3501 §5.1.3 modified UTF-7 that decodes to separators and dots.
