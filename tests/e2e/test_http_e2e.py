"""
HTTP end to end, with every store backend and real clients on loopback:
smtplib delivers to the MX listener, a script reads and answers over the API
(HTTP Basic, like curl), and imaplib then finds the answer in the sender's
Sent mailbox and in the recipient's INBOX.  Blocking clients run in threads.
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import importlib
import json
import smtplib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.threads import deferToThread

from twistedmail.accounts import Accounts, make_portal
from twistedmail.delivery import Delivery
from twistedmail.http.app import make_http_site
from twistedmail.http.context import HttpSettings
from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.interfaces import IMailStore
from twistedmail.smtp.server import Role, SMTPFactory, SmtpSettings
from twistedmail.store.makers import store_makers

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred

HOST = "mail.example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse"
BACKENDS = {"memory": "twistedmail.store.memory", "maildir": "twistedmail.store.maildir"}


class Daemon:
    """SMTP (MX), IMAP and HTTP listeners over one store and one accounts file."""

    def __init__(self, store: IMailStore, accounts: Accounts) -> None:
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        portal = make_portal(accounts, store, reactor)
        smtp = SMTPFactory(
            Role.MX, SmtpSettings(), HOST, accounts, store, None, None, None, reactor
        )
        imap = IMAPFactory(
            ImapSettings(allow_plaintext_login_on_loopback=True),
            portal,
            HOST,
            None,
            False,
            reactor,
            reactor,
        )
        site = make_http_site(
            HttpSettings(hostname=HOST),
            portal,
            accounts,
            store,
            Delivery(store, None),
            reactor,
            reactor,
        )
        self.ports = [
            reactor.listenTCP(0, factory, interface="127.0.0.1") for factory in (smtp, imap, site)
        ]
        self.smtp, self.imap, self.http = (p.getHost().port for p in self.ports)


@pytest.fixture(params=list(BACKENDS))
def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Daemon]:
    from twisted.internet import reactor

    try:
        importlib.import_module(BACKENDS[request.param])
    except ImportError as e:
        pytest.skip(f"{request.param} backend not available yet: {e}")
    store: IMailStore = store_makers()[request.param].make_store(str(tmp_path), reactor)
    accounts = Accounts.in_data_dir(str(tmp_path), scrypt_n=2**10)
    accounts.add_user(ALICE, PASSWORD)
    accounts.add_user(BOB, PASSWORD)
    made = Daemon(store, accounts)
    yield made
    for port in made.ports:
        pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(store.close())
    accounts.close()


def api(port: int, method: str, path: str, body: object = None) -> Any:
    """One API call with HTTP Basic, as a script with curl -u would make it."""
    credentials = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def scenario(daemon: Daemon) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    # 1. Mail arrives over SMTP.
    with smtplib.SMTP("127.0.0.1", daemon.smtp, timeout=30) as smtp:
        smtp.sendmail(
            "carol@remote.test",
            [ALICE],
            b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\n"
            b"Subject: Question\r\nMessage-ID: <q1@remote.test>\r\n\r\nCan Bob help?\r\n",
        )
    # 2. A script reads it over the API.
    listing = api(daemon.http, "GET", "/api/mailboxes/INBOX/messages?unseen=true")
    [summary] = listing["messages"]
    seen["listed_subject"] = summary["subject"]
    got = api(daemon.http, "GET", summary["url"])
    seen["text"] = got["text"]
    # 3. ... and answers it over the API, to Bob.
    sent = api(
        daemon.http,
        "POST",
        "/api/messages",
        {
            "from": ALICE,
            "to": [BOB],
            "subject": "Fwd: Question",
            "text": "Bob, can you help Carol?",
            "in_reply_to": got["message_id"],
        },
    )
    seen["sent"] = sent
    api(daemon.http, "PATCH", summary["url"], {"seen": True, "answered": True})
    # 4. IMAP sees the result: Alice's Sent and Bob's INBOX.
    with imaplib.IMAP4("127.0.0.1", daemon.imap) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("Sent", readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        seen["alice_sent"] = data
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", "ANSWERED")
        seen["alice_answered"] = data[0].split()
    with imaplib.IMAP4("127.0.0.1", daemon.imap) as imap:
        imap.login(BOB, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        seen["bob_inbox"] = data
    return seen


def _messages(fetched: list[Any]) -> list[email.message.EmailMessage]:
    out = []
    for item in fetched:
        if isinstance(item, tuple):
            parsed = email.message_from_bytes(item[1], policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            out.append(parsed)
    return out


@ensure_deferred
async def test_smtp_in_api_read_api_send_imap_read(daemon: Daemon) -> None:
    seen = await deferToThread(scenario, daemon)
    assert seen["listed_subject"] == "Question"
    assert seen["text"].strip() == "Can Bob help?"
    assert seen["sent"]["local_deliveries"] == 1
    [copy] = _messages(seen["alice_sent"])
    assert copy["Subject"] == "Fwd: Question" and copy["To"] == BOB
    assert b"\\Seen" in seen["alice_sent"][0][0]
    assert seen["alice_answered"] == [b"1"]
    [received] = _messages(seen["bob_inbox"])
    assert received["Subject"] == "Fwd: Question"
    assert received["In-Reply-To"] == "<q1@remote.test>"
    assert received["Message-ID"] == seen["sent"]["message_id"]
    body = received.get_body(("plain",))
    assert body is not None and "can you help Carol" in body.get_content()
