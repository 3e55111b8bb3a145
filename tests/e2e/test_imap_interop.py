"""
Third-party mail clients against a real ``twistd -n twistedmail`` daemon, on
both store backends (issue 5: "Done when a user ... can use the server from
a real mail client"):

* mbsync (isync) syncs a mailbox both ways over STARTTLS, trusting the
  daemon's self-signed certificate: pull to a local Maildir, flag, delete,
  write and file locally, push back; change the server, pull again.
* mutt, driven through a pseudo-terminal with pushed keys, over STARTTLS:
  reads, flags, deletes and saves to another folder; the server is checked
  with imaplib afterwards.
* imapclient's ``idle()`` hears of an SMTP delivery to the daemon's MX
  listener within a second of the 250, and of another session's flag
  change and expunge.

One daemon per backend serves the whole module; each test has its own
user.  Tests of a client that is not installed are skipped, naming the
Debian package.
"""

from __future__ import annotations

import contextlib
import fcntl
import imaplib
import os
import re
import select
import shutil
import smtplib
import ssl
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import imapclient
import pytest

from tests.e2e.daemon_harness import PASSWORD, MailHost

DOMAIN = "example.test"
MBSYNC_USER = f"mbsync@{DOMAIN}"
MUTT_USER = f"mutt@{DOMAIN}"
IDLE_USER = f"idle@{DOMAIN}"
CLIENT_TIMEOUT = 30.0
"""A client taking longer than this is hung (a safety net, not a measurement)."""
PUSH_DEADLINE = 1.0
"""Issue 5: IDLE hears of a delivery within a second."""


def message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@other.test>\r\nTo: {DOMAIN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@other.test>\r\n"
        "Date: Fri, 27 Nov 2026 09:00:00 +0000\r\n\r\n" + body
    ).encode()


@pytest.fixture(scope="module", params=["maildir", "memory"])
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailHost]:
    made = MailHost(
        tmp_path_factory.mktemp(f"interop-{request.param}"), DOMAIN, storage=request.param
    )
    made.data.mkdir(parents=True, exist_ok=True)
    for user in (MBSYNC_USER, MUTT_USER, IDLE_USER):
        made.add_user(user)
    made.start()
    try:
        if made.imap_port is None:
            pytest.skip("this daemon has no IMAP listener yet")
        yield made
        made.stop()
        log = made.log()
        assert "Traceback" not in log and "Unhandled" not in log, log
    finally:
        if made.daemon is not None:
            made.daemon.kill()


# --- Checking the server with imaplib --------------------------------------------------


@contextlib.contextmanager
def imap(host: MailHost, user: str) -> Iterator[imaplib.IMAP4]:
    """A logged-in imaplib session over STARTTLS, the certificate verified."""
    assert host.imap_port is not None
    client = imaplib.IMAP4("127.0.0.1", host.imap_port, timeout=CLIENT_TIMEOUT)
    try:
        client.starttls(ssl.create_default_context(cafile=host.cafile))
        client.login(user, PASSWORD)
        yield client
        client.logout()
    finally:
        with contextlib.suppress(OSError):
            client.shutdown()


def mailbox(client: imaplib.IMAP4, name: str) -> dict[str, set[str]]:
    """Subject -> flags of every message in ``name``."""
    typ, data = client.select(name, readonly=True)
    assert typ == "OK", data
    if data == [b"0"]:
        return {}
    typ, fetched = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", fetched
    found = {}
    for item in fetched:
        if not isinstance(item, tuple):
            continue
        flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
        assert flags is not None, item
        subject = item[1].decode().strip().removeprefix("Subject: ")
        found[subject] = set(flags[1].decode().split())
    return found


def append(host: MailHost, user: str, box: str, *subjects: str) -> None:
    with imap(host, user) as client:
        for subject in subjects:
            typ, data = client.append(box, "", None, message(subject))
            assert typ == "OK", data


# --- mbsync -----------------------------------------------------------------------------


def mbsync_config(host: MailHost, local: Path) -> str:
    return f"""\
IMAPAccount server
Host 127.0.0.1
Port {host.imap_port}
User {MBSYNC_USER}
Pass "{PASSWORD}"
SSLType STARTTLS
CertificateFile {host.cafile}
AuthMechs LOGIN
Timeout {int(CLIENT_TIMEOUT)}

IMAPStore remote
Account server

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel everything
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
"""


