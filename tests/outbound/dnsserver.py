"""A twisted.names authoritative server on 127.0.0.1 for MX tests (these machines have no DNS)."""

from __future__ import annotations

from typing import Any

from twisted.names import authority, client, dns, server


class ZoneAuthority(authority.FileAuthority):  # type: ignore[misc]
    """An authority for one zone whose records come from a dict instead of a file."""

    def __init__(self, zone: bytes, records: dict[bytes, list[Any]]) -> None:
        self._zone = zone
        self._given = records
        super().__init__(None)

    def loadFile(self, filename: object) -> None:
        soa = dns.Record_SOA(
            mname=b"ns." + self._zone, rname=b"root." + self._zone, serial=1, ttl=60
        )
        table: dict[bytes, list[Any]] = {self._zone: [soa]}
        for name, records in self._given.items():
            table[name.lower()] = list(records)
        self.soa: Any = (self._zone, soa)
        self.records: Any = table


async def start(reactor: Any, zone: bytes, records: dict[bytes, list[Any]]) -> tuple[Any, Any]:
    """(listening port, a client resolver that asks only this server)."""
    factory = server.DNSServerFactory(authorities=[ZoneAuthority(zone, records)])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
    resolver = client.Resolver(servers=[("127.0.0.1", port.getHost().port)], reactor=reactor)
    return port, resolver
