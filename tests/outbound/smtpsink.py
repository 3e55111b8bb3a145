"""
A tiny SMTP server for tests of our client and runner: records what it
receives, unstuffed, and answers as configured.  Deliberately simple and
strict (RFC 5321 §4.5.2 receiver side); it is not twistedmail's server.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import ssl
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

SERVER_PEM = __import__("twisted.test", fromlist=["x"]).__path__[0] + "/server.pem"


def server_tls() -> Any:
    with open(SERVER_PEM, "rb") as f:
        return ssl.PrivateCertificate.loadPEM(f.read()).options()


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: bytes
    tls: bool
    auth: str | None


@dataclass
class SinkConfig:
    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000", "DSN")
    starttls: bool = False
    #: Say 220 to STARTTLS, then send garbage instead of a handshake.
    broken_tls: bool = False
    credentials: tuple[str, str] | None = None
    greeting: bytes = b"220 sink ESMTP"
    rcpt: Callable[[str], bytes] = lambda address: b"250 2.1.5 ok"
    data_end: Callable[[], bytes] = lambda: b"250 2.0.0 queued"
    rset: bytes = b"250 ok"
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    active: int = 0
    max_active: int = 0


class SinkProtocol(LineReceiver):
    MAX_LENGTH = 1 << 20

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.reset()
        self.tls = False
        self.auth: str | None = None
        self.data: list[bytes] | None = None

    def reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []

    refuse_handshake = False

    def dataReceived(self, data: bytes) -> None:
        if self.refuse_handshake:  # the client's TLS hello: answer with nonsense
            self.transport.write(b"this is not a TLS handshake\r\n")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        super().dataReceived(data)

    def connectionMade(self) -> None:
        self.config.connections += 1
        self.config.active += 1
        self.config.max_active = max(self.config.max_active, self.config.active)
        self.sendLine(self.config.greeting)

    def connectionLost(self, reason: Any = None) -> None:
        self.config.active -= 1

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                message = b"".join(self.data)
                self.data = None
                reply = self.config.data_end()
                if reply.startswith(b"2"):
                    self.config.received.append(
                        Received(self.sender or "", self.recipients, message, self.tls, self.auth)
                    )
                self.reset()
                self.sendLine(reply)
            else:
                self.data.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
            return
        verb, _, arg = line.decode("utf-8").partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            exts = list(self.config.extensions)
            if self.config.starttls and not self.tls:
                exts.append("STARTTLS")
            if self.config.credentials:
                exts.append("AUTH PLAIN")
            lines = ["sink", *exts]
            for ext in lines[:-1]:
                self.sendLine(b"250-" + ext.encode())
            self.sendLine(b"250 " + lines[-1].encode())
        elif verb == "HELO":
            self.sendLine(b"250 sink")
        elif verb == "STARTTLS" and self.config.broken_tls:
            self.sendLine(b"220 2.0.0 go ahead")
            self.refuse_handshake = True
        elif verb == "STARTTLS":
            self.sendLine(b"220 2.0.0 go ahead")
            self.transport.startTLS(server_tls())  # type: ignore[union-attr]
            self.tls = True
            self.reset()
        elif verb == "AUTH":
            mech, _, token = arg.partition(" ")
            if mech.upper() != "PLAIN" or not token:
                self.sendLine(b"504 5.5.4 only PLAIN with an initial response")
                return
            _, user, password = base64.b64decode(token).split(b"\0")
            if self.config.credentials == (user.decode(), password.decode()):
                self.auth = user.decode()
                self.sendLine(b"235 2.7.0 ok")
            else:
                self.sendLine(b"535 5.7.8 no")
        elif verb == "MAIL":
            self.sender = arg.split(":", 1)[1].split(">")[0].lstrip("<")
            self.sendLine(b"250 2.1.0 ok")
        elif verb == "RCPT":
            address = arg.split(":", 1)[1].split(">")[0].lstrip("<")
            reply = self.config.rcpt(address)
            if reply.startswith(b"2"):
                self.recipients.append(address)
            self.sendLine(reply)
        elif verb == "DATA":
            if not self.recipients:
                self.sendLine(b"554 5.5.1 no valid recipients")
            else:
                self.data = []
                self.sendLine(b"354 go ahead")
        elif verb == "RSET":
            self.reset()
            self.sendLine(self.config.rset)
            if self.config.rset.startswith(b"421"):
                self.transport.loseConnection()  # type: ignore[union-attr]
        elif verb == "QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.sendLine(b"502 5.5.2 what")


class SinkFactory(Factory):
    def __init__(self, config: SinkConfig) -> None:
        self.config = config

    def buildProtocol(self, addr: Any) -> SinkProtocol:
        return SinkProtocol(self.config)


async def listen(reactor: Any, config: SinkConfig) -> Any:
    """Listen on 127.0.0.1, port 0; the result has ``getHost().port`` and ``stopListening``."""
    from twisted.internet.endpoints import TCP4ServerEndpoint

    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(SinkFactory(config))
