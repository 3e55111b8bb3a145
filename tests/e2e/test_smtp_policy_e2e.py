"""
The sender-identity and postmaster policies through the whole daemon
(`make_service` from a config, in process, real listeners on loopback port 0)
with Python's smtplib in a thread: the config keys reach the SMTP sessions
and the accounts, and the start-up log names each domain's postmaster.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent

from twistedmail.accounts import Accounts
from twistedmail.config import load_config
from twistedmail.service import PROTOCOLS, MailService, make_service
from twistedmail.tls import self_signed_paths

ALICE = "alice@hamburger.edu"
BOB = "bob@hamburger.edu"
CAROL = "carol@hamburger.edu"
PASSWORD = "correct horse"
LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"


class Daemon:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        from twisted.internet import reactor

        data_dir = tmp_path / "data"
        accounts = Accounts.in_data_dir(str(data_dir), scrypt_n=2)
        for user in (ALICE, BOB, CAROL):
            accounts.add_user(user, PASSWORD)
        accounts.close()
        settings: dict[str, object] = {
            "server.data_dir": str(data_dir),
            "server.storage": "memory",
            "server.hostname": "mx.hamburger.edu",
        }
        settings |= {f"listeners.{role}": "none" for role in PROTOCOLS}
        settings |= {"listeners.smtp": LOOPBACK_ANY_PORT, "listeners.submission": LOOPBACK_ANY_PORT}
        settings |= overrides
        self.service: MailService = make_service(load_config(None, settings), reactor)
        with capturedLogs() as events:
            self.service.privilegedStartService()  # type: ignore[no-untyped-call]
            self.service.startService()
        self.log = [formatEvent(e) for e in events]
        self.port = {
            listener.role: listener.port.getHost().port  # type: ignore[attr-defined]
            for listener in self.service.context.listeners
            if listener.port is not None
        }
        self.cafile = self_signed_paths(str(data_dir))[1]

    async def inbox(self, user: str) -> list[bytes]:
        account = await self.service.context.store.account(user)
        infos = await account.messages("INBOX")
        return [await account.fetch("INBOX", i.uid) for i in infos]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    made: list[Daemon] = []

    def start(**overrides: object) -> Daemon:
        made.append(Daemon(tmp_path, **overrides))
        return made[-1]

    yield start
    for d in made:
        pytest_twisted.blockon(d.service.stopService())


def submit(d: Daemon, user: str, sender: str, to: str) -> tuple[int, bytes]:
    """Log in over STARTTLS as ``user`` and send; the MAIL FROM reply if refused."""
    tls = ssl.create_default_context(cafile=d.cafile)
    with smtplib.SMTP("127.0.0.1", d.port["submission"], timeout=30) as client:
        client.starttls(context=tls)
        client.login(user, PASSWORD)
        try:
            client.sendmail(sender, [to], f"From: {user}\r\nSubject: by {user}\r\n\r\nhi\r\n")
        except smtplib.SMTPSenderRefused as e:
            return e.smtp_code, e.smtp_error
    return 250, b""


def to_postmaster(d: Daemon, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", d.port["smtp"], timeout=30) as client:
        for rcpt in rcpts:
            client.sendmail("", [rcpt], f"Subject: for {rcpt}\r\n\r\nabuse report\r\n")


@pytest_twisted.ensureDeferred
async def test_submission_checks_the_sender_and_postmaster_is_delivered(daemon):
    d = daemon(**{"server.postmaster": CAROL})
    assert "postmaster for hamburger.edu is carol@hamburger.edu" in d.log

    refused = await deferToThread(submit, d, BOB, ALICE, ALICE)
    assert refused == (553, b"5.7.1 Sender address not owned by authenticated user")
    assert await deferToThread(submit, d, BOB, BOB, ALICE) == (250, b"")
    assert await deferToThread(submit, d, BOB, "", ALICE) == (250, b"")  # an MDN
    assert len(await d.inbox(ALICE)) == 2

    await deferToThread(to_postmaster, d, ["Postmaster", "POSTMASTER@hamburger.edu"])
    stored = await d.inbox(CAROL)
    assert [b"abuse report" in m for m in stored] == [True, True]


@pytest_twisted.ensureDeferred
async def test_enforce_sender_identity_off(daemon):
    d = daemon(**{"smtp.enforce_sender_identity": "false"})
    # No [server] postmaster: the first user alphabetically, said in the log.
    assert "postmaster for hamburger.edu is alice@hamburger.edu" in d.log
    assert await deferToThread(submit, d, BOB, ALICE, CAROL) == (250, b"")
    [stored] = await d.inbox(CAROL)
    assert stored.startswith(b"Return-Path: <alice@hamburger.edu>\r\n")
