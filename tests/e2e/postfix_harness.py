"""
A throwaway Postfix (Debian's package) for interop tests and benchmarks.

One instance lives in its own directory: ``conf/`` (a ``main.cf`` and a
``master.cf`` with only the services needed and nothing chrooted), its own
queue and data directories, and ``vmail/`` where the ``virtual`` agent
delivers mail for ``postfix.test`` into one Maildir.  The only listener is an
``smtpd`` on 127.0.0.1:PORT.  Mail for the ``relay`` domains goes to the
SMTP endpoints given (our daemons), by ``transport_maps``; nothing uses
DNS.  ``postfix -c DIR start-fg`` runs the master in the foreground, logging
to its standard output (``maillog_file = /dev/stdout``), and
``postfix -c DIR stop`` ends it.

Postfix's daemons run as the ``postfix`` user and need to reach the queue
and the Maildir, so the instance is not under pytest's private
``tmp_path`` (mode 0700) but in a directory of its own under the system
temporary directory, removed on `stop`.  Starting needs root.
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from tests.e2e.daemon_harness import LOOPBACK, WAIT, free_port, wait_until

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "postfix.test"
MAILDIR = "mailbox"

_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
virtual   unix  - n n -  - virtual
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
showq     unix  n - n -  - showq
postlog   unix-dgram n - n - 1 postlogd
"""


def unavailable() -> str | None:
    """Why a Postfix instance cannot run here, or None if it can."""
    if not os.path.exists(POSTFIX):
        return f"Postfix is not installed ({POSTFIX}; Debian package postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master binds and drops privileges)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no postfix user"
    return None


class Postfix:
    """
    One private Postfix.

    :param relays: domain -> ``host:port`` of the SMTP server that takes
        its mail (sent there directly, without MX lookups).
    """

    def __init__(self, relays: Mapping[str, str], settings: Mapping[str, str] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="twistedmail-postfix-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.conf = self.root / "conf"
        self.vmail = self.root / "vmail"
        self.relays = dict(relays)
        self.settings = dict(settings or {})
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()

    def _main_cf(self) -> str:
        user = pwd.getpwnam("postfix")
        transports = " ".join(
            f"{d}=smtp:[{a.rpartition(':')[0]}]:{a.rpartition(':')[2]}"
            for d, a in self.relays.items()
        )
        settings = {
            "compatibility_level": "3.6",
            "meta_directory": "/etc/postfix",
            "queue_directory": str(self.root / "queue"),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": DOMAIN,
            "mydomain": DOMAIN,
            "myorigin": DOMAIN,
            "mydestination": "",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": " ".join(self.relays),
            "transport_maps": f"inline:{{ {transports} }}" if transports else "",
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": str(self.vmail),
            # Every recipient of postfix.test shares one Maildir (the map may not
            # substitute parts of the address, for safety).
            "virtual_mailbox_maps": f"static:{MAILDIR}/",
            "virtual_uid_maps": f"static:{user.pw_uid}",
            "virtual_gid_maps": f"static:{user.pw_gid}",
            "virtual_minimum_uid": "1",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "maillog_file": "/dev/stdout",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtputf8_enable": "yes",
            # Retries within a test's lifetime, not after 5 minutes.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        settings.update(self.settings)
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> None:
        user = pwd.getpwnam("postfix")
        self.conf.mkdir()
        for name in ("queue", "data", "vmail"):
            (self.root / name).mkdir()
        os.chown(self.root / "data", user.pw_uid, user.pw_gid)
        os.chown(self.vmail, user.pw_uid, user.pw_gid)
        (self.conf / "main.cf").write_text(self._main_cf())
        (self.conf / "master.cf").write_text(_MASTER_CF.format(listen=f"{LOOPBACK}:{self.port}"))
        self.process = subprocess.Popen(
            [POSTFIX, "-c", str(self.conf), "start-fg"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(self._listening, f"Postfix to listen on port {self.port}:\n{self.log()}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Postfix exited ({self.process.returncode}):\n{self.log()}")
        return "daemon started" in self.log()

    def log(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
        return "\n".join(self.lines)

    def maildir_messages(self) -> list[bytes]:
        """What the virtual agent delivered for anyone ``@postfix.test``, oldest first."""
        new = self.vmail / MAILDIR / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime)]

    def stop(self) -> None:
        """Stop the master (and so every Postfix process of this instance) and tidy up."""
        if self.process is not None and self.process.poll() is None:
            subprocess.run(
                [POSTFIX, "-c", str(self.conf), "stop"],
                capture_output=True,
                timeout=WAIT,
                check=False,
            )
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self._kill_master()
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_master(self) -> None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
