"""
Interoperability with a real Postfix: our client delivers to Postfix, and
Postfix relays the message on to our SMTP server.  Postfix runs with its
own configuration directory on loopback ports; skipped without Postfix or
without root (its master process must start as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
import twisted.test
from twisted.internet import task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from tests.smtp.smtpd_harness import BOB, World, body_of, memory_world  # type: ignore[import-not-found]
from twistedmail.model import Recipient
from twistedmail.smtp.client import CHUNK_SIZE, ClientOptions, Transaction, deliver

__all__ = ["memory_world"]

POSTFIX = "/usr/sbin/postfix"
#: A key and its self-signed certificate, for Postfix's STARTTLS.
SERVER_PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")

pytestmark = [
    pytest.mark.skipif(not os.path.exists(POSTFIX), reason="Postfix is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix's master must start as root"),
]

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = hamburger.edu
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
maillog_file = /dev/stdout
alias_maps =
alias_database =
local_recipient_maps =
smtpd_tls_security_level = may
smtpd_tls_chain_files = {pem}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Postfix:
    def __init__(self, relay_port: int) -> None:
        # Not under pytest's tmp_path: Postfix's processes run as user
        # postfix and must be able to reach the queue.
        self.root = tempfile.mkdtemp(prefix="twistedmail-postfix-")
        os.chmod(self.root, 0o755)
        self.port = _free_port()
        conf = os.path.join(self.root, "conf")
        os.makedirs(conf)
        os.makedirs(os.path.join(self.root, "queue"))
        os.makedirs(os.path.join(self.root, "data"))
        shutil.chown(os.path.join(self.root, "data"), "postfix")
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(root=self.root, relay_port=relay_port, pem=SERVER_PEM))
        with open("/etc/postfix/master.cf") as f:
            master = f.read().splitlines()
        lines = [f"127.0.0.1:{self.port} inet n - n - - smtpd"]
        for line in master:
            if line.startswith("smtp ") and " inet " in line:
                continue
            lines.append(line)
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        self.conf = conf

    def start(self) -> None:
        """``start-fg`` (``start`` cannot report errors without a syslog here)."""
        env = {**os.environ, "MAIL_CONFIG": self.conf}
        self.logfile = open(os.path.join(self.root, "maillog"), "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [POSTFIX, "-c", self.conf, "start-fg"],
            env=env,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        env = {**os.environ, "MAIL_CONFIG": self.conf}
        subprocess.run([POSTFIX, "-c", self.conf, "stop"], env=env, capture_output=True)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.logfile.close()

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "maillog")) as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture
def world(memory_world: World) -> Iterator[World]:
    yield memory_world


async def _until(check: Any, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await task.deferLater(_reactor(), 0.1, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def message() -> bytes:
    head = (
        b"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: through Postfix\r\n"
        b"Date: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <pfx-1@crepes.fr>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    out = bytearray(head + b".leading dot\r\n")
    while len(out) < CHUNK_SIZE - 80:
        out += b"w" * 70 + b"\r\n"
    out += b"v" * (CHUNK_SIZE - len(out) - 2) + b"\r\n.\r\n..\r\n"
    out += "Grüße aus Paris\r\n".encode()
    return bytes(out)


@pytest_twisted.ensureDeferred
async def test_our_client_to_postfix_to_our_server(world):
    reactor = _reactor()
    ours = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(world.factory())
    postfix = Postfix(ours.getHost().port)
    try:
        postfix.start()

        async def listening() -> bool:
            assert postfix.process.poll() is None, postfix.log()
            try:
                with socket.create_connection(("127.0.0.1", postfix.port), timeout=1):
                    return True
            except OSError:
                return False

        await _until(listening, "Postfix to listen")
        sent = message()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", postfix.port, timeout=5)
        txn = Transaction("alice@crepes.fr", (Recipient(BOB),), sent, body="8BITMIME")
        result = await deliver(endpoint, reactor, ClientOptions(helo_name="crepes.fr"), txn)
        assert result.recipients[0].delivered, result
        assert result.tls  # a self-signed certificate still gets TLS (RFC 7435)

        async def arrived() -> bool:
            return bool(await world.inbox(BOB))

        await _until(arrived, "Postfix to relay to our server: " + postfix.log())
        (stored,) = await world.inbox(BOB)
        assert body_of(stored) == sent
        assert b"by postfix.test (Postfix)" in stored
    finally:
        await threads.deferToThread(postfix.stop)
        await ours.stopListening()
        shutil.rmtree(postfix.root, ignore_errors=True)
