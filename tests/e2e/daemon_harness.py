"""
Mail hosts as real ``twistd -n twistedmail`` subprocesses, for the tests and
benchmarks that need two servers talking to each other over loopback.

A `MailHost` is one domain's server: a data directory, a TOML config the
test writes (hostname, listeners, ``[routes]`` to the other hosts,
``[outbound]`` settings), and the daemon, started, stopped, killed and
restarted on the same data.  Its SMTP (MX) port is chosen before the first
start, by binding port 0 and closing, so that other hosts' routes can name
it before it runs and a restart comes back on the same port (racy in
principle, harmless on loopback).  The submission port is read from the log
line ``submission listening on 127.0.0.1 port N`` that `Daemon` (from
``test_twistd.py``) waits for.

Everything here blocks: tests call it directly (the daemons are other
processes, nothing runs on this process's reactor) and every wait is a poll
with a deadline, never a sleep that measures.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import imaplib
import os
import queue
import signal
import smtplib
import socket
import ssl
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from tests.e2e.test_twistd import Daemon, listeners_reported, started
from twistedmail.accounts import Accounts
from twistedmail.tls import self_signed_paths

TWISTEDMAIL = os.path.join(sysconfig.get_path("scripts"), "twistedmail")
LOOPBACK = "127.0.0.1"
PASSWORD = "correct horse battery"
WAIT = 30.0
"""The longest any condition is waited for: a safety net, never a measurement."""

_T = TypeVar("_T")


def free_port() -> int:
    """A port nobody listened on a moment ago (bind 0, close)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(
    condition: Callable[[], _T | None],
    what: str | Callable[[], str],
    timeout: float = WAIT,
    interval: float = 0.05,
) -> _T:
    """
    Poll ``condition`` until it returns something truthy; fail after
    ``timeout`` saying ``what`` (a function: called then, to show late logs).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {said}")
        time.sleep(interval)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def toml(sections: Mapping[str, Mapping[str, object]]) -> str:
    """The few TOML shapes a config needs: tables of strings, numbers, lists."""
    out = []
    for name, table in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in table.items())
        out.append("")
    return "\n".join(out)


class MailHost:
    """
    One domain's twistedmail daemon in its own directory.

    :param outbound: ``[outbound]`` settings (short retry schedules for tests).
    :param extra: more sections, merged over the defaults below.
    """

    def __init__(
        self,
        root: Path,
        domain: str,
        *,
        storage: str = "maildir",
        outbound: Mapping[str, object] | None = None,
        extra: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        self.root = root
        self.domain = domain
        self.storage = storage
        self.data = root / "data"
        self.config_path = root / "twistedmail.toml"
        self.smtp_port = free_port()
        self.routes: dict[str, str] = {}
        self.outbound = dict(outbound or {"retry_schedule": [1, 1, 2]})
        self.extra = {k: dict(v) for k, v in (extra or {}).items()}
        self.daemon: Daemon | None = None
        self.submission_port = 0
        self.imap_port: int | None = None
        self.passwords: dict[str, str] = {}
        """Each user's password, for IMAP (a test that changes one says so here)."""
        root.mkdir(parents=True, exist_ok=True)

    # --- Configuration -------------------------------------------------------

    @property
    def route(self) -> str:
        """Where other hosts send this domain's mail."""
        return f"tcp:{LOOPBACK}:{self.smtp_port}"

    def route_to(self, other: MailHost) -> None:
        self.routes[other.domain] = other.route

    def write_config(self) -> None:
        any_port = f"tcp:0:interface={LOOPBACK}"
        sections: dict[str, dict[str, object]] = {
            "server": {
                "hostname": self.domain,
                "data_dir": str(self.data),
                "storage": self.storage,
            },
            "listeners": {
                "smtp": f"tcp:{self.smtp_port}:interface={LOOPBACK}",
                "submission": any_port,
                "submissions": "none",
                "imap": any_port,
                "imaps": "none",
                "http": "none",
                "https": "none",
            },
            "smtp": {"allow_plaintext_auth_on_loopback": False},
            "imap": {"allow_plaintext_login_on_loopback": True},
            "outbound": dict(self.outbound),
            "routes": dict(self.routes),
        }
        for name, table in self.extra.items():
            sections.setdefault(name, {}).update(table)
        self.config_path.write_text(toml(sections))

    def add_user(self, address: str, password: str = PASSWORD) -> None:
        """Straight into the accounts file, with a cheap hash (the CLI's path is tested apart)."""
        accounts = Accounts.in_data_dir(str(self.data), scrypt_n=2)
        self.passwords[address] = password
        try:
            accounts.add_user(address, password)
        finally:
            accounts.close()

    @property
    def cafile(self) -> str:
        """The daemon's self-signed certificate, to verify its STARTTLS."""
        return self_signed_paths(str(self.data))[1]

    # --- Lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon and wait until it serves and its queue runner has loaded."""
        assert self.daemon is None or self.daemon.process.poll() is not None
        self.write_config()
        self.data.mkdir(parents=True, exist_ok=True)
        daemon = Daemon(["--config", str(self.config_path)], self.root)
        self.daemon = daemon
        daemon.wait_for(lambda lines: started(lines) and _runner_loaded(lines))
        ports = listeners_reported(daemon.lines)
        assert ports.get("smtp") == self.smtp_port, daemon.log()
        submission = ports.get("submission")
        assert submission is not None, daemon.log()
        self.submission_port = submission
        self.imap_port = ports.get("imap")

    @property
    def running(self) -> bool:
        return self.daemon is not None and self.daemon.process.poll() is None

    def stop(self) -> None:
        """SIGTERM: a clean stop (listeners close, the runner finishes its sessions)."""
        if self.running:
            assert self.daemon is not None
            self.daemon.stop(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: nothing gets a chance to tidy up."""
        if self.running:
            assert self.daemon is not None
            self.daemon.process.send_signal(signal.SIGKILL)
            self.daemon.finish()

    def log(self) -> str:
        """Everything the daemon logged so far (this and earlier runs' lines are kept apart)."""
        if self.daemon is None:
            return ""
        self._drain()
        return "\n".join(self.daemon.lines)

    def log_lines(self) -> list[str]:
        if self.daemon is None:
            return []
        self._drain()
        return list(self.daemon.lines)

    def _drain(self) -> None:
        assert self.daemon is not None
        pending: queue.Queue[str | None] = self.daemon._queue
        while True:
            try:
                line = pending.get_nowait()
            except queue.Empty:
                return
            if line is None:
                pending.put(None)  # for finish()
                return
            self.daemon.lines.append(line)

    def wait_for_log(self, text: str, timeout: float = WAIT) -> str:
        """The first log line containing ``text`` (waiting for it)."""
        return wait_until(
            lambda: next((line for line in self.log_lines() if text in line), None),
            f"{text!r} in the {self.domain} log",
            timeout,
        )

    # --- The admin command -------------------------------------------------------

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> str:
        """``twistedmail --config ... ARGS``; its standard output."""
        result = subprocess.run(
            [TWISTEDMAIL, "--config", str(self.config_path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"twistedmail {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def queue_list(self) -> str:
        return self.cli("queue", "list")

    def queue_empty(self) -> bool:
        return self.queue_list().rstrip().endswith("0 message(s), 0 recipient(s) to deliver.")

    # --- Mail in and out --------------------------------------------------------------

    def submit(
        self,
        sender: str,
        recipients: Iterable[str],
        message: bytes,
        password: str = PASSWORD,
    ) -> None:
        """smtplib on the submission port: STARTTLS verified against our certificate, AUTH."""
        context = ssl.create_default_context(cafile=self.cafile)
        with smtplib.SMTP(LOOPBACK, self.submission_port, timeout=WAIT) as client:
            client.starttls(context=context)
            client.login(sender, password)
            refused = client.sendmail(sender, list(recipients), message)
        assert not refused, refused

    def maildir(self, user: str, mailbox: str = "INBOX") -> Path:
        base = self.data / "mail" / user
        return base if mailbox == "INBOX" else base / ("." + mailbox)

    def inbox_files(self, user: str) -> list[bytes]:
        """Every message in the user's Maildir INBOX (new and cur), oldest first."""
        root = self.maildir(user)
        paths: list[Path] = []
        for sub in ("new", "cur"):
            directory = root / sub
            if directory.is_dir():
                paths.extend(directory.iterdir())
        contents = []
        for path in sorted(paths, key=lambda p: (p.stat().st_mtime, p.name)):
            try:
                contents.append(path.read_bytes())
            except FileNotFoundError:
                continue  # moved from new/ to cur/ meanwhile; seen on the next poll
        return contents

    def inbox_imap(self, user: str) -> list[bytes]:
        """Every message in the user's INBOX over IMAP (needs the IMAP listener)."""
        assert self.imap_port is not None, "IMAP is not available in this daemon"
        client = imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=WAIT)
        try:
            client.starttls(ssl.create_default_context(cafile=self.cafile))
            password = self.passwords.get(user, PASSWORD)
            if password.isascii():
                client.login(user, password)
            else:  # imaplib's LOGIN is ASCII-only; PLAIN carries UTF-8 (RFC 4616)
                plain = b"\0" + user.encode() + b"\0" + password.encode()
                client.authenticate("PLAIN", lambda _challenge: plain)
            client.select("INBOX", readonly=True)
            typ, data = client.uid("SEARCH", "ALL")
            assert typ == "OK", data
            uids = [u.decode() for u in (data[0] or b"").split()]
            out = []
            for uid in uids:
                typ, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
                assert typ == "OK", fetched
                item = fetched[0]
                assert isinstance(item, tuple)
                out.append(item[1])
            client.logout()
            return out
        finally:
            with contextlib.suppress(OSError):
                client.shutdown()

    def inbox(self, user: str) -> list[bytes]:
        """The INBOX, from the files for Maildir, over IMAP for other stores."""
        if self.storage == "maildir":
            return self.inbox_files(user)
        return self.inbox_imap(user)

    def wait_for_mail(self, user: str, count: int = 1, timeout: float = WAIT) -> list[bytes]:
        """Wait until ``user``'s INBOX holds at least ``count`` messages; all of them."""
        return wait_until(
            lambda: m if len(m := self.inbox(user)) >= count else None,
            f"{count} message(s) for {user} at {self.domain}",
            timeout,
            interval=0.1,
        )


def _runner_loaded(lines: list[str]) -> bool:
    return any("Queue runner started with" in line for line in lines)


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def parts_of(message: email.message.Message) -> list[email.message.Message]:
    """The sub-parts of a multipart (or a message/* part's blocks), typed."""
    payload = message.get_payload()
    assert isinstance(payload, list), message.get_content_type()
    return [part for part in payload if isinstance(part, email.message.Message)]


def body_of(raw: bytes) -> bytes:
    """The bytes after the header's empty line."""
    _head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "no end of header"
    return body


def received_lines(raw: bytes) -> list[str]:
    """The unfolded ``Received:`` fields, top (newest) first."""
    head = raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    fields: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        else:
            fields.append(line)
    return [f for f in fields if f.lower().startswith("received:")]
