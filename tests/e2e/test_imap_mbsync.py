"""
mbsync (isync) syncing a mailbox both ways with our server: a third-party
client with its own strict IMAP parser, UIDPLUS and flag handling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer, threads

from twistedmail.accounts import Accounts, make_portal
from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.interfaces import IMailAccount
from twistedmail.model import SEEN
from twistedmail.store.memory import MemoryStore

pytestmark = pytest.mark.skipif(
    shutil.which("mbsync") is None, reason="mbsync (Debian package isync) is not installed"
)

ALICE = "alice@example.test"
PASSWORD = "sync-pass"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _message(subject: str) -> bytes:
    headers = f"From: bob@example.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
    return f"{headers}\r\nBody of {subject}\r\n".encode()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[int, IMailAccount, Path]]:
    reactor = _reactor()
    store = MemoryStore()
    accounts = Accounts(str(tmp_path / "accounts.json"), scrypt_n=2**4)
    accounts.add_user(ALICE, PASSWORD)
    settings = ImapSettings(allow_plaintext_login_on_loopback=True)
    factory = IMAPFactory(
        settings, make_portal(accounts, store, reactor), "localhost", None, False, reactor, reactor
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    account: IMailAccount = pytest_twisted.blockon(store.account(ALICE))
    yield port.getHost().port, account, tmp_path
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))
    accounts.close()


def _config(tmp: Path, port: int) -> Path:
    local = tmp / "local"
    local.mkdir(exist_ok=True)
    config = tmp / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount test
Host 127.0.0.1
Port {port}
User {ALICE}
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Work
Create Both
Expunge Both
SyncState *
"""
    )
    return config


def _run(config: Path) -> str:
    result = subprocess.run(
        ["mbsync", "-c", str(config), "-a"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(config.parent)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _subject(data: bytes) -> bytes:
    for line in data.splitlines():
        if line.startswith(b"Subject: "):
            return line[9:]
    return b""


def _files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).iterdir())


@pytest_twisted.ensureDeferred
async def test_mbsync_both_ways(setup: tuple[int, IMailAccount, Path]) -> None:
    port, account, tmp = setup
    await account.create_mailbox("Work")
    await account.append("INBOX", _message("one"))
    await account.append("INBOX", _message("two"), [SEEN])
    await account.append("Work", _message("work"))
    config = _config(tmp, port)

    await threads.deferToThread(_run, config)
    inbox = _files(tmp / "local" / "INBOX")
    assert len(inbox) == 2
    # mbsync stores LF line ends and adds its own X-TUID header.
    assert sorted(_subject(p.read_bytes()) for p in inbox) == [b"one", b"two"]
    assert len(_files(tmp / "local" / "Work")) == 1

    # Locally: read "one", delete "two", file a new message in Work.
    for path in inbox:
        base, _, flags = path.name.partition(":2,")
        if _subject(path.read_bytes()) == b"one":
            path.rename(path.parent.parent / "cur" / f"{base}:2,{flags}S")
        else:
            path.rename(path.parent.parent / "cur" / f"{base}:2,{flags}T")
    (tmp / "local" / "Work" / "new" / "1700000000.local.host").write_bytes(_message("from mbsync"))

    await threads.deferToThread(_run, config)
    infos = await account.messages("INBOX")
    assert [SEEN in i.flags for i in infos] == [True]
    assert await account.fetch("INBOX", infos[0].uid) == _message("one")
    work = await account.messages("Work")
    subjects = [_subject(await account.fetch("Work", i.uid)) for i in work]
    assert sorted(subjects) == [b"from mbsync", b"work"]
