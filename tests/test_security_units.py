"""
Security properties checked in process, with real listeners on loopback
port 0 and real clients in threads: the cases where the daemon's own
machinery (the service tree, the factories) is what is under test.
"""

from __future__ import annotations

import imaplib
import ssl
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from twistedmail.accounts import Accounts, make_portal
from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.store.memory import MemoryStore
from twistedmail.tls import self_signed_paths, server_tls_options

HOSTNAME = "mail.example.test"
ALICE = "alice@example.test"
PASSWORD = "correct horse"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _turn() -> Deferred[None]:
    d: Deferred[None] = Deferred()
    _reactor().callLater(0.005, d.callback, None)
    return d


def _imap_factory(data_dir: Path) -> IMAPFactory:
    reactor = _reactor()
    accounts = Accounts.in_data_dir(str(data_dir), scrypt_n=2)
    accounts.add_user(ALICE, PASSWORD)
    portal = make_portal(accounts, MemoryStore(), reactor)
    tls = server_tls_options(str(data_dir), None, None, HOSTNAME)
    return IMAPFactory(ImapSettings(), portal, HOSTNAME, tls, False, reactor, reactor)


def _starttls_login_logout(port: int, cafile: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    client.starttls(context)
    client.login(ALICE, PASSWORD)
    client.logout()


@pytest_twisted.ensureDeferred
async def test_imap_session_that_did_starttls_is_forgotten_when_it_closes(tmp_path):
    """
    A closed STARTTLS session must leave the factory's session set, or
    stopping the daemon waits for its BYE forever (SIGTERM hangs).
    """
    factory = _imap_factory(tmp_path)
    port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
    try:
        _, cafile = self_signed_paths(str(tmp_path))
        await deferToThread(_starttls_login_logout, port.getHost().port, cafile)
        for _ in range(400):
            if not factory.sessions:
                break
            await _turn()
        assert not factory.sessions
        stopped = factory.shut_down()
        done: list[object] = []
        stopped.addBoth(done.append)
        assert done == [None]
    finally:
        await port.stopListening()
