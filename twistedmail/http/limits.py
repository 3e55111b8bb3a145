"""
Connection limits for the HTTP listeners.

twisted.web closes a silent connection after its timeout, but a client that
trickles a byte now and then (slowloris) or simply opens thousands of
connections would otherwise hold every file descriptor the daemon has, and
then SMTP, IMAP and even Maildir file opens fail.  SMTP and IMAP refuse
sessions beyond their own limits; this does the same for HTTP, in total and
per client address, around the one site both HTTP listeners share.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

log = Logger()


class _Counted(ProtocolWrapper):
    """One connection, counted from when it is built until it is lost."""

    host = ""


class ConnectionLimit(WrappingFactory):
    """
    Wraps a factory (the web `Site`) and refuses a connection, by closing it
    at once, when ``max_total`` are open or ``max_per_client`` are open from
    its address.
    """

    protocol = _Counted

    def __init__(self, wrapped: Any, max_total: int, max_per_client: int) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.per_client: Counter[str] = Counter()

    @property
    def open_connections(self) -> int:
        return sum(self.per_client.values())

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = str(getattr(addr, "host", "unknown"))
        if self.open_connections >= self.max_total:
            log.warn("HTTP connection limit reached; refusing {client}", client=host)
            return None
        if self.per_client[host] >= self.max_per_client:
            log.warn("HTTP per-client connection limit reached for {client}", client=host)
            return None
        protocol = super().buildProtocol(addr)
        assert isinstance(protocol, _Counted)
        protocol.host = host
        return protocol

    # Counted from makeConnection to connectionLost, which call these.
    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)  # type: ignore[no-untyped-call]
        self.per_client[p.host] += 1

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
        self.per_client[p.host] -= 1
        if self.per_client[p.host] <= 0:
            del self.per_client[p.host]
