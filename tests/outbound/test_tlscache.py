"""
The runner's TLS settings are made once: one shared context for
opportunistic TLS, one per host name (bounded) for verified TLS.  Real
handshakes in memory, as in tests/test_tls.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from tests.test_tls import handshake
from twistedmail.outbound.tlscache import TLSOptionsCache
from twistedmail.tls import client_tls_options, self_signed_paths, server_tls_options


def connection_for(creator: Any) -> Any:
    """The OpenSSL connection a client TLS transport makes from ``creator``."""
    factory = TLSMemoryBIOFactory(creator, True, Factory.forProtocol(Protocol))
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    return protocol._tlsConnection


def test_opportunistic_tls_shares_one_context_and_names_each_host() -> None:
    cache = TLSOptionsCache()
    one = connection_for(cache("mx1.example.org", False))
    two = connection_for(cache("MX2.example.net", False))
    literal = connection_for(cache("192.0.2.7", False))
    assert one.get_context() is two.get_context() is literal.get_context()
    assert one.get_servername() == b"mx1.example.org"
    assert two.get_servername() == b"MX2.example.net"
    assert literal.get_servername() is None  # RFC 6066 §3: no SNI for an address
    assert cache.made == 0


def test_verified_options_are_made_once_per_host_and_bounded() -> None:
    made: list[str] = []

    def verified(hostname: str, verify: bool) -> Any:
        made.append(hostname)
        return client_tls_options(hostname, verify)

    cache = TLSOptionsCache(verified, size=2)
    a = cache("a.example", True)
    assert cache("A.example", True) is a
    b = cache("b.example", True)
    assert cache("a.example", True) is a  # a is now the most recently used
    cache("c.example", True)  # evicts b
    assert cache("a.example", True) is a
    assert cache("b.example", True) is not b
    assert made == ["a.example", "b.example", "c.example", "b.example"]
    assert cache.made == 4


def test_cached_settings_still_handshake(tmp_path: Path) -> None:
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    _, crt = self_signed_paths(str(tmp_path))
    root = Certificate.loadPEM(Path(crt).read_bytes())
    cache = TLSOptionsCache(lambda host, verify: client_tls_options(host, verify, [root]))
    for _ in range(2):  # the second connection reuses what the first made
        server, client = handshake(server_options, cache("mail.example.test", False))
        assert server.data == b"hello" and not client.lost
        server, client = handshake(server_options, cache("mail.example.test", True))
        assert server.data == b"hello" and not client.lost
    server, client = handshake(server_options, cache("other.example.test", True))
    assert server.data == b"" and client.lost  # verification still names the host
    assert cache.made == 2