def run_mbsync(config: Path) -> None:
    result = subprocess.run(
        ["mbsync", "-c", str(config), "-a"],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT * 2,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def local_messages(folder: Path) -> dict[str, Path]:
    """Subject -> file of every message in a local Maildir folder."""
    found = {}
    for sub in ("cur", "new"):
        for path in (folder / sub).iterdir():
            for line in path.read_bytes().splitlines():
                if line.startswith(b"Subject: "):
                    found[line[9:].decode()] = path
    return found


def maildir_flags(path: Path) -> str:
    return path.name.partition(":2,")[2]


def test_mbsync_syncs_both_ways(host: MailHost, tmp_path: Path) -> None:
    if shutil.which("mbsync") is None:
        pytest.skip("mbsync is not installed (Debian package isync)")
    append(host, MBSYNC_USER, "INBOX", "keep", "flag here", "delete here", "flag there")
    with imap(host, MBSYNC_USER) as client:
        assert client.create("Projects/2024")[0] == "OK"
    append(host, MBSYNC_USER, "Projects/2024", "plan")
    local = tmp_path / "mail"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(mbsync_config(host, local))

    # Pull: every folder and message arrives, hierarchy and all.
    run_mbsync(config)
    inbox = local_messages(local / "INBOX")
    assert set(inbox) == {"keep", "flag here", "delete here", "flag there"}
    assert set(local_messages(local / "Projects" / "2024")) == {"plan"}
    assert (local / "Sent" / "cur").is_dir()  # the default folders came too

    # Local changes: flag and read one, delete one, write one, make a folder.
    flagged = inbox["flag here"]
    flagged.rename(local / "INBOX" / "cur" / (flagged.name.partition(":2,")[0] + ":2,FS"))
    inbox["delete here"].unlink()
    (local / "INBOX" / "cur" / "1800000000.local1.laptop:2,S").write_bytes(message("written"))
    (local / "Notes" / "cur").mkdir(parents=True)
    for sub in ("new", "tmp"):
        (local / "Notes" / sub).mkdir()
    (local / "Notes" / "cur" / "1800000001.local2.laptop:2,").write_bytes(message("note"))

    # Push, and the server has all of it.
    run_mbsync(config)
    with imap(host, MBSYNC_USER) as client:
        assert mailbox(client, "INBOX") == {
            "keep": set(),
            "flag here": {"\\Flagged", "\\Seen"},
            "flag there": set(),
            "written": {"\\Seen"},
        }
        assert mailbox(client, "Notes") == {"note": set()}
        assert mailbox(client, "Projects/2024") == {"plan": set()}
        # Changes on the server side: flag one, delete one, deliver one.
        client.select("INBOX")
        typ, data = client.search(None, "SUBJECT", '"flag there"')
        assert typ == "OK" and data[0], data
        client.store(data[0].decode(), "+FLAGS", "(\\Flagged)")
        typ, data = client.search(None, "SUBJECT", "keep")
        client.store(data[0].decode(), "+FLAGS", "(\\Deleted)")
        assert client.expunge()[0] == "OK"
    append(host, MBSYNC_USER, "INBOX", "late")

    # Pull again: the local side follows.
    run_mbsync(config)
    inbox = local_messages(local / "INBOX")
    assert set(inbox) == {"flag here", "flag there", "written", "late"}
    assert maildir_flags(inbox["flag there"]) == "F"
    assert maildir_flags(inbox["flag here"]) == "FS"

    # A run with nothing to do changes nothing.
    run_mbsync(config)
    assert set(local_messages(local / "INBOX")) == set(inbox)
    with imap(host, MBSYNC_USER) as client:
        assert set(mailbox(client, "INBOX")) == set(inbox)


# --- mutt ---------------------------------------------------------------------------------


def mutt_config(host: MailHost) -> str:
    user = MUTT_USER.replace("@", "%40")
    return f"""\
set folder="imap://{user}@127.0.0.1:{host.imap_port}/"
set spoolfile="+INBOX"
set imap_pass="{PASSWORD}"
set ssl_starttls=yes
set ssl_force_tls=yes
set certificate_file="{host.cafile}"
set header_cache=""
set message_cachedir=""
set delete=yes
set quit=yes
set move=no
set mark_old=no
set confirmappend=no
set confirmcreate=no
set wait_key=no
set imap_passive=yes
set sort=date-sent
set timeout=0
"""


def run_mutt(home: Path, muttrc: Path, keys: str) -> str:
    """
    mutt in a pseudo-terminal (it wants one), doing ``keys`` and quitting;
    what it drew, for the failure message.
    """
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "vt100"}
    process = subprocess.Popen(
        ["mutt", "-n", "-F", str(muttrc), "-e", f'push "{keys}"'],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=home,
        start_new_session=True,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + CLIENT_TIMEOUT
    try:
        while process.poll() is None or select.select([controller], [], [], 0)[0]:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("mutt hung:\n" + screen.decode(errors="replace")[-2000:])
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the terminal's last user is gone
                    break
                if not chunk:
                    break
                screen += chunk
        code = process.wait(CLIENT_TIMEOUT)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    drawn = screen.decode(errors="replace")
    assert code == 0, drawn[-2000:]
    return drawn


def test_mutt_reads_flags_deletes_and_files(host: MailHost, tmp_path: Path) -> None:
    if shutil.which("mutt") is None:
        pytest.skip("mutt is not installed (Debian package mutt)")
    append(host, MUTT_USER, "INBOX", "Readme", "Flagme", "Deleteme", "Archiveme", "Untouched")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(mutt_config(host))
    keys = (
        "<tag-pattern>~s Flagme<enter><tag-prefix><flag-message><untag-pattern>~A<enter>"
        "<delete-pattern>~s Deleteme<enter>"
        "<search>Readme<enter><display-message><exit>"
        "<search>Archiveme<enter><save-message>=Archive<enter>"
        "<sync-mailbox><quit>"
    )
    run_mutt(tmp_path, muttrc, keys)
    with imap(host, MUTT_USER) as client:
        assert mailbox(client, "INBOX") == {
            "Readme": {"\\Seen"},
            "Flagme": {"\\Flagged"},
            "Untouched": set(),
        }
        # No session has had Archive selected yet, and EXAMINE sees \Recent
        # without taking it (RFC 3501 §2.3.2, §6.3.2).
        assert mailbox(client, "Archive") == {"Archiveme": {"\\Recent"}}


# --- imapclient IDLE ------------------------------------------------------------------------


def idle_until(
    client: imapclient.IMAPClient, kind: bytes, timeout: float
) -> list[tuple[object, ...]]:
    """Untagged responses during IDLE until one of ``kind`` (or the timeout)."""
    heard: list[tuple[object, ...]] = []
    deadline = time.monotonic() + timeout
    while not any(len(r) > 1 and r[1] == kind for r in heard):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        heard.extend(client.idle_check(timeout=left))
    return heard


def test_imapclient_idle_hears_delivery_flags_and_expunge(host: MailHost) -> None:
    context = ssl.create_default_context(cafile=host.cafile)
    with imapclient.IMAPClient(
        "127.0.0.1", port=host.imap_port, ssl=False, timeout=CLIENT_TIMEOUT
    ) as client:
        client.starttls(context)
        client.login(IDLE_USER, PASSWORD)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.idle()
        with smtplib.SMTP("127.0.0.1", host.smtp_port, timeout=CLIENT_TIMEOUT) as smtp:
            refused = smtp.sendmail("bob@other.test", [IDLE_USER], message("pushed"))
            assert not refused
            delivered = time.monotonic()  # the 250: stored
        heard = idle_until(client, b"EXISTS", CLIENT_TIMEOUT)
        waited = time.monotonic() - delivered
        assert (1, b"EXISTS") in heard, heard
        assert waited < PUSH_DEADLINE, f"EXISTS came {waited:.2f} s after the 250"

        # Another session flags, then expunges it; IDLE hears both.
        with imap(host, IDLE_USER) as other:
            other.select("INBOX")
            assert other.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
            heard = idle_until(client, b"FETCH", CLIENT_TIMEOUT)
            fetches = [r for r in heard if r[1] == b"FETCH"]
            assert fetches and fetches[0][0] == 1, heard
            items = fetches[0][2]
            assert isinstance(items, tuple), heard
            assert b"\\Flagged" in items[items.index(b"FLAGS") + 1], heard
            other.store("1", "+FLAGS", "(\\Deleted)")
            assert other.expunge()[0] == "OK"
            heard = idle_until(client, b"EXPUNGE", CLIENT_TIMEOUT)
            assert (1, b"EXPUNGE") in heard, heard
        client.idle_done()
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.logout()
